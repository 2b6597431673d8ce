/*
 * A CPU stand-in for the CUDA device: enough to run the kernels of src/kernels
 * unchanged. Every CUDA thread of a block is a fiber (its own stack, switched by
 * emu_runtime.cpp) on one OS thread. __syncthreads and __syncwarp are barriers at
 * which a fiber yields until the whole block (warp) has arrived; warp-wide
 * operations (shuffles, ldmatrix, mma) are done for all lanes by the last lane to
 * arrive. The threads of a block (warp) must all reach the same barrier (the same
 * source line), and a barrier that can never complete (some threads exited, or
 * wait elsewhere) aborts naming the kernel and block. __shared__ variables are
 * thread_local statics (one block runs at a time on an OS thread; they are not
 * reset between blocks). Threads and blocks run round robin from thread 0 and
 * block 0; EMU_SCHEDULE=reverse or random changes the order, which no result may
 * depend on.
 *
 * The PTX of flash_ptx.cuh is emulated to the PTX ISA's layouts: ldmatrix (with
 * .trans), mma.sync m16n8k16 (bf16 in, fp32 accumulate) and cp.async, whose copy
 * lands only at wait_group while the destination holds garbage from the issue on,
 * so a tile read too early or overwritten while in use gives wrong numbers.
 * Dynamic shared memory is an exact-size heap block at a 16-byte (not 256-byte)
 * shared address, poisoned with 0xff (bf16 and fp32 NaN) for every block, and
 * every access through the PTX functions is bounds-checked; ldmatrix bank
 * conflicts are counted.
 *
 * Include this, then a kernel header (tests/emu/test_flash_emu.cpp), or compile
 * whole CUDA sources through fake_cuda.h (the CUDA runtime, cuBLASLt and CUB
 * shims). Compile with -std=c++20 -fno-strict-aliasing (the kernels type-pun bf16
 * pairs as CUDA code does) and link emu_runtime.cpp.
 */
#ifndef MLM_TESTS_EMU_H
#define MLM_TESTS_EMU_H

#define MLM_EMULATE 1

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <source_location>
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
#define __shared__ static thread_local   // per OS thread = per block being run

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
    constexpr dim3() {}
    constexpr dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern thread_local constinit dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

struct uint4 { uint32_t x, y, z, w; };
struct uint2 { uint32_t x, y; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }
inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }
inline float2 make_float2(float a, float b) { return {a, b}; }

inline float emu_bits_float(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}
struct __nv_bfloat16 {
    uint16_t u;
    operator float() const { return emu_bits_float((uint32_t)u << 16); }   // as cuda_bf16.h
};
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
inline __nv_bfloat16 __float2bfloat16(float f) {   // round to nearest even; NaN stays NaN
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((b >> 16) | 0x40)};
    return __nv_bfloat16{(uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return emu_bits_float((uint32_t)h.u << 16); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }

/* IEEE round-to-nearest single operations: what the CPU does anyway (no FMA
 * contraction under -std=c++20). */
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }

inline uint4 curand_Philox4x32_10(uint4 c, uint2 k) {
    mlm_u32x4 r = mlm_philox(c.x, c.y, c.z, c.w, (uint64_t)k.x | ((uint64_t)k.y << 32));
    return {r.v[0], r.v[1], r.v[2], r.v[3]};
}

/* ---- blocks, warps and their barriers (emu_runtime.cpp) ---- */

struct emu_barrier {
    int expected = 0, arrived = 0;
    unsigned gen = 0;
};
/* Arrives at b. The last thread to arrive returns true at once, and must call
 * emu_barrier_release(b) when it has done the work of the whole group; the others
 * return false after that. */
bool emu_barrier_arrive(emu_barrier &b);
inline void emu_barrier_release(emu_barrier &b) {
    b.arrived = 0;
    b.gen++;
}

/* Where a thread reached a barrier: threads of a group must all reach the same one. */
struct emu_site {
    const char *file;
    unsigned line;
    bool operator!=(const emu_site &o) const { return line != o.line || (file != o.file && strcmp(file, o.file) != 0); }
};
#define EMU_SITE std::source_location loc = std::source_location::current()
#define EMU_HERE emu_site{loc.file_name(), (unsigned)loc.line()}

struct emu_warp {
    emu_barrier bar;
    uint64_t xch[32][8];   // per-lane operands
    void *out[32];         // where each lane's result goes
    emu_site site[32];
};
struct emu_block {
    emu_barrier bar;
    std::vector<emu_site> site;   // per thread, at __syncthreads
    unsigned char *smem;          // the dynamic shared memory, exact size
    size_t smem_size;
    uintptr_t shared_base;        // the shared address of smem[0]
    std::vector<emu_warp> warps;
    long ldsm_conflicts = 0, ldsm_phases = 0;
};
struct emu_copy { unsigned char *dst; const unsigned char *src; int n; };
struct emu_thread_state {                          // one emulated thread's own state
    std::vector<std::vector<emu_copy>> groups;     // committed cp.async groups, oldest first
    std::vector<emu_copy> pending;                 // issued, not committed
};
extern thread_local constinit emu_block *emu_blk;            // the block being run on this OS thread
extern thread_local constinit unsigned emu_tid;              // the running thread's linear index in it
extern thread_local constinit emu_thread_state *emu_self;    // and its state

