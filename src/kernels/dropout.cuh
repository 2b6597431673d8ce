/*
 * Dropout inside the fused kernels (twin: src/host/cpu/dropout.c), by cuRAND's
 * Philox4x32-10 with the counter layout of include/mlm/philox.h: element e of
 * sequence g at step t, site s is kept when curand_Philox4x32_10(ctr = {e/4, s, g,
 * t}, key = seed)[e % 4] >= threshold, then scaled by 1/(1-p). One Philox call serves
 * four consecutive elements, so the masks equal the CPU backend's bit for bit and are
 * recomputed in the backward instead of stored.
 */
#ifndef MLM_KERNELS_DROPOUT_CUH
#define MLM_KERNELS_DROPOUT_CUH

#ifndef MLM_EMULATE
#include <curand_philox4x32_x.h>
#endif

#include "device.cuh"
extern "C" {
#include "mlm/backend.h"
}

/* The dropout a kernel takes by value: drop, or off (threshold 0) for NULL. */
static inline mlm_dropout dropout_arg(const mlm_dropout *drop) {
    mlm_dropout off = {0, 1.0f, 0, 0, 0, 0, NULL};
    return drop ? *drop : off;
}

/* A kernel's dropout with step and seq_base resolved: read from drop.live (device
 * memory, written before the micro-batch) when set. Kernels call it once on entry
 * and use the result, so a recorded graph serves every micro-batch. */
__device__ __forceinline__ mlm_dropout dropout_live(const mlm_dropout &drop) {
    mlm_dropout d = drop;
    if (d.live && d.threshold) {
        d.step = d.live->step;
        d.seq_base = d.live->seq_base;
    }
    return d;
}

/* The four words of elements 4 group .. 4 group + 3 of sequence seq. */
__device__ __forceinline__ uint4 dropout_words(const mlm_dropout &d, uint32_t seq, uint32_t group) {
    return curand_Philox4x32_10(make_uint4(group, d.site, seq, d.step),
                                make_uint2((uint32_t)d.seed, (uint32_t)(d.seed >> 32)));
}

/* The factor an element with this word is multiplied by: scale, or 0 if dropped. */
__device__ __forceinline__ float dropout_factor(const mlm_dropout &d, uint32_t word) {
    return word >= d.threshold ? d.scale : 0.0f;
}

/* v[k] *= factor of element e0 + k of sequence seq, e0 % 4 == 0. No-op when off. */
__device__ __forceinline__ void dropout8(float v[8], const mlm_dropout &d, uint32_t seq, uint32_t e0) {
    if (!d.threshold) return;
    uint4 a = dropout_words(d, seq, e0 >> 2), b = dropout_words(d, seq, (e0 >> 2) + 1);
    uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] *= dropout_factor(d, w[k]);
}

#endif
