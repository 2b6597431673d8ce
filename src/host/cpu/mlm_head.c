/*
 * The MLM head's ops on the CPU (twin: src/kernels/mlm_head.cu): the gather of the
 * masked rows of the encoder output and the scatter of their gradient, the tied
 * decoder (the linear layer's matmuls, on logits rows ldl apart), and the fused
 * softmax cross-entropy that overwrites the logits with their gradient.
 */
#include <math.h>
#include <string.h>

#include "mlm/log.h"
#include "common.h"
#include "vecmath.h"

/* ---- masked rows ---- */

void cpu_gather_rows(mlm_backend *be, void *out_, const void *in_, const int32_t *rows,
                     int M, int d) {
    float *out = out_;                                            // (M, d)
    const float *in = in_;                                        // (N, d)
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        if (rows[i] < 0) memset(out + (size_t)i * d, 0, (size_t)d * sizeof(float));   // padding
        else memcpy(out + (size_t)i * d, in + (size_t)rows[i] * d, (size_t)d * sizeof(float));
    }
}

void cpu_scatter_rows(mlm_backend *be, void *dfull_, const void *drows_, const int32_t *rows,
                      int M, int N, int d) {
    float *dfull = dfull_;                                        // (N, d)
    const float *drows = drows_;                                  // (M, d)
    memset(dfull, 0, (size_t)N * d * sizeof(float));
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        if (rows[i] >= 0) memcpy(dfull + (size_t)rows[i] * d, drows + (size_t)i * d, (size_t)d * sizeof(float));
}

/* ---- tied decoder: logits (M, V of ldl) = in (M, d) W^T (V, d) + b ---- */

void cpu_decoder_fwd(mlm_backend *be, void *logits, const void *in, const void *W, const void *b, int M, int d,
                     int V, int ldl) {
    cpu_affine(logits, ldl, in, W, b, M, d, V);
}

void cpu_decoder_bwd(mlm_backend *be, void *din, float *dW, float *db, const void *dlogits, const void *in,
                     const void *W, int M, int d, int V, int ldl) {
    cpu_linear_grads(din, dW, db, dlogits, ldl, in, W, M, d, V, 0);
}

/* ---- fused softmax cross-entropy ---- */

/* One row of logits x (V): returns the loss, sets *correct, overwrites x with
 * scale * (softmax(x) - onehot(label)). */
CPU_VECTOR_CLONES static float ce_row(float *x, int label, int V, float scale, float *correct) {
    float mx = x[0];
    #pragma omp simd reduction(max : mx)
    for (int j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    int argmax = 0;                                               // first index of the max
    while (argmax < V - 1 && x[argmax] != mx) argmax++;
    float x_label = x[label];
    double sum = 0;
    #pragma omp simd reduction(+ : sum)
    for (int j = 0; j < V; j++) {
        x[j] = cpu_expf(x[j] - mx);
        sum += x[j];
    }
    float inv = (float)(1.0 / sum), p_label = x[label] * inv;
    for (int j = 0; j < V; j++) x[j] = scale * (x[j] * inv);
    x[label] = scale * (p_label - 1.0f);
    *correct = argmax == label;
    return (float)(log(sum) + mx - x_label);
}

void cpu_cross_entropy(mlm_backend *be, void *logits_, const int32_t *labels, int M, int V, int ldl,
                       float scale, const mlm_live *live, float *stats) {
    float *logits = logits_;
    for (int r = 0; r < M; r++)
        if (labels[r] < -1 || labels[r] >= V)
            mlm_die(MLM_EXIT_INPUT, "cross_entropy: row %d has label %d, outside [0, %d)", r,
                    (int)labels[r], V);
    if (live) scale = live->loss_scale;   // backend memory is host memory here
    float *loss = cpu_scratch(be, 2 * (size_t)M), *correct = loss + M;  // (M) (M)
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < M; r++) {
        float *row = logits + (size_t)r * ldl;
        if (labels[r] < 0) {   // a padding row
            memset(row, 0, (size_t)V * sizeof(float));
            loss[r] = correct[r] = 0;
        } else {
            loss[r] = ce_row(row, labels[r], V, scale, correct + r);
        }
    }
    double loss_sum = 0, correct_sum = 0;                         // rows in order
    for (int r = 0; r < M; r++) {
        loss_sum += loss[r];
        correct_sum += correct[r];
    }
    stats[0] += (float)loss_sum;
    stats[1] += (float)correct_sum;
}
