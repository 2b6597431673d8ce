/*
 * The LayerNorm family, forward and backward: embeddings (word + position +
 * token-type rows, LayerNorm, dropout), the post-LN residual (dropout(x) + res,
 * LayerNorm) and the plain LayerNorm of the MLM head. One block per row, each
 * thread 8 consecutive columns with 16-byte loads (d % 8 == 0, d <= 8192).
 * Statistics in fp32 over the bf16-rounded input that is saved for the backward,
 * so forward and backward see the same tensor: mean, rstd = 1/sqrt(biased var +
 * eps), as PyTorch. Dropout masks come from Philox (dropout.cuh), never stored.
 * Parameter gradients are deterministic column sums (reduce.cuh); the embedding
 * tables' gradients are embedding.cu's.
 */
#include "common.cuh"
#include "dropout.cuh"
#include "reduce.cuh"

/* Threads of a row block for width d; dies on widths the kernels do not take. */
static unsigned row_threads(int d) {
    if (d <= 0 || d % 8 || d > 8 * 1024)
        mlm_die(MLM_EXIT_INPUT, "cuda backend: hidden size %d must be a multiple of 8 up to 8192", d);
    return cdiv(cdiv(d, 8), 32) * 32;
}

/* Valid columns of the thread's 8 starting at c0. */
__device__ __forceinline__ int cols8(int c0, int d) { return c0 < d ? min(8, d - c0) : 0; }

__device__ __forceinline__ void round_bf16(float v[8]) {
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = __bfloat162float(__float2bfloat16(v[k]));
}

/* LayerNorm of one row held 8 columns per thread (n valid from c0, zeros beyond):
 * v becomes (v - mean) rstd w + b; every thread gets mean and rstd. */
__device__ __forceinline__ void ln_row_fwd(float v[8], int n, int c0, int d, float eps, const bf16 *w,
                                           const bf16 *b, float &mean, float &rstd, float *shared) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; k++) s += v[k];
    mean = block_sum(s, shared) / d;
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; k++) q += k < n ? (v[k] - mean) * (v[k] - mean) : 0.0f;
    rstd = 1.0f / sqrtf(block_sum(q, shared) / d + eps);
    float wv[8], bv[8];
    load8(wv, w + c0, n);
    load8(bv, b + c0, n);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = (v[k] - mean) * rstd * wv[k] + bv[k];
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy w, for one row held as in
 * ln_row_fwd; x is the LayerNorm input. Columns beyond n have dy = 0. */
__device__ __forceinline__ void ln_row_bwd(float dx[8], const float dy[8], const float x[8], int n, int c0,
                                           int d, float mean, float rstd, const bf16 *w, float *shared) {
    float wv[8], g[8], xhat[8], sg = 0.0f, sgx = 0.0f;
    load8(wv, w + c0, n);
#pragma unroll
    for (int k = 0; k < 8; k++) {
        g[k] = dy[k] * wv[k];
        xhat[k] = (x[k] - mean) * rstd;
        sg += g[k];
        sgx += g[k] * xhat[k];
    }
    float mg = block_sum(sg, shared) / d, mgx = block_sum(sgx, shared) / d;
#pragma unroll
    for (int k = 0; k < 8; k++) dx[k] = rstd * (g[k] - mg - xhat[k] * mgx);
}

/* Column sums of the LayerNorm parameter gradients: (dy xhat, dy) at (r, c). */
template <class T> struct ln_param_grads {
    const T *dy;              // (R, d)
    const bf16 *x;            // (R, d) LayerNorm input
    const float *mean, *rstd; // (R)
    int d;
    __device__ float2 operator()(int r, int c) const {
        size_t i = (size_t)r * d + c;
        float g = (float)dy[i];
        return make_float2(g * ((__bfloat162float(x[i]) - mean[r]) * rstd[r]), g);
    }
};

/* The row's LayerNorm statistics, written by its first thread. */
__device__ __forceinline__ void store_stats(float *mean, float *rstd, int r, float mu, float rs) {
    if (threadIdx.x == 0) {
        mean[r] = mu;
        rstd[r] = rs;
    }
}

/* v, the LayerNorm input, rounded to bf16 as saved for the backward (into saved),
 * then normalized in place. */
__device__ __forceinline__ void save_and_normalize(float v[8], bf16 *saved, int n, int c0, int d, float eps,
                                                   const bf16 *ln_w, const bf16 *ln_b, float &mu, float &rs,
                                                   float *shared) {
    round_bf16(v);
    store8(saved, v, n);
    ln_row_fwd(v, n, c0, d, eps, ln_w, ln_b, mu, rs, shared);
}

