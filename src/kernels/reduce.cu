/*
 * Deterministic reductions without float atomics (twin: src/host/cpu/reduce.c): the
 * second pass of the column sums (reduce.cuh) and the sum_squares op behind the
 * global gradient norm. The sum of squares runs in two passes: SUMSQ_MAX_BLOCKS
 * blocks at most, each owning a fixed contiguous chunk (from n alone), accumulate in
 * double and fold in a fixed tree; one block then adds the block partials in order.
 */
#include "common.cuh"
#include "reduce.cuh"

enum { FINISH_THREADS = 256, SUMSQ_THREADS = 256, SUMSQ_MAX_BLOCKS = 1024 };

__global__ void colsum_finish_kernel(float *acc0, float *acc1, const float2 *partial, int P, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float2 s = make_float2(0.0f, 0.0f);
    for (int p = 0; p < P; p++) {
        float2 v = partial[(size_t)p * C + c];
        s.x += v.x;
        s.y += v.y;
    }
    acc0[c] += s.x;
    if (acc1) acc1[c] += s.y;
}

void colsum_finish(cuda_state *st, float *acc0, float *acc1, const float2 *partial, int P, int C) {
    colsum_finish_kernel<<<cdiv(C, FINISH_THREADS), FINISH_THREADS, 0, st->stream>>>(acc0, acc1, partial, P, C);
    launchCheck();
}

__global__ void add_into_kernel(float *acc, const float *v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) acc[i] += v[i];
}

void add_into(cuda_state *st, float *acc, const float *v, int n) {
    if (n <= 0) return;
    add_into_kernel<<<cdiv(n, FINISH_THREADS), FINISH_THREADS, 0, st->stream>>>(acc, v, n);
    launchCheck();
}

/* partial[b] = sum of g[i]^2 over block b's chunk [b chunk, (b+1) chunk), chunk % 8 == 0. */
__global__ void sumsq_partials_kernel(double *partial, const float *g, size_t n, size_t chunk) {
    __shared__ double shared[32];
    size_t lo = blockIdx.x * chunk, hi = min(n, lo + chunk);
    double acc = 0;
    for (size_t i = lo + 8 * (size_t)threadIdx.x; i < hi; i += 8 * (size_t)blockDim.x) {
        float v[8];
        load8(v, g + i, run8(i, hi));
#pragma unroll
        for (int k = 0; k < 8; k++) acc += (double)v[k] * v[k];
    }
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

/* out[0] = sum of partial[0..P), each thread a strided run, then the fixed fold. */
__global__ void sumsq_finish_kernel(float *out, const double *partial, int P) {
    __shared__ double shared[32];
    double acc = 0;
    for (int p = threadIdx.x; p < P; p += blockDim.x) acc += partial[p];
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) out[0] = (float)acc;
}

void cuda_sum_squares(mlm_backend *be, float *out, const float *g, size_t n) {
    cuda_state *st = cuda_st(be);
    size_t per_block = (size_t)SUMSQ_THREADS * 8;
    int P = (int)min((size_t)SUMSQ_MAX_BLOCKS, (size_t)cdiv(n, per_block));
    if (P == 0) P = 1;
    size_t chunk = (size_t)cdiv(n, P);
    chunk = (chunk + 7) / 8 * 8;   // 8-element runs stay 16-byte aligned
    double *partial = (double *)cuda_partials(st, (size_t)P * sizeof(double));   // (P)
    sumsq_partials_kernel<<<P, SUMSQ_THREADS, 0, st->stream>>>(partial, g, n, chunk);
    launchCheck();
    sumsq_finish_kernel<<<1, SUMSQ_THREADS, 0, st->stream>>>(out, partial, P);
    launchCheck();
}
