/*
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"),
 * the counter-based generator behind all randomness in mlmgpu: masking and dropout
 * are pure functions of (seed, step, global sequence index, site, element), so they
 * are reproducible, resumable, and independent of micro-batching and world size.
 * This is the same function as cuRAND's curand_Philox4x32_10; the CUDA kernels call
 * that one and the GPU tests check the two agree.
 */
#ifndef MLM_PHILOX_H
#define MLM_PHILOX_H

#include <stdint.h>

#ifdef __CUDACC__
#define MLM_HD __host__ __device__ __forceinline__
#else
#define MLM_HD static inline
#endif

typedef struct { uint32_t v[4]; } mlm_u32x4;

MLM_HD uint32_t mlm_mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* ctr = {c0, c1, c2, c3}, key = seed. */
MLM_HD mlm_u32x4 mlm_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed) {
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mlm_mulhilo(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = mlm_mulhilo(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    mlm_u32x4 out = {{c0, c1, c2, c3}};
    return out;
}

/* The 32-bit random word for element e of (site, seq, step). */
MLM_HD uint32_t mlm_philox_word(uint64_t seed, uint32_t step, uint32_t seq, uint32_t site, uint32_t e) {
    return mlm_philox(e >> 2, site, seq, step, seed).v[e & 3];
}

/* Uniform in [0, 1) with 24 bits, exact in float. */
MLM_HD float mlm_u01(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

#endif
