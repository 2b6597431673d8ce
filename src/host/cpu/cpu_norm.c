/*
 * CPU LayerNorm family: the embedding sum + LayerNorm + dropout, the post-LN
 * residual (dropout(x) + res, then LayerNorm) and the plain LayerNorm of the MLM
 * head, forward and backward. Statistics are computed in double per row and saved
 * as fp32 mean and rstd = 1/sqrt(biased var + eps), as PyTorch does. Rows run in
 * parallel; parameter gradients are column sums, split by column so they do not
 * depend on the thread count.
 */
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

/* One row: y = (x - mean) * rstd * w + b. y may alias x. */
static void ln_row_fwd(float *y, float *mean, float *rstd, const float *x,
                       const float *w, const float *b, int d, float eps) {
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

/* One row: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w. dx may alias dy. */
static void ln_row_bwd(float *dx, const float *dy, const float *x, float mean, float rstd,
                       const float *w, int d) {
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

/* dln_w[c] += sum_r dy[r,c] * xhat[r,c]; dln_b[c] += sum_r dy[r,c]. dy, x: (M, d). */
static void ln_param_grads(float *dln_w, float *dln_b, const float *dy, const float *x,
                           const float *mean, const float *rstd, int M, int d) {
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

/* ---- embeddings ---- */

void cpu_embed_fwd(mlm_backend *be, void *out_, void *sum_, float *mean, float *rstd,
                   const int32_t *ids, const int32_t *types, const void *wte_, const void *wpe_,
                   const void *wtt_, const void *ln_w, const void *ln_b,
                   int B, int S, int d, float eps, const mlm_dropout *drop) {
    float *out = out_, *sum = sum_;                               // (N, d)
    const float *wte = wte_, *wpe = wpe_, *wtt = wtt_;            // (V, d) (P, d) (T, d)
    int N = B * S;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        int s = r % S;
        const float *tok = wte + (size_t)ids[r] * d, *pos = wpe + (size_t)s * d;
        const float *typ = wtt + (size_t)(types ? types[r] : 0) * d;
        float *x = sum + (size_t)r * d, *y = out + (size_t)r * d;
        for (int c = 0; c < d; c++) x[c] = tok[c] + pos[c] + typ[c];
        ln_row_fwd(y, mean + r, rstd + r, x, ln_w, ln_b, d, eps);
        if (cpu_dropout_on(drop)) cpu_dropout_apply(drop, r / S, (uint32_t)(s * d), y, d);
    }
}

/* dwte[ids[r]] += dsum[r], dwpe[r % S] += dsum[r], dwtt[types[r]] += dsum[r], rows in
 * order; each thread owns a block of columns of all three tables, so repeated tokens
 * never race. */
static void embed_scatter(float *dwte, float *dwpe, float *dwtt, const float *dsum,
                          const int32_t *ids, const int32_t *types, int N, int S, int d) {
    int blocks = (d + LN_COL_BLOCK - 1) / LN_COL_BLOCK;
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        int c0 = blk * LN_COL_BLOCK, w = d - c0 < LN_COL_BLOCK ? d - c0 : LN_COL_BLOCK;
        for (int r = 0; r < N; r++) {
            const float *g = dsum + (size_t)r * d + c0;
            float *tok = dwte + (size_t)ids[r] * d + c0, *pos = dwpe + (size_t)(r % S) * d + c0;
            float *typ = dwtt + (size_t)(types ? types[r] : 0) * d + c0;
            for (int c = 0; c < w; c++) {
                tok[c] += g[c];
                pos[c] += g[c];
                typ[c] += g[c];
            }
        }
    }
}

void cpu_embed_bwd(mlm_backend *be, float *dwte, float *dwpe, float *dwtt, float *dln_w,
                   float *dln_b, const void *dout_, const void *sum_, const float *mean,
                   const float *rstd, const int32_t *ids, const int32_t *types, const void *ln_w,
                   int B, int S, int d, const mlm_dropout *drop) {
    const float *dout = dout_, *sum = sum_;                       // (N, d)
    int N = B * S;
    float *g = cpu_scratch(be, (size_t)N * d);                    // (N, d) dLN, then dsum
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        memcpy(g + (size_t)r * d, dout + (size_t)r * d, (size_t)d * sizeof(float));
        if (cpu_dropout_on(drop))
            cpu_dropout_apply(drop, r / S, (uint32_t)(r % S * d), g + (size_t)r * d, d);
    }
    ln_param_grads(dln_w, dln_b, g, sum, mean, rstd, N, d);
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        ln_row_bwd(g + (size_t)r * d, g + (size_t)r * d, sum + (size_t)r * d, mean[r], rstd[r],
                   ln_w, d);
    embed_scatter(dwte, dwpe, dwtt, g, ids, types, N, S, d);
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
        ln_row_fwd(out + (size_t)r * d, mean + r, rstd + r, sr, ln_w, ln_b, d, eps);
    }
}

void cpu_residual_ln_bwd(mlm_backend *be, void *dx_, void *dres_, float *dln_w, float *dln_b,
                         const void *dout_, const void *s_, const float *mean, const float *rstd,
                         const void *ln_w, int B, int S, int d, const mlm_dropout *drop) {
    float *dx = dx_, *dres = dres_;                               // (N, d)
    const float *dout = dout_, *s = s_;                           // (N, d)
    int N = B * S;
    ln_param_grads(dln_w, dln_b, dout, s, mean, rstd, N, d);
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        float *dxr = dx + (size_t)r * d;
        ln_row_bwd(dxr, dout + (size_t)r * d, s + (size_t)r * d, mean[r], rstd[r], ln_w, d);
        if (dres) memcpy(dres + (size_t)r * d, dxr, (size_t)d * sizeof(float));
        if (cpu_dropout_on(drop)) cpu_dropout_apply(drop, r / S, (uint32_t)(r % S * d), dxr, d);
    }
}

/* ---- plain LayerNorm ---- */

void cpu_layernorm_fwd(mlm_backend *be, void *out_, float *mean, float *rstd, const void *x_,
                       const void *ln_w, const void *ln_b, int M, int d, float eps) {
    float *out = out_;                                            // (M, d)
    const float *x = x_;                                          // (M, d)
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < M; r++)
        ln_row_fwd(out + (size_t)r * d, mean + r, rstd + r, x + (size_t)r * d, ln_w, ln_b, d, eps);
}

void cpu_layernorm_bwd(mlm_backend *be, void *dx_, float *dln_w, float *dln_b, const void *dout_,
                       const void *x_, const float *mean, const float *rstd, const void *ln_w,
                       int M, int d) {
    float *dx = dx_;                                              // (M, d)
    const float *dout = dout_, *x = x_;                           // (M, d)
    ln_param_grads(dln_w, dln_b, dout, x, mean, rstd, M, d);
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < M; r++)
        ln_row_bwd(dx + (size_t)r * d, dout + (size_t)r * d, x + (size_t)r * d, mean[r], rstd[r],
                   ln_w, d);
}
