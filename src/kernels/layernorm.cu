/*
 * The LayerNorm family on the GPU (twin: src/host/cpu/layernorm.c), forward and
 * backward: the post-LN residual (dropout(x) + res, LayerNorm) and the plain
 * LayerNorm of the MLM head, over the row steps of layernorm.cuh (one block per
 * row). Dropout masks come from Philox (dropout.cuh), never stored. Parameter
 * gradients are deterministic column sums (reduce.cuh).
 */
#include "common.cuh"
#include "dropout.cuh"
#include "layernorm.cuh"
#include "reduce.cuh"

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

/* ds = LayerNorm backward of dout; dres = ds (when not NULL); dx = dropout(ds). */
__global__ void residual_ln_bwd_kernel(bf16 *dx, bf16 *dres, const bf16 *dout, const bf16 *s_in,
                                       const float *mean, const float *rstd, const bf16 *ln_w, int S, int d,
                                       mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    __shared__ float shared[32];
    int r = blockIdx.x, c0 = 8 * threadIdx.x, n = cols8(c0, d);
    size_t at = (size_t)r * d + c0;
    float ds[8];
    load_ln_row_bwd(ds, dout, s_in, at, n, c0, d, mean[r], rstd[r], ln_w, shared);
    if (dres) store8(dres + at, ds, n);
    dropout8(ds, drop, drop.seq_base + (uint32_t)(r / S), (uint32_t)(r % S * d + c0));
    store8(dx + at, ds, n);
}

void cuda_residual_ln_bwd(mlm_backend *be, void *dx, void *dres, float *dln_w, float *dln_b,
                          const void *dout, const void *s, const float *mean, const float *rstd,
                          const void *ln_w, int B, int S, int d, const mlm_dropout *drop) {
    cuda_state *st = cuda_st(be);
    int N = B * S;
    if (N == 0) return;
    colsum(st, dln_w, dln_b, ln_param_grads<bf16>{(const bf16 *)dout, (const bf16 *)s, mean, rstd, d}, N, d);
    residual_ln_bwd_kernel<<<N, row_threads(d), 0, st->stream>>>(
        (bf16 *)dx, (bf16 *)dres, (const bf16 *)dout, (const bf16 *)s, mean, rstd, (const bf16 *)ln_w, S, d,
        dropout_arg(drop));
    launchCheck();
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

__global__ void layernorm_bwd_kernel(bf16 *dx, const bf16 *dout, const bf16 *x, const float *mean,
                                     const float *rstd, const bf16 *ln_w, int d) {
    __shared__ float shared[32];
    int r = blockIdx.x, c0 = 8 * threadIdx.x, n = cols8(c0, d);
    size_t at = (size_t)r * d + c0;
    float g[8];
    load_ln_row_bwd(g, dout, x, at, n, c0, d, mean[r], rstd[r], ln_w, shared);
    store8(dx + at, g, n);
}

void cuda_layernorm_bwd(mlm_backend *be, void *dx, float *dln_w, float *dln_b, const void *dout,
                        const void *x, const float *mean, const float *rstd, const void *ln_w,
                        int M, int d) {
    cuda_state *st = cuda_st(be);
    if (M == 0) return;
    colsum(st, dln_w, dln_b, ln_param_grads<bf16>{(const bf16 *)dout, (const bf16 *)x, mean, rstd, d}, M, d);
    layernorm_bwd_kernel<<<M, row_threads(d), 0, st->stream>>>((bf16 *)dx, (const bf16 *)dout, (const bf16 *)x,
                                                               mean, rstd, (const bf16 *)ln_w, d);
    launchCheck();
}
