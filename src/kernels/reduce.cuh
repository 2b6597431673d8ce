/*
 * Deterministic column sums, the parameter-gradient reductions of the backward
 * (bias, LayerNorm weight and bias, position and token-type tables):
 *   acc0[c] += sum_r f(r, c).x,  acc1[c] += sum_r f(r, c).y   (acc1 may be NULL)
 * for r < R, c < C, where the functor f reads whatever the sum is over. No atomics:
 * pass one sums fixed chunks of COLSUM_CHUNK rows per column into partials (one
 * warp-wide run of 32 columns per block, 8 row lanes, then a fixed-order fold);
 * pass two adds the chunk partials of each column in order. The chunking depends on
 * R alone, so every run gives the same bits.
 */
#ifndef MLM_KERNELS_REDUCE_CUH
#define MLM_KERNELS_REDUCE_CUH

#include "common.cuh"

enum { COLSUM_CHUNK = 256, COLSUM_COLS = 32, COLSUM_ROWS = 8 };

/* partial (P, C): chunk p's sums of column c. Block (32, 8), grid (C/32, P). */
template <class F> __global__ void colsum_partials_kernel(float2 *partial, F f, int R, int C) {
    __shared__ float2 fold[COLSUM_ROWS][COLSUM_COLS];
    int c = blockIdx.x * COLSUM_COLS + threadIdx.x, p = blockIdx.y;
    int r1 = min(R, (p + 1) * COLSUM_CHUNK);
    float2 acc = make_float2(0.0f, 0.0f);
    if (c < C)
        for (int r = p * COLSUM_CHUNK + threadIdx.y; r < r1; r += COLSUM_ROWS) {
            float2 v = f(r, c);
            acc.x += v.x;
            acc.y += v.y;
        }
    fold[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y || c >= C) return;
    for (int k = 1; k < COLSUM_ROWS; k++) {
        acc.x += fold[k][threadIdx.x].x;
        acc.y += fold[k][threadIdx.x].y;
    }
    partial[(size_t)p * C + c] = acc;
}

/* acc[i] += v[i] for i < n (reduce.cu). */
void add_into(cuda_state *st, float *acc, const float *v, int n);

/* acc0[c] += sum_p partial[p, c].x, acc1 likewise with .y (reduce.cu). */
void colsum_finish(cuda_state *st, float *acc0, float *acc1, const float2 *partial, int P, int C);

template <class F> void colsum(cuda_state *st, float *acc0, float *acc1, F f, int R, int C) {
    if (R <= 0 || C <= 0) return;
    int P = (int)cdiv(R, COLSUM_CHUNK);
    float2 *partial = (float2 *)cuda_partials(st, (size_t)P * C * sizeof(float2));   // (P, C)
    dim3 grid(cdiv(C, COLSUM_COLS), P), block(COLSUM_COLS, COLSUM_ROWS);
    colsum_partials_kernel<<<grid, block, 0, st->stream>>>(partial, f, R, C);
    launchCheck();
    colsum_finish(st, acc0, acc1, partial, P, C);
}

/* f for a plain column sum of x (R, C), bf16 or fp32. */
template <class T> struct colsum_of {
    const T *x;
    int C;
    __device__ float2 operator()(int r, int c) const {
        return make_float2((float)x[(size_t)r * C + c], 0.0f);
    }
};

#endif