/* Aborts when the threads of a group reached different barriers (divergent code). */
void emu_sites_differ(const char *what, const emu_site *site, int n);
inline void emu_check_sites(const char *what, const emu_site *site, int n) {
    for (int i = 1; i < n; i++)
        if (site[i] != site[0]) emu_sites_differ(what, site, n);
}

inline int emu_lane() { return emu_tid & 31; }
inline emu_warp &emu_w() { return emu_blk->warps[emu_tid >> 5]; }

inline void __syncthreads(EMU_SITE) {
    emu_block &b = *emu_blk;
    b.site[emu_tid] = EMU_HERE;
    if (emu_barrier_arrive(b.bar)) {
        emu_check_sites("__syncthreads", b.site.data(), b.bar.expected);
        emu_barrier_release(b.bar);
    }
}

/* A warp-wide operation: every lane leaves its operands in w.xch[lane] and a
 * result pointer in w.out[lane]; the last lane to arrive runs all(w, n) for the n
 * lanes of the warp, then the lanes go on. */
template <class F> inline void emu_warp_op(const char *what, emu_site site, F all) {
    emu_warp &w = emu_w();
    w.site[emu_lane()] = site;
    if (emu_barrier_arrive(w.bar)) {
        emu_check_sites(what, w.site, w.bar.expected);
        all(w, w.bar.expected);
        emu_barrier_release(w.bar);
    }
}

inline void __syncwarp(unsigned mask = 0xffffffffu, EMU_SITE) {
    EMU_CHECK(mask == 0xffffffffu, "__syncwarp with a partial mask is not emulated");
    emu_warp_op("__syncwarp", EMU_HERE, [](emu_warp &, int) {});
}

template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int offset, EMU_SITE) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    EMU_CHECK(mask == 0xffffffffu, "__shfl_xor_sync with a partial mask is not emulated");
    emu_warp &w = emu_w();
    int l = emu_lane();
    uint64_t x = 0, y = 0;
    memcpy(&x, &v, sizeof(T));
    w.xch[l][0] = x;
    w.xch[l][1] = (uint64_t)(uint32_t)offset;
    w.out[l] = &y;
    emu_warp_op("__shfl_xor_sync", EMU_HERE, [](emu_warp &w, int n) {
        for (int i = 0; i < n; i++) {
            int src = i ^ (int)(w.xch[i][1] & 31);
            EMU_CHECK(src < n, "__shfl_xor_sync from lane %d beyond the warp's %d threads", src, n);
            *(uint64_t *)w.out[i] = w.xch[src][0];
        }
    });
    T r;
    memcpy(&r, &y, sizeof(T));
    return r;
}

/* Runs fn(ctx) as every thread of every block of the grid, block after block,
 * each block with `smem` bytes of dynamic shared memory (0xff garbage) at shared
 * address 16. name names the kernel in error messages. Adds the ldmatrix bank
 * conflicts and phases to *conflicts and *phases when given. */
