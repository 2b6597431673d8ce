/*
 * A CPU stand-in for the CUDA device, enough to run the flash-attention kernels
 * (src/kernels/flash_kernels.cuh) unchanged: one OS thread per CUDA thread,
 * __syncthreads and __syncwarp as barriers, shuffles through a per-warp exchange,
 * and the PTX of flash_ptx.cuh emulated to the PTX ISA's layouts: ldmatrix (with
 * .trans), mma.sync m16n8k16 (bf16 in, fp32 accumulate) and cp.async, whose copy
 * lands only at wait_group while the destination holds garbage from the issue on,
 * so a tile read too early or overwritten while in use gives wrong numbers.
 * Shared memory is an exact-size heap block at a 16-byte (not 256-byte) shared
 * address, and every shared access is bounds-checked; ldmatrix bank conflicts are
 * counted. Include this, then the kernel header. Compile with -std=c++20
 * -fno-strict-aliasing (the kernels type-pun bf16 pairs as CUDA code does).
 */
#ifndef MLM_TESTS_EMU_H
#define MLM_TESTS_EMU_H

#define MLM_EMULATE 1

#include <algorithm>
#include <atomic>
#include <barrier>
#include <thread>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" {
#include "mlm/backend.h"
#include "mlm/philox.h"
}

using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(x)

#define EMU_CHECK(c, ...)                                                                          \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "emulated device: %s:%d: ", __FILE__, __LINE__);                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---- CUDA types and intrinsics ---- */

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3() {}
    dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

struct uint4 { uint32_t x, y, z, w; };
struct uint2 { uint32_t x, y; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }
inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }
inline float2 make_float2(float a, float b) { return {a, b}; }

