/*
 * Philox dropout for the CPU backend (twin: src/kernels/dropout.cuh). Element e of
 * sequence g at step t, site s is kept when philox(ctr = {e/4, s, g, t}, key =
 * seed)[e%4] >= threshold (philox.h), and then scaled. The random words come eight
 * Philox blocks (32 words) per step from an AVX2 path when the CPU has it, else from
 * the scalar mlm_philox; both give the same words. The mask is applied in a loop GCC
 * vectorizes.
 */
#include "mlm/philox.h"
#include "common.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CPU_HAVE_AVX2_PATH 1
#endif

/* out[4k + i] = philox({g0 + k, c1, c2, c3}, seed).v[i] for k < n. */
static void philox_blocks_scalar(uint32_t *out, uint32_t g0, int n, uint32_t c1, uint32_t c2,
                                 uint32_t c3, uint64_t seed) {
    for (int k = 0; k < n; k++) {
        mlm_u32x4 r = mlm_philox(g0 + (uint32_t)k, c1, c2, c3, seed);
        for (int i = 0; i < 4; i++) out[4 * k + i] = r.v[i];
    }
}

#ifdef CPU_HAVE_AVX2_PATH
/* lo and hi halves of a * m for eight 32-bit lanes (m broadcast). */
__attribute__((target("avx2"))) static inline __m256i mulhilo8(__m256i a, __m256i m, __m256i *hi) {
    __m256i even = _mm256_mul_epu32(a, m);                        // lanes 0, 2, 4, 6
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/* philox_blocks_scalar with blocks k..k+7 in the eight lanes. */
__attribute__((target("avx2"))) static void philox_blocks_avx2(uint32_t *out, uint32_t g0, int n,
                                                               uint32_t c1, uint32_t c2,
                                                               uint32_t c3, uint64_t seed) {
    const __m256i m0 = _mm256_set1_epi32((int)0xD2511F53u), m1 = _mm256_set1_epi32((int)0xCD9E8D57u);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256i x0 = _mm256_add_epi32(_mm256_set1_epi32((int)(g0 + (uint32_t)k)),
                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256i x1 = _mm256_set1_epi32((int)c1), x2 = _mm256_set1_epi32((int)c2);
        __m256i x3 = _mm256_set1_epi32((int)c3);
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        for (int r = 0; r < 10; r++) {
            __m256i hi0, hi1, lo0 = mulhilo8(x0, m0, &hi0), lo1 = mulhilo8(x2, m1, &hi1);
            x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32((int)k0));
            x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32((int)k1));
            x1 = lo1;
            x3 = lo0;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        // transpose the 4 x 8 words to block order: block j is x0[j] x1[j] x2[j] x3[j]
        __m256i t0 = _mm256_unpacklo_epi32(x0, x1), t1 = _mm256_unpackhi_epi32(x0, x1);
        __m256i t2 = _mm256_unpacklo_epi32(x2, x3), t3 = _mm256_unpackhi_epi32(x2, x3);
        __m256i b04 = _mm256_unpacklo_epi64(t0, t2), b15 = _mm256_unpackhi_epi64(t0, t2);
        __m256i b26 = _mm256_unpacklo_epi64(t1, t3), b37 = _mm256_unpackhi_epi64(t1, t3);
        __m256i *o = (__m256i *)(out + 4 * k);
        _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(b04, b15, 0x20));
        _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(b26, b37, 0x20));
        _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(b04, b15, 0x31));
        _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(b26, b37, 0x31));
    }
    philox_blocks_scalar(out + 4 * k, g0 + (uint32_t)k, n - k, c1, c2, c3, seed);
}
#endif

static void philox_blocks(uint32_t *out, uint32_t g0, int n, uint32_t c1, uint32_t c2,
                          uint32_t c3, uint64_t seed) {
#ifdef CPU_HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2")) {
        philox_blocks_avx2(out, g0, n, c1, c2, c3, seed);
        return;
    }
#endif
    philox_blocks_scalar(out, g0, n, c1, c2, c3, seed);
}

enum { DROP_CHUNK = 1024 };   // elements per pass, words on the stack

void cpu_dropout_apply(const mlm_dropout *drop, int b, uint32_t e0, float *x, int n) {
    uint32_t words[DROP_CHUNK + 8];
    uint32_t step = drop->live ? drop->live->step : drop->step;   // live: backend (= host) memory
    uint32_t seq = (drop->live ? drop->live->seq_base : drop->seq_base) + (uint32_t)b, threshold = drop->threshold;
    float scale = drop->scale;
    for (int done = 0; done < n;) {
        uint32_t e = e0 + (uint32_t)done, skip = e & 3;      // words before e in its block
        int m = n - done < DROP_CHUNK ? n - done : DROP_CHUNK;
        philox_blocks(words, e >> 2, (int)((skip + (uint32_t)m + 3) / 4), drop->site, seq, step,
                      drop->seed);
        float *xs = x + done;
        const uint32_t *w = words + skip;
        for (int k = 0; k < m; k++) xs[k] *= w[k] >= threshold ? scale : 0.0f;
        done += m;
    }
}
