/*
 * CPU loss and optimizer: fused softmax cross-entropy that overwrites the logits
 * with their gradient, the deterministic sum of squares behind the global gradient
 * norm, and AdamW written as torch.optim.AdamW (foreach=False) computes it, with
 * torch.nn.utils.clip_grad_norm_ clipping folded in.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "mlm/log.h"
#include "cpu_math.h"
#include "cpu_ops.h"

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

void cpu_cross_entropy(mlm_backend *be, float *logits, const int32_t *labels, int M, int V,
                       float scale, const mlm_live *live, float *stats) {
    for (int r = 0; r < M; r++)
        if (labels[r] < -1 || labels[r] >= V)
            mlm_die(MLM_EXIT_INPUT, "cross_entropy: row %d has label %d, outside [0, %d)", r,
                    (int)labels[r], V);
    if (live) scale = live->loss_scale;   // backend memory is host memory here
    float *loss = cpu_scratch(be, 2 * (size_t)M), *correct = loss + M;  // (M) (M)
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < M; r++) {
        float *row = logits + (size_t)r * V;
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

enum { SUMSQ_CHUNK = 1 << 16 };

/* Fixed chunks summed in double, then the chunk sums in order: the same result for
 * any thread count. */
void cpu_sum_squares(mlm_backend *be, float *out, const float *g, size_t n) {
    size_t chunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double *part = (double *)cpu_scratch(be, 2 * chunks);         // (chunks)
    #pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        size_t lo = c * SUMSQ_CHUNK, hi = lo + SUMSQ_CHUNK < n ? lo + SUMSQ_CHUNK : n;
        double s = 0;
        #pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
        part[c] = s;
    }
    double total = 0;
    for (size_t c = 0; c < chunks; c++) total += part[c];
    out[0] = (float)total;
}

/* clip_grad_norm_: coef = max_norm / (norm + 1e-6) in fp32, clamped to 1. */
static float clip_coef(const mlm_adamw_args *a, const float *gnorm_sq) {
    if (!(a->grad_clip > 0) || !gnorm_sq) return 1.0f;
    float coef = a->grad_clip / (sqrtf(*gnorm_sq) + 1e-6f);
    return coef < 1.0f ? coef : 1.0f;
}

/* The scalar arithmetic (double, then cast to fp32) and the element order of
 * torch's _single_tensor_adamw: decay, lerp of m, addcmul of v, addcdiv. */
void cpu_adamw(mlm_backend *be, float *master, void *wgt, const float *g, float *m, float *v,
               size_t n, const mlm_adamw_args *a, const float *gnorm_sq) {
    float clip = clip_coef(a, gnorm_sq);
    double bc1 = 1.0 - pow(a->beta1, a->step), bc2 = 1.0 - pow(a->beta2, a->step);
    float decay = (float)(1.0 - (double)a->lr * a->weight_decay);
    float w1 = (float)(1.0 - a->beta1), b2 = a->beta2, w2 = (float)(1.0 - a->beta2);
    float neg_step = (float)(-(a->lr / bc1)), bc2_sqrt = (float)sqrt(bc2), eps = a->eps;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * clip;
        float mi = m[i] + w1 * (gi - m[i]);                       // lerp, weight < 0.5
        float vi = v[i] * b2 + w2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        master[i] = master[i] * decay + neg_step * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
    be->copy_master_to_wgt(be, wgt, master, n);
}