/* ds = the LayerNorm backward of a bf16 row: dout and the saved input x at `at`. */
__device__ __forceinline__ void load_ln_row_bwd(float ds[8], const bf16 *dout, const bf16 *x, size_t at, int n,
                                                int c0, int d, float mu, float rs, const bf16 *ln_w,
                                                float *shared) {
    float dy[8], xv[8];
    load8(dy, dout + at, n);
    load8(xv, x + at, n);
    ln_row_bwd(ds, dy, xv, n, c0, d, mu, rs, ln_w, shared);
}

/* ---- embeddings ---- */

__global__ void embed_fwd_kernel(bf16 *out, bf16 *sum, float *mean, float *rstd, const int32_t *ids,
                                 const int32_t *types, const bf16 *wte, const bf16 *wpe, const bf16 *wtt,
                                 const bf16 *ln_w, const bf16 *ln_b, int S, int d, float eps, mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    __shared__ float shared[32];
    int r = blockIdx.x, s = r % S, c0 = 8 * threadIdx.x, n = cols8(c0, d);
    size_t at = (size_t)r * d + c0;
    float tok[8], pos[8], typ[8], v[8], mu, rs;
    load8(tok, wte + (size_t)ids[r] * d + c0, n);
    load8(pos, wpe + (size_t)s * d + c0, n);
    load8(typ, wtt + (size_t)(types ? types[r] : 0) * d + c0, n);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = tok[k] + pos[k] + typ[k];
    save_and_normalize(v, sum + at, n, c0, d, eps, ln_w, ln_b, mu, rs, shared);
    dropout8(v, drop, drop.seq_base + (uint32_t)(r / S), (uint32_t)(s * d + c0));
    store8(out + at, v, n);
    store_stats(mean, rstd, r, mu, rs);
}

void cuda_embed_fwd(mlm_backend *be, void *out, void *sum, float *mean, float *rstd,
                    const int32_t *ids, const int32_t *types, const void *wte, const void *wpe,
                    const void *wtt, const void *ln_w, const void *ln_b, int B, int S, int d,
                    float eps, const mlm_dropout *drop) {
    cuda_state *st = cuda_st(be);
    if (B * S == 0) return;
    embed_fwd_kernel<<<B * S, row_threads(d), 0, st->stream>>>(
        (bf16 *)out, (bf16 *)sum, mean, rstd, ids, types, (const bf16 *)wte, (const bf16 *)wpe,
        (const bf16 *)wtt, (const bf16 *)ln_w, (const bf16 *)ln_b, S, d, eps, dropout_arg(drop));
    launchCheck();
}

/* gd = dropout(dout), the gradient of the LayerNorm output; dsum = its LayerNorm
 * backward, the gradient of the embedding sum. Both fp32 (N, d). */
__global__ void embed_bwd_kernel(float *gd, float *dsum, const bf16 *dout, const bf16 *sum, const float *mean,
                                 const float *rstd, const bf16 *ln_w, int S, int d, mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    __shared__ float shared[32];
    int r = blockIdx.x, s = r % S, c0 = 8 * threadIdx.x, n = cols8(c0, d);
    size_t at = (size_t)r * d + c0;
    float g[8], x[8], dx[8];
    load8(g, dout + at, n);
    dropout8(g, drop, drop.seq_base + (uint32_t)(r / S), (uint32_t)(s * d + c0));
    store8(gd + at, g, n);
    load8(x, sum + at, n);
    ln_row_bwd(dx, g, x, n, c0, d, mean[r], rstd[r], ln_w, shared);
    store8(dsum + at, dx, n);
}

void cuda_embed_bwd(mlm_backend *be, float *dwte, float *dwpe, float *dwtt, float *dln_w,
                    float *dln_b, const void *dout, const void *sum, const float *mean,
                    const float *rstd, const int32_t *ids, const int32_t *types, const void *ln_w,
                    int B, int S, int d, const mlm_dropout *drop) {
    cuda_state *st = cuda_st(be);
    int N = B * S;
    if (N == 0) return;
    size_t rows = (size_t)N * d * sizeof(float);
    size_t bytes[3] = {rows, rows, embedding_grads_scratch(N, d)};
    void *p[3];   // gd f32 (N, d), dsum f32 (N, d), the table gradients' scratch
    cuda_scratch_slices(st, 3, bytes, p);
    float *gd = (float *)p[0], *dsum = (float *)p[1];
    embed_bwd_kernel<<<N, row_threads(d), 0, st->stream>>>(gd, dsum, (const bf16 *)dout, (const bf16 *)sum,
                                                           mean, rstd, (const bf16 *)ln_w, S, d,
                                                           dropout_arg(drop));
    launchCheck();
    colsum(st, dln_w, dln_b, ln_param_grads<float>{gd, (const bf16 *)sum, mean, rstd, d}, N, d);
    embedding_grads(st, dwte, dwpe, dwtt, dsum, ids, types, B, S, d, p[2]);
}

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
