/*
 * LayerNorm row steps shared by layernorm.cu and embedding.cu: one block per row,
 * each thread 8 consecutive columns with 16-byte loads (d % 8 == 0, d <= 8192).
 * Statistics in fp32 over the bf16-rounded input that is saved for the backward, so
 * forward and backward see the same tensor: mean, rstd = 1/sqrt(biased var + eps),
 * as PyTorch. The CPU's row steps are in src/host/cpu/layernorm.c.
 */
#ifndef MLM_KERNELS_LAYERNORM_CUH
#define MLM_KERNELS_LAYERNORM_CUH

#include "common.cuh"

/* Threads of a row block for width d; dies on widths the kernels do not take. */
static inline unsigned row_threads(int d) {
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

#endif
