/*
 * CPU LayerNorm family (twin: src/kernels/layernorm.cu): the post-LN residual
 * (dropout(x) + res, then LayerNorm) and the plain LayerNorm of the MLM head, forward
 * and backward, and the row steps the embeddings (embedding.c) share. Statistics are
 * computed in double per row and saved as fp32 mean and rstd = 1/sqrt(biased var +
 * eps), as PyTorch does. Rows run in parallel; parameter gradients are column sums,
 * split by column so they do not depend on the thread count.
 */
#include <math.h>
#include <string.h>

#include "common.h"

/* ---- row steps, shared with embedding.c (documented in common.h) ---- */

void cpu_ln_row_fwd(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int d,
                    float eps) {
    double sum = 0, sq = 0;
    #pragma omp simd reduction(+ : sum)
    for (int c = 0; c < d; c++) sum += x[c];
    double mu = sum / d;
    #pragma omp simd reduction(+ : sq)
    for (int c = 0; c < d; c++) sq += (x[c] - mu) * (x[c] - mu);
    float m = (float)mu, rs = (float)(1.0 / sqrt(sq / d + eps));
    for (int c = 0; c < d; c++) y[c] = (x[c] - m) * rs * w[c] + b[c];
    *mean = m;
    *rstd = rs;
}

void cpu_ln_row_bwd(float *dx, const float *dy, const float *x, float mean, float rstd, const float *w, int d) {
    double sg = 0, sgx = 0;
    #pragma omp simd reduction(+ : sg, sgx)
    for (int c = 0; c < d; c++) {
        float g = dy[c] * w[c];
        sg += g;
        sgx += g * ((x[c] - mean) * rstd);
    }
    float mg = (float)(sg / d), mgx = (float)(sgx / d);
    for (int c = 0; c < d; c++)
        dx[c] = rstd * (dy[c] * w[c] - mg - (x[c] - mean) * rstd * mgx);
}

enum { LN_COL_BLOCK = 32 };

/* By blocks of LN_COL_BLOCK columns, rows in order. */
void cpu_ln_param_grads(float *dln_w, float *dln_b, const float *dy, const float *x, const float *mean,
                        const float *rstd, int M, int d) {
    int blocks = (d + LN_COL_BLOCK - 1) / LN_COL_BLOCK;
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        int c0 = blk * LN_COL_BLOCK, w = d - c0 < LN_COL_BLOCK ? d - c0 : LN_COL_BLOCK;
        double sw[LN_COL_BLOCK] = {0}, sb[LN_COL_BLOCK] = {0};
        for (int r = 0; r < M; r++) {
            const float *g = dy + (size_t)r * d + c0, *xr = x + (size_t)r * d + c0;
            for (int c = 0; c < w; c++) {
                sw[c] += g[c] * ((xr[c] - mean[r]) * rstd[r]);
                sb[c] += g[c];
            }
        }
        for (int c = 0; c < w; c++) {
            dln_w[c0 + c] += (float)sw[c];
            dln_b[c0 + c] += (float)sb[c];
        }
    }
}

/* ---- post-LN residual ---- */

void cpu_residual_ln_fwd(mlm_backend *be, void *out_, void *s_, float *mean, float *rstd,
                         const void *x_, const void *res_, const void *ln_w, const void *ln_b,
                         int B, int S, int d, float eps, const mlm_dropout *drop) {
    float *out = out_, *s = s_;                                   // (N, d)
    const float *x = x_, *res = res_;                             // (N, d)
    int N = B * S;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        float *sr = s + (size_t)r * d;
        const float *rr = res + (size_t)r * d;
        memcpy(sr, x + (size_t)r * d, (size_t)d * sizeof(float));
        if (cpu_dropout_on(drop)) cpu_dropout_apply(drop, r / S, (uint32_t)(r % S * d), sr, d);
        for (int c = 0; c < d; c++) sr[c] += rr[c];
        cpu_ln_row_fwd(out + (size_t)r * d, mean + r, rstd + r, sr, ln_w, ln_b, d, eps);
    }
}

void cpu_residual_ln_bwd(mlm_backend *be, void *dx_, void *dres_, float *dln_w, float *dln_b, float *dbias,
                         const void *dout_, const void *s_, const float *mean, const float *rstd,
                         const void *ln_w, int B, int S, int d, const mlm_dropout *drop) {
    float *dx = dx_, *dres = dres_;                               // (N, d)
    const float *dout = dout_, *s = s_;                           // (N, d)
    int N = B * S;
    cpu_ln_param_grads(dln_w, dln_b, dout, s, mean, rstd, N, d);
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        float *dxr = dx + (size_t)r * d;
        cpu_ln_row_bwd(dxr, dout + (size_t)r * d, s + (size_t)r * d, mean[r], rstd[r], ln_w, d);
        if (dres) memcpy(dres + (size_t)r * d, dxr, (size_t)d * sizeof(float));
        if (cpu_dropout_on(drop)) cpu_dropout_apply(drop, r / S, (uint32_t)(r % S * d), dxr, d);
    }
    if (dbias) cpu_colsum_add(dbias, dx, N, d, d);
}

/* ---- plain LayerNorm ---- */

void cpu_layernorm_fwd(mlm_backend *be, void *out_, float *mean, float *rstd, const void *x_,
                       const void *ln_w, const void *ln_b, int M, int d, float eps) {
    float *out = out_;                                            // (M, d)
    const float *x = x_;                                          // (M, d)
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < M; r++)
        cpu_ln_row_fwd(out + (size_t)r * d, mean + r, rstd + r, x + (size_t)r * d, ln_w, ln_b, d, eps);
}

void cpu_layernorm_bwd(mlm_backend *be, void *dx_, float *dln_w, float *dln_b, const void *dout_,
                       const void *x_, const float *mean, const float *rstd, const void *ln_w,
                       int M, int d) {
    float *dx = dx_;                                              // (M, d)
    const float *dout = dout_, *x = x_;                           // (M, d)
    cpu_ln_param_grads(dln_w, dln_b, dout, x, mean, rstd, M, d);
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < M; r++)
        cpu_ln_row_bwd(dx + (size_t)r * d, dout + (size_t)r * d, x + (size_t)r * d, mean[r], rstd[r],
                   ln_w, d);
}
