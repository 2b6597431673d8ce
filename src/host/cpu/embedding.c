/*
 * CPU embeddings (twin: src/kernels/embedding.cu): the word + position + token-type
 * sum, LayerNorm (layernorm.c's row steps) and dropout, forward and backward, and the
 * gradients of the three tables, summed in row order by column blocks so that
 * repeated tokens never race.
 */
#include <string.h>

#include "common.h"

enum { TABLE_COL_BLOCK = 32 };

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
        cpu_ln_row_fwd(y, mean + r, rstd + r, x, ln_w, ln_b, d, eps);
        if (cpu_dropout_on(drop)) cpu_dropout_apply(drop, r / S, (uint32_t)(s * d), y, d);
    }
}

/* dwte[ids[r]] += dsum[r], dwpe[r % S] += dsum[r], dwtt[types[r]] += dsum[r], rows in
 * order; each thread owns a block of columns of all three tables, so repeated tokens
 * never race. */
static void embed_scatter(float *dwte, float *dwpe, float *dwtt, const float *dsum,
                          const int32_t *ids, const int32_t *types, int N, int S, int d) {
    int blocks = (d + TABLE_COL_BLOCK - 1) / TABLE_COL_BLOCK;
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        int c0 = blk * TABLE_COL_BLOCK, w = d - c0 < TABLE_COL_BLOCK ? d - c0 : TABLE_COL_BLOCK;
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
    cpu_ln_param_grads(dln_w, dln_b, g, sum, mean, rstd, N, d);
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        cpu_ln_row_bwd(g + (size_t)r * d, g + (size_t)r * d, sum + (size_t)r * d, mean[r], rstd[r],
                   ln_w, d);
    embed_scatter(dwte, dwpe, dwtt, g, ids, types, N, S, d);
}
