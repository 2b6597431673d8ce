/*
 * CPU linear layers: y = act(x W^T + b) with exact erf GELU, its backward, the
 * tied decoder (the same matmul with fp32 logits) and the masked-row gather and
 * scatter around the MLM head. Matmuls are cblas_sgemm on the OpenBLAS pool; bias
 * and GELU run as one OpenMP pass over the output rows.
 */
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

static inline float gelu(float x) { return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2)); }

/* d gelu / dx = Phi(x) + x * phi(x), as PyTorch's GeluBackward. */
static inline float gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
    float pdf = expf(-0.5f * x * x) * 0.39894228040143267794f;   // 1/sqrt(2 pi)
    return cdf + x * pdf;
}

/* y (N, O) += b; with GELU: pre = y, out = gelu(y) (y is pre then). */
static void bias_act_rows(float *out, float *pre, const float *b, int N, int O, mlm_act act) {
    float *y = act == MLM_ACT_GELU ? pre : out;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        float *yr = y + (size_t)r * O, *outr = out + (size_t)r * O;
        if (b)
            for (int c = 0; c < O; c++) yr[c] += b[c];
        if (act == MLM_ACT_GELU)
            for (int c = 0; c < O; c++) outr[c] = gelu(yr[c]);
    }
}

void cpu_linear_fwd(mlm_backend *be, void *out_, void *pre_, const void *in_, const void *W_,
                    const void *b, int N, int I, int O, mlm_act act) {
    float *out = out_, *pre = pre_;                               // (N, O)
    const float *in = in_, *W = W_;                               // (N, I) (O, I)
    float *y = act == MLM_ACT_GELU ? pre : out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, I, 1.0f, in, I, W, I, 0.0f, y, O);
    if (b || act != MLM_ACT_NONE) bias_act_rows(out, pre, b, N, O, act);
}

/* dW += dout^T in; db += column sums of dout; din = (or +=) dout W. */
static void linear_grads(float *din, float *dW, float *db, const float *dout, const float *in,
                         const float *W, int N, int I, int O, int din_accumulate) {
    // dout (N, O), in (N, I), W (O, I), dW (O, I), din (N, I)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, N, 1.0f, dout, O, in, I,
                1.0f, dW, I);
    if (db) cpu_colsum_add(db, dout, N, O);
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, I, O, 1.0f, dout, O, W, I,
                    din_accumulate ? 1.0f : 0.0f, din, I);
}

void cpu_linear_bwd(mlm_backend *be, void *din, float *dW, float *db, void *dout_,
                    const void *in, const void *W, const void *pre_, int N, int I, int O,
                    mlm_act act, int din_accumulate) {
    float *dout = dout_;                                          // (N, O)
    const float *pre = pre_;                                      // (N, O)
    if (act == MLM_ACT_GELU) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++)
            for (int c = 0; c < O; c++) dout[(size_t)r * O + c] *= gelu_grad(pre[(size_t)r * O + c]);
    }
    linear_grads(din, dW, db, dout, in, W, N, I, O, din_accumulate);
}

/* ---- tied decoder: logits (M, V) = in (M, d) W^T (V, d) + b ---- */

void cpu_decoder_fwd(mlm_backend *be, float *logits, const void *in, const void *W,
                     const void *b, int M, int d, int V) {
    cpu_linear_fwd(be, logits, NULL, in, W, b, M, d, V, MLM_ACT_NONE);
}

void cpu_decoder_bwd(mlm_backend *be, void *din, float *dW, float *db, const float *dlogits,
                     const void *in, const void *W, int M, int d, int V) {
    linear_grads(din, dW, db, dlogits, in, W, M, d, V, 0);
}

/* ---- masked rows ---- */

void cpu_gather_rows(mlm_backend *be, void *out_, const void *in_, const int32_t *rows,
                     int M, int d) {
    float *out = out_;                                            // (M, d)
    const float *in = in_;                                        // (N, d)
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        memcpy(out + (size_t)i * d, in + (size_t)rows[i] * d, (size_t)d * sizeof(float));
}

void cpu_scatter_rows(mlm_backend *be, void *dfull_, const void *drows_, const int32_t *rows,
                      int M, int N, int d) {
    float *dfull = dfull_;                                        // (N, d)
    const float *drows = drows_;                                  // (M, d)
    memset(dfull, 0, (size_t)N * d * sizeof(float));
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        memcpy(dfull + (size_t)rows[i] * d, drows + (size_t)i * d, (size_t)d * sizeof(float));
}
