/*
 * Device helpers every kernel file shares: bf16, 16-byte bf16/fp32 vector loads and
 * stores, warp and block sums. Nothing here needs the CUDA runtime, so tests/emu
 * compiles it on the CPU too (MLM_EMULATE, with tests/emu/emu.h standing in for
 * the CUDA types and intrinsics).
 */
#ifndef MLM_KERNELS_DEVICE_CUH
#define MLM_KERNELS_DEVICE_CUH

#ifndef MLM_EMULATE
#include <cuda_bf16.h>
#endif
#include <stddef.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

/* The 8 bf16 of raw (16 bytes) as floats. */
__device__ __forceinline__ void unpack8(float v[8], uint4 raw) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h[k]);
        v[2 * k] = f.x;
        v[2 * k + 1] = f.y;
    }
}

/* v[k] = p[k] for k < n (n <= 8), 0 beyond: one 16-byte load when n == 8 and p is
 * 16-byte aligned, element loads otherwise. */
__device__ __forceinline__ void load8(float v[8], const bf16 *p, int n) {
    if (n == 8 && ((uintptr_t)p & 15) == 0) {
        unpack8(v, *reinterpret_cast<const uint4 *>(p));
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = k < n ? __bfloat162float(p[k]) : 0.0f;
    }
}

__device__ __forceinline__ void load8(float v[8], const float *p, int n) {
    if (n == 8 && ((uintptr_t)p & 15) == 0) {
        float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = k < n ? p[k] : 0.0f;
    }
}

/* p[k] = v[k] for k < n, rounded to nearest even; vector store as load8. */
__device__ __forceinline__ void store8(bf16 *p, const float v[8], int n) {
    if (n == 8 && ((uintptr_t)p & 15) == 0) {
        uint4 raw;
        __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&raw);
#pragma unroll
        for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
        *reinterpret_cast<uint4 *>(p) = raw;
    } else {
        for (int k = 0; k < n; k++) p[k] = __float2bfloat16(v[k]);
    }
}

__device__ __forceinline__ void store8(float *p, const float v[8], int n) {
    if (n == 8 && ((uintptr_t)p & 15) == 0) {
        reinterpret_cast<float4 *>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4 *>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
        for (int k = 0; k < n; k++) p[k] = v[k];
    }
}

/* Elements left for a thread whose 8-element run starts at i, of n. */
__device__ __forceinline__ int run8(size_t i, size_t n) { return i >= n ? 0 : n - i < 8 ? (int)(n - i) : 8; }

template <class T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum of v over the block (blockDim.x a multiple of 32), returned to every
 * thread. The tree is fixed, so the result is the same on every run. shared
 * holds 32 Ts. */
template <class T> __device__ __forceinline__ T block_sum(T v, T *shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();   // a previous call may still be reading shared
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? shared[lane] : T(0);
    return warp_sum(v);
}

#endif
