/*
 * Deterministic reductions of the CPU backend (twin: src/kernels/reduce.cu): the
 * column sums behind bias gradients, and the sum_squares op behind the global
 * gradient norm. Fixed blocks summed in double, then in order, so the results do not
 * depend on the thread count.
 */
#include "common.h"

enum { COLSUM_BLOCK = 64 };

void cpu_colsum_add(float *acc, const float *x, int M, int n, size_t ld) {
    int blocks = (n + COLSUM_BLOCK - 1) / COLSUM_BLOCK;
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        int c0 = blk * COLSUM_BLOCK, w = n - c0 < COLSUM_BLOCK ? n - c0 : COLSUM_BLOCK;
        double sum[COLSUM_BLOCK] = {0};
        for (int r = 0; r < M; r++) {
            const float *row = x + (size_t)r * ld + c0;
            for (int c = 0; c < w; c++) sum[c] += row[c];
        }
        for (int c = 0; c < w; c++) acc[c0 + c] += (float)sum[c];
    }
}

enum { SUMSQ_CHUNK = 1 << 16 };

/* Fixed chunks summed in double, then the chunk sums in order: the same result for
 * any thread count. */
void cpu_sum_squares(mlm_backend *be, float *out, const float *g, size_t n) {
    size_t chunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double *part = (double *)cpu_scratch(be, 2 * chunks);         // (chunks)
    #pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        size_t lo = c * SUMSQ_CHUNK, hi = lo + SUMSQ_CHUNK < n ? lo + SUMSQ_CHUNK : n;
        double s = 0;
        #pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
        part[c] = s;
    }
    double total = 0;
    for (size_t c = 0; c < chunks; c++) total += part[c];
    out[0] = (float)total;
}
