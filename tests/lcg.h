/*
 * The deterministic generator of the tests and benchmarks: a 64-bit linear
 * congruential generator (Knuth's MMIX constants), its top 31 bits as the output;
 * and the bf16 rounding their inputs go through.
 * Each user keeps its own state and seeds, so that its inputs are the same on every
 * run.
 */
#ifndef MLM_TESTS_LCG_H
#define MLM_TESTS_LCG_H

#include <stdint.h>

static inline uint32_t lcg_next(uint64_t *state) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*state >> 33);
}

/* Uniform in [-1, 0): 31 bits over 2^31, less 1. Every test input is made from it
 * this way (center + spread * lcg_uniform); a spread of 2 about 1 gives [-1, 1). */
static inline float lcg_uniform(uint64_t *state) { return (float)lcg_next(state) / 2147483648.0f - 1.0f; }

/* x rounded to the nearest bf16, ties to even: inputs the CUDA backend's bf16
 * tensors hold exactly. */
static inline float bf16r(float x) {
    union { float f; uint32_t u; } v = {x};
    v.u = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) & 0xffff0000u;
    return v.f;
}

#endif