struct __nv_bfloat16 { uint16_t u; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
inline __nv_bfloat16 __float2bfloat16(float f) {   // round to nearest even; NaN stays NaN
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((b >> 16) | 0x40)};
    return __nv_bfloat16{(uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t b = (uint32_t)h.u << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }

inline uint4 curand_Philox4x32_10(uint4 c, uint2 k) {
    mlm_u32x4 r = mlm_philox(c.x, c.y, c.z, c.w, (uint64_t)k.x | ((uint64_t)k.y << 32));
    return {r.v[0], r.v[1], r.v[2], r.v[3]};
}

/* ---- blocks and warps ---- */

struct emu_warp {
    std::barrier<> *bar;
    uint64_t xch[32][8];   // per-lane exchange slots
};
struct emu_block {
    std::barrier<> *bar;
    unsigned char *smem;   // the dynamic shared memory, exact size
    size_t smem_size;
    uintptr_t shared_base; // the shared address of smem[0]
    std::vector<emu_warp> warps;
    std::atomic<long> ldsm_conflicts{0}, ldsm_phases{0};
};
extern emu_block *emu_blk;   // the block being run

struct emu_copy { unsigned char *dst; const unsigned char *src; int n; };
extern thread_local std::vector<std::vector<emu_copy>> emu_groups;   // committed cp.async groups, oldest first
extern thread_local std::vector<emu_copy> emu_pending;               // issued, not committed

inline int emu_lane() { return threadIdx.x & 31; }
inline emu_warp &emu_w() { return emu_blk->warps[threadIdx.x >> 5]; }
inline void __syncthreads() { emu_blk->bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_w().bar->arrive_and_wait(); }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int offset) {
    emu_warp &w = emu_w();
    uint64_t x = 0;
    memcpy(&x, &v, sizeof(T));
    w.xch[emu_lane()][0] = x;
    w.bar->arrive_and_wait();
    uint64_t y = w.xch[emu_lane() ^ offset][0];
    w.bar->arrive_and_wait();
    T r;
    memcpy(&r, &y, sizeof(T));
    return r;
}

#include "device.cuh"   // now with the stand-ins above

/* ---- the PTX of flash_ptx.cuh ---- */

#define FLASH_DYNAMIC_SMEM(name) unsigned char *name = emu_blk->smem

inline uint32_t smem_addr(const void *p) {
    const unsigned char *c = (const unsigned char *)p;
    EMU_CHECK(c >= emu_blk->smem && c <= emu_blk->smem + emu_blk->smem_size, "generic address outside shared memory");
    return (uint32_t)(emu_blk->shared_base + (c - emu_blk->smem));
}

inline unsigned char *emu_shared(uint32_t a, int bytes) {
    EMU_CHECK(a >= emu_blk->shared_base && a + bytes <= emu_blk->shared_base + emu_blk->smem_size,
              "shared address %u (+%d) outside the %zu bytes of the block", a, bytes, emu_blk->smem_size);
    return emu_blk->smem + (a - emu_blk->shared_base);
}

/* Lane l gives the row address of row l % 8 of matrix l / 8 and receives (row l / 4,
 * columns 2 (l % 4), +1) of each matrix, or the transposed element pair. */
inline void emu_ldmatrix(uint32_t r[4], uint32_t addr, bool trans) {
    emu_warp &w = emu_w();
    int l = emu_lane();
    EMU_CHECK((addr & 15) == 0, "ldmatrix row address %u not 16-byte aligned", addr);
    w.xch[l][1] = addr;
    w.bar->arrive_and_wait();
    if (l == 0)   // bank conflicts: each 8 x 16-byte matrix is one phase
        for (int m = 0; m < 4; m++) {
            int used[8] = {0}, extra = 0;
            for (int i = 0; i < 8; i++) extra += used[(w.xch[8 * m + i][1] >> 4) & 7]++ > 0;
            emu_blk->ldsm_conflicts += extra;
            emu_blk->ldsm_phases += 1;
        }
    for (int m = 0; m < 4; m++) {
        uint16_t lo, hi;
        if (!trans) {
            uint32_t row = (uint32_t)w.xch[8 * m + l / 4][1];
            memcpy(&lo, emu_shared(row + 4 * (l % 4), 2), 2);
            memcpy(&hi, emu_shared(row + 4 * (l % 4) + 2, 2), 2);
        } else {
            uint32_t r0 = (uint32_t)w.xch[8 * m + 2 * (l % 4)][1], r1 = (uint32_t)w.xch[8 * m + 2 * (l % 4) + 1][1];
            memcpy(&lo, emu_shared(r0 + 2 * (l / 4), 2), 2);
            memcpy(&hi, emu_shared(r1 + 2 * (l / 4), 2), 2);
        }
        r[m] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    w.bar->arrive_and_wait();
}
inline void ldsm_x4(uint32_t r[4], uint32_t addr) { emu_ldmatrix(r, addr, false); }
inline void ldsm_x4_t(uint32_t r[4], uint32_t addr) { emu_ldmatrix(r, addr, true); }

inline float emu_lo(uint32_t x) { return __bfloat162float(__nv_bfloat16{(uint16_t)(x & 0xffff)}); }
inline float emu_hi(uint32_t x) { return __bfloat162float(__nv_bfloat16{(uint16_t)(x >> 16)}); }

/* c (16 x 8, fp32) += a (16 x 16) b (16 x 8), bf16, in the PTX fragment layouts:
 * lane l = 4 g + t holds a rows g, g + 8 at columns 2t, 2t+1 (+8), b rows 2t, 2t+1
 * (+8) at column g, and c rows g, g + 8 at columns 2t, 2t+1. */
inline void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    emu_warp &w = emu_w();
    int l = emu_lane();
    for (int i = 0; i < 4; i++) w.xch[l][2 + i] = a[i];
    w.xch[l][6] = b0;
    w.xch[l][7] = b1;
    w.bar->arrive_and_wait();
    float A[16][16], Bm[16][8];
    for (int ln = 0; ln < 32; ln++) {
        int g = ln >> 2, t = ln & 3;
        uint32_t a0 = (uint32_t)w.xch[ln][2], a1 = (uint32_t)w.xch[ln][3], a2 = (uint32_t)w.xch[ln][4],
                 a3 = (uint32_t)w.xch[ln][5], x0 = (uint32_t)w.xch[ln][6], x1 = (uint32_t)w.xch[ln][7];
        A[g][2 * t] = emu_lo(a0), A[g][2 * t + 1] = emu_hi(a0);
        A[g + 8][2 * t] = emu_lo(a1), A[g + 8][2 * t + 1] = emu_hi(a1);
        A[g][2 * t + 8] = emu_lo(a2), A[g][2 * t + 9] = emu_hi(a2);
        A[g + 8][2 * t + 8] = emu_lo(a3), A[g + 8][2 * t + 9] = emu_hi(a3);
        Bm[2 * t][g] = emu_lo(x0), Bm[2 * t + 1][g] = emu_hi(x0);
        Bm[2 * t + 8][g] = emu_lo(x1), Bm[2 * t + 9][g] = emu_hi(x1);
    }
    w.bar->arrive_and_wait();
    int g = l >> 2, t = l & 3, rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; e++) {
        float s = c[e];
        for (int k = 0; k < 16; k++) s += A[rows[e]][k] * Bm[k][cols[e]];
        c[e] = s;
    }
}

