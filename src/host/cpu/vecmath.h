/*
 * Branch-free fp32 exp and GELU for the CPU backend's elementwise loops (softmax,
 * cross-entropy, GELU forward and backward). libm's expf/erff are scalar calls that
 * stop GCC from vectorizing a loop; these inline to straight-line float arithmetic
 * that it vectorizes, and the row functions that use them are compiled for AVX2
 * too (CPU_VECTOR_CLONES). Accuracy is checked against double libm in the tests.
 * The CUDA kernels use the device's own expf/erff (src/kernels/linear.cu, mlm_head.cu).
 */
#ifndef MLM_CPU_VECMATH_H
#define MLM_CPU_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Compile a function for AVX2 and for baseline x86-64, picked at load time. Without
 * FMA contraction (ISO C mode) both give bitwise the same results. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CPU_VECTOR_CLONES
#endif

/* c ? a : b through integer masks. A float select whose arms compute becomes a
 * branch under -ftrapping-math (the arm might trap), which stops vectorization. */
static inline float cpu_select(int c, float a, float b) {
    uint32_t ia, ib, mask = c ? ~0u : 0u;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    uint32_t bits = (ia & mask) | (ib & ~mask);
    float r;
    memcpy(&r, &bits, sizeof r);
    return r;
}

/* e^x within ~1 ulp for x in [-87, 88]: Cephes expf's reduction x = n ln2 + r and
 * polynomial on |r| <= ln2/2; 0 below -87 (where fp32 turns subnormal). */
static inline float cpu_expf(float x) {
    float n = (x * 1.44269504089f + 12582912.0f) - 12582912.0f;     // round(x / ln2)
    float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;         // ln2 in two parts
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = (int32_t)n;
    e = e < -126 ? -126 : e > 127 ? 127 : e;
    uint32_t scale_bits = (uint32_t)(e + 127) << 23;                // 2^n
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return cpu_select(x < -87.0f, 0.0f, p * scale);
}

/* Standard normal cdf Phi(x) = (1 + erf(x/sqrt2)) / 2 and density phi(x), relative
 * error ~1e-6. With u = x/sqrt2, a = |u|: erf(u) = u P(u^2) for a < 1 (least-squares
 * fit, 1.6e-7); erfc(a) = exp(-a^2) Q(1/a) / a beyond (fit on [1, 12], 3.5e-7). */
static inline float cpu_normal_cdf(float x, float *pdf) {
    float u = x * 0.70710678118654752f, a = fabsf(u), s = u * u;
    float e = cpu_expf(-s);                                          // exp(-x^2/2)
    *pdf = e * 0.39894228040143268f;                                 // / sqrt(2 pi)
    float p = -5.632020355e-04f;
    p = p * s + 4.917716984e-03f;
    p = p * s - 2.671147810e-02f;
    p = p * s + 1.128018747e-01f;
    p = p * s - 3.761232751e-01f;
    p = p * s + 1.128379123e+00f;
    float t = 1.0f / cpu_select(a < 1.0f, 1.0f, a);
    float q = -1.623748414e-02f;
    q = q * t + 1.606478588e-01f;
    q = q * t - 6.097407368e-01f;
    q = q * t + 1.228092107e+00f;
    q = q * t - 1.436974358e+00f;
    q = q * t + 9.064871629e-01f;
    q = q * t - 9.781720736e-02f;
    q = q * t - 2.703162714e-01f;
    q = q * t - 7.675976518e-04f;
    q = q * t + 5.642101540e-01f;
    float half_erfc = 0.5f * e * t * q;                              // erfc(a) / 2
    float tail = cpu_select(u > 0.0f, 1.0f - half_erfc, half_erfc);
    return cpu_select(a < 1.0f, 0.5f + 0.5f * (u * p), tail);
}
/* Exact-erf GELU x Phi(x), as torch.nn.functional.gelu(approximate="none"). */
static inline float cpu_gelu(float x) {
    float pdf;
    return x * cpu_normal_cdf(x, &pdf);
}

/* d GELU / dx = Phi(x) + x phi(x). */
static inline float cpu_gelu_grad(float x) {
    float pdf, cdf = cpu_normal_cdf(x, &pdf);
    return cdf + x * pdf;
}

#endif
