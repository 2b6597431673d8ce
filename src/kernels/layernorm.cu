/*
 * The LayerNorm family on the GPU (twin: src/host/cpu/layernorm.c), forward and
 * backward: the post-LN residual (dropout(x) + res, LayerNorm) and the plain
 * LayerNorm of the MLM head, over the row steps of layernorm.cuh. The forwards run
 * one block per row; the backwards LN_BWD_ROWS rows per block, summing the parameter
 * gradients (and the bias gradient of the layer before, when asked) into per-block
 * partials on the way, so no second pass re-reads the gradients. Dropout masks come
 * from Philox (dropout.cuh), never stored.
 */
#include "common.cuh"
#include "dropout.cuh"
#include "layernorm.cuh"
#include "reduce.cuh"

enum { LN_BWD_ROWS = 32 };   // rows per backward block: predict.c mirrors it

/* ---- post-LN residual ---- */

__global__ void residual_ln_fwd_kernel(bf16 *out, bf16 *s_out, float *mean, float *rstd, const bf16 *x,
                                       const bf16 *res, const bf16 *ln_w, const bf16 *ln_b, int S, int d,
                                       float eps, mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    __shared__ float shared[32];
    int r = blockIdx.x, c0 = 8 * threadIdx.x, n = cols8(c0, d);
    size_t at = (size_t)r * d + c0;
    float v[8], rv[8], mu, rs;
    load8(v, x + at, n);
    load8(rv, res + at, n);
    dropout8(v, drop, drop.seq_base + (uint32_t)(r / S), (uint32_t)(r % S * d + c0));
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] += rv[k];
    save_and_normalize(v, s_out + at, n, c0, d, eps, ln_w, ln_b, mu, rs, shared);
    store8(out + at, v, n);
    store_stats(mean, rstd, r, mu, rs);
}

void cuda_residual_ln_fwd(mlm_backend *be, void *out, void *s, float *mean, float *rstd,
                          const void *x, const void *res, const void *ln_w, const void *ln_b,
                          int B, int S, int d, float eps, const mlm_dropout *drop) {
    cuda_state *st = cuda_st(be);
    if (B * S == 0) return;
    residual_ln_fwd_kernel<<<B * S, row_threads(d), 0, st->stream>>>(
        (bf16 *)out, (bf16 *)s, mean, rstd, (const bf16 *)x, (const bf16 *)res, (const bf16 *)ln_w,
        (const bf16 *)ln_b, S, d, eps, dropout_arg(drop));
    launchCheck();
}

/* ---- backward, shared by both: LN_BWD_ROWS rows a block ---- */

/* Rows [b LN_BWD_ROWS, (b + 1) LN_BWD_ROWS) of a LayerNorm backward, row by row:
 * ds = dLayerNorm(dout) with x the saved input; dres = ds (when not NULL); dx =
 * dropout(ds). Each thread sums its 8 columns' parameter gradients over the block's
 * rows as it goes: part[b, c] = (sum dy xhat, sum dy), and part_bias[b, c] (when not
 * NULL) = (sum dx as stored in bf16, 0). The rows a block owns depend on N alone, so
 * the sums come out the same on every run. */
__global__ void ln_bwd_rows_kernel(bf16 *dx, bf16 *dres, float2 *part, float2 *part_bias, const bf16 *dout,
                                   const bf16 *x, const float *mean, const float *rstd, const bf16 *ln_w, int N,
                                   int S, int d, mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    __shared__ float shared[32];
    int c0 = 8 * threadIdx.x, n = cols8(c0, d);
    int r0 = blockIdx.x * LN_BWD_ROWS, r1 = min(N, r0 + LN_BWD_ROWS);
    float gw[8] = {0}, gb[8] = {0}, gx[8] = {0};
    for (int r = r0; r < r1; r++) {
        size_t at = (size_t)r * d + c0;
        float dy[8], xv[8], ds[8], mu = mean[r], rs = rstd[r];
        load8(dy, dout + at, n);
        load8(xv, x + at, n);
        ln_row_bwd(ds, dy, xv, n, c0, d, mu, rs, ln_w, shared);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            gw[k] += dy[k] * ((xv[k] - mu) * rs);
            gb[k] += dy[k];
        }
        if (dres) store8(dres + at, ds, n);
        dropout8(ds, drop, drop.seq_base + (uint32_t)(r / S), (uint32_t)(r % S * d + c0));
        store8(dx + at, ds, n);
        if (part_bias) {
            round_bf16(ds);
#pragma unroll
            for (int k = 0; k < 8; k++) gx[k] += ds[k];
        }
    }
    size_t at = (size_t)blockIdx.x * d + c0;
    for (int k = 0; k < n; k++) {
        part[at + k] = make_float2(gw[k], gb[k]);
        if (part_bias) part_bias[at + k] = make_float2(gx[k], 0.0f);
    }
}