/* cp.async: the destination holds garbage from the issue; the data lands at the
 * latest legal moment, wait_group. */
inline void cp_async16(bf16 *dst, const bf16 *src, bool valid) {
    EMU_CHECK(!valid || ((uintptr_t)src & 15) == 0, "cp.async global source not 16-byte aligned");
    uint32_t sa = smem_addr(dst);
    EMU_CHECK((sa & 15) == 0, "cp.async shared destination not 16-byte aligned");
    memset(emu_shared(sa, 16), 0xAB, 16);
    emu_pending.push_back({(unsigned char *)dst, (const unsigned char *)src, valid ? 16 : 0});
}
inline void cp_async_commit() {
    emu_groups.push_back(emu_pending);
    emu_pending.clear();
}
template <int N> inline void cp_async_wait() {
    while ((int)emu_groups.size() > N) {
        for (auto &c : emu_groups.front()) {
            unsigned char bytes[16] = {0};
            if (c.n) memcpy(bytes, c.src, 16);
            memcpy(c.dst, bytes, 16);
        }
        emu_groups.erase(emu_groups.begin());
    }
}

/* Runs kern(p) on a grid of blocks of `threads` emulated threads, block after
 * block, each with `smem` bytes of shared memory that start as garbage at shared
 * address 16; returns the ldmatrix bank conflicts (extra wavefronts) and adds the
 * phases to *phases. Needs the globals declared above (EMU_GLOBALS defines them). */
template <class P> long emu_launch(void (*kern)(P), dim3 grid, int threads, size_t smem, const P &p, long *phases) {
    gridDim = grid;
    blockDim = dim3(threads);
    long conflicts = 0;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                emu_block blk;
                std::barrier<> bar(threads);
                blk.bar = &bar;
                blk.smem = (unsigned char *)malloc(smem);
                memset(blk.smem, 0xff, smem);   // bf16 0xffff: NaN
                blk.smem_size = smem;
                blk.shared_base = 16;
                blk.warps.resize(threads / 32);
                for (auto &w : blk.warps) w.bar = new std::barrier<>(32);
                emu_blk = &blk;
                std::vector<std::thread> th;
                for (int t = 0; t < threads; t++)
                    th.emplace_back([=, &p] {
                        threadIdx = dim3(t);
                        blockIdx = dim3(x, y, z);
                        kern(p);
                    });
                for (auto &t : th) t.join();
                for (auto &w : blk.warps) delete w.bar;
                conflicts += blk.ldsm_conflicts;
                *phases += blk.ldsm_phases;
                free(blk.smem);
            }
    return conflicts;
}

#define EMU_GLOBALS                                                                                \
    thread_local dim3 threadIdx, blockIdx;                                                         \
    dim3 blockDim, gridDim;                                                                        \
    emu_block *emu_blk;                                                                            \
    thread_local std::vector<std::vector<emu_copy>> emu_groups;                                    \
    thread_local std::vector<emu_copy> emu_pending;

#endif