void emu_run_grid(const char *name, dim3 grid, dim3 block, size_t smem, void (*fn)(void *), void *ctx,
                  long *conflicts = nullptr, long *phases = nullptr);

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
inline void emu_ldmatrix(uint32_t r[4], uint32_t addr, bool trans, emu_site site) {
    emu_warp &w = emu_w();
    int l = emu_lane();
    EMU_CHECK((addr & 15) == 0, "ldmatrix row address %u not 16-byte aligned", addr);
    w.xch[l][1] = addr;
    w.xch[l][2] = trans;
    w.out[l] = r;
    emu_warp_op("ldmatrix", site, [](emu_warp &w, int n) {
        EMU_CHECK(n == 32, "ldmatrix in a warp of %d threads", n);
        for (int m = 0; m < 4; m++) {   // bank conflicts: each 8 x 16-byte matrix is one phase
            int used[8] = {0}, extra = 0;
            for (int i = 0; i < 8; i++) extra += used[(w.xch[8 * m + i][1] >> 4) & 7]++ > 0;
            emu_blk->ldsm_conflicts += extra;
            emu_blk->ldsm_phases += 1;
        }
        for (int l = 0; l < 32; l++) {
            EMU_CHECK(w.xch[l][2] == w.xch[0][2], "ldmatrix with and without .trans in one warp");
            uint32_t *r = (uint32_t *)w.out[l];
            for (int m = 0; m < 4; m++) {
                uint16_t lo, hi;
                if (!w.xch[l][2]) {
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
        }
    });
}
inline void ldsm_x4(uint32_t r[4], uint32_t addr, EMU_SITE) { emu_ldmatrix(r, addr, false, EMU_HERE); }
inline void ldsm_x4_t(uint32_t r[4], uint32_t addr, EMU_SITE) { emu_ldmatrix(r, addr, true, EMU_HERE); }

inline float emu_lo(uint64_t x) { return emu_bits_float((uint32_t)x << 16); }
inline float emu_hi(uint64_t x) { return emu_bits_float((uint32_t)x & 0xffff0000u); }

/* c (16 x 8, fp32) += a (16 x 16) b (16 x 8), bf16, in the PTX fragment layouts:
 * lane l = 4 g + t holds a rows g, g + 8 at columns 2t, 2t+1 (+8), b rows 2t, 2t+1
 * (+8) at column g, and c rows g, g + 8 at columns 2t, 2t+1. */
inline void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1, EMU_SITE) {
    emu_warp &w = emu_w();
    int l = emu_lane();
    for (int i = 0; i < 4; i++) w.xch[l][2 + i] = a[i];
    w.xch[l][6] = b0;
    w.xch[l][7] = b1;
    w.out[l] = c;
    emu_warp_op("mma.sync", EMU_HERE, [](emu_warp &w, int n) {
        EMU_CHECK(n == 32, "mma.sync in a warp of %d threads", n);
        float A[16][16], Bm[16][8];
        for (int ln = 0; ln < 32; ln++) {
            int g = ln >> 2, t = ln & 3;
            const uint64_t *x = w.xch[ln];
            A[g][2 * t] = emu_lo(x[2]), A[g][2 * t + 1] = emu_hi(x[2]);
            A[g + 8][2 * t] = emu_lo(x[3]), A[g + 8][2 * t + 1] = emu_hi(x[3]);
            A[g][2 * t + 8] = emu_lo(x[4]), A[g][2 * t + 9] = emu_hi(x[4]);
            A[g + 8][2 * t + 8] = emu_lo(x[5]), A[g + 8][2 * t + 9] = emu_hi(x[5]);
            Bm[2 * t][g] = emu_lo(x[6]), Bm[2 * t + 1][g] = emu_hi(x[6]);
            Bm[2 * t + 8][g] = emu_lo(x[7]), Bm[2 * t + 9][g] = emu_hi(x[7]);
        }
        for (int ln = 0; ln < 32; ln++) {
            int g = ln >> 2, t = ln & 3, rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
            float *c = (float *)w.out[ln];
            for (int e = 0; e < 4; e++) {
                float s = c[e];
                for (int k = 0; k < 16; k++) s += A[rows[e]][k] * Bm[k][cols[e]];
                c[e] = s;
            }
        }
    });
}

/* cp.async: the destination holds garbage from the issue; the data lands at the
 * latest legal moment, wait_group. */
inline void cp_async16(bf16 *dst, const bf16 *src, bool valid) {
    EMU_CHECK(!valid || ((uintptr_t)src & 15) == 0, "cp.async global source not 16-byte aligned");
    uint32_t sa = smem_addr(dst);
    EMU_CHECK((sa & 15) == 0, "cp.async shared destination not 16-byte aligned");
    memset(emu_shared(sa, 16), 0xAB, 16);
    emu_self->pending.push_back({(unsigned char *)dst, (const unsigned char *)src, valid ? 16 : 0});
}
inline void cp_async_commit() {
    emu_self->groups.push_back(emu_self->pending);
    emu_self->pending.clear();
}
template <int N> inline void cp_async_wait() {
    auto &groups = emu_self->groups;
    while ((int)groups.size() > N) {
        for (auto &c : groups.front()) {
            unsigned char bytes[16] = {0};
            if (c.n) memcpy(bytes, c.src, 16);
            memcpy(c.dst, bytes, 16);
        }
        groups.erase(groups.begin());
    }
}

/* Runs kern(p) on a grid of blocks of `threads` emulated threads with `smem` bytes
 * of dynamic shared memory; returns the ldmatrix bank conflicts (extra wavefronts)
 * and adds the phases to *phases. */
template <class P> long emu_run_kernel(void (*kern)(P), dim3 grid, int threads, size_t smem, const P &p, long *phases) {
    struct call { void (*kern)(P); const P *p; } c = {kern, &p};
    long conflicts = 0;
    emu_run_grid("kernel", grid, dim3(threads), smem, [](void *x) { ((call *)x)->kern(*((call *)x)->p); }, &c,
                 &conflicts, phases);
    return conflicts;
}

#endif