/* The backward of N rows: the rows kernel, then the partials added into dln_w and
 * dln_b (and dbias) in block order. */
static void ln_bwd(cuda_state *st, bf16 *dx, bf16 *dres, float *dln_w, float *dln_b, float *dbias,
                   const bf16 *dout, const bf16 *x, const float *mean, const float *rstd, const bf16 *ln_w, int N,
                   int S, int d, const mlm_dropout *drop) {
    if (N == 0) return;
    int P = (int)cdiv(N, LN_BWD_ROWS);
    size_t one = (size_t)P * d;
    float2 *part = (float2 *)cuda_partials(st, (dbias ? 2 : 1) * one * sizeof(float2));   // (P, d), twice
    ln_bwd_rows_kernel<<<P, row_threads(d), 0, st->stream>>>(dx, dres, part, dbias ? part + one : nullptr, dout, x,
                                                             mean, rstd, ln_w, N, S, d, dropout_arg(drop));
    launchCheck();
    colsum_finish(st, dln_w, dln_b, part, P, d);
    if (dbias) colsum_finish(st, dbias, nullptr, part + one, P, d);
}

void cuda_residual_ln_bwd(mlm_backend *be, void *dx, void *dres, float *dln_w, float *dln_b, float *dbias,
                          const void *dout, const void *s, const float *mean, const float *rstd,
                          const void *ln_w, int B, int S, int d, const mlm_dropout *drop) {
    ln_bwd(cuda_st(be), (bf16 *)dx, (bf16 *)dres, dln_w, dln_b, dbias, (const bf16 *)dout, (const bf16 *)s, mean,
           rstd, (const bf16 *)ln_w, B * S, S, d, drop);
}

/* ---- plain LayerNorm (MLM head) ---- */

__global__ void layernorm_fwd_kernel(bf16 *out, float *mean, float *rstd, const bf16 *x, const bf16 *ln_w,
                                     const bf16 *ln_b, int d, float eps) {
    __shared__ float shared[32];
    int r = blockIdx.x, c0 = 8 * threadIdx.x, n = cols8(c0, d);
    size_t at = (size_t)r * d + c0;
    float v[8], mu, rs;
    load8(v, x + at, n);
    ln_row_fwd(v, n, c0, d, eps, ln_w, ln_b, mu, rs, shared);
    store8(out + at, v, n);
    store_stats(mean, rstd, r, mu, rs);
}

void cuda_layernorm_fwd(mlm_backend *be, void *out, float *mean, float *rstd, const void *x,
                        const void *ln_w, const void *ln_b, int M, int d, float eps) {
    cuda_state *st = cuda_st(be);
    if (M == 0) return;
    layernorm_fwd_kernel<<<M, row_threads(d), 0, st->stream>>>((bf16 *)out, mean, rstd, (const bf16 *)x,
                                                               (const bf16 *)ln_w, (const bf16 *)ln_b, d, eps);
    launchCheck();
}

void cuda_layernorm_bwd(mlm_backend *be, void *dx, float *dln_w, float *dln_b, const void *dout,
                        const void *x, const float *mean, const float *rstd, const void *ln_w,
                        int M, int d) {
    ln_bwd(cuda_st(be), (bf16 *)dx, nullptr, dln_w, dln_b, nullptr, (const bf16 *)dout, (const bf16 *)x, mean, rstd,
           (const bf16 *)ln_w, M, M, d, nullptr);
}
