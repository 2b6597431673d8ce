/*
 * The device side of flash attention: tile shapes, shared-memory tiles and the two
 * kernels. flash_attention.cu includes it after flash_ptx.cuh and launches them;
 * tests/emu includes it after emu.h and runs them on the CPU.
 *
 * Self-attention by flash kernels: one launch forward, one launch backward, bf16
 * tensor-core MMA (mma.sync m16n8k16, fp32 accumulation) on tiles of q, k, v held
 * in shared memory, online softmax in fp32, attention dropout by Philox recomputed
 * in the backward; nothing of size S x S ever reaches device memory. The contract
 * is backend.h's (see attention.cu for the cuBLAS path it replaces up to
 * FLASH_MAX_S positions); docs/ATTENTION.md explains the design and its numbers.
 *
 * Forward, one block per (query tile of BM rows, head h, sequence b); warp w owns
 * query rows 16w .. 16w + 15 of the tile. For each key tile of BN keys below
 * L = lengths[b] (tiles past L are never loaded; keys j >= L of the last tile get
 * score -inf): s = q k^T, running max m and sum l of exp(s / sqrt(dh) - m), ctx +=
 * dropout(exp(..)) v with the old ctx rescaled; finally ctx *= 1 / ((1 - p) l) and
 * lse = m + log l, the natural log-sum-exp of the scaled scores of each query row,
 * saved (B, H, S) fp32 for the backward: P = exp(s / sqrt(dh) - lse).
 *
 * Backward, one block per (head h, sequence b), deterministic without atomics, in
 * two variants of the same code (bwd_cfg: 8 warps and BN = 128, or 4 warps and
 * BN = 64 with more blocks per SM): for each key tile j of BN keys below L (warp
 * w owns keys 16w .. 16w + 15),
 * dk_j and dv_j accumulate in registers over the query tiles i below L:
 *   s^T = k_j q_i^T, P^T = exp(s^T / sqrt(dh) - lse), dv_j += dropout(P)^T do_i,
 *   dP^T = v_j do_i^T, dS^T = P^T (dropout(dP^T) - D), dk_j += dS^T q_i / sqrt(dh),
 * with D = rowsum(do o) computed by the block for its head at the start; dS^T goes
 * through shared memory and every warp then computes a fixed (16 x 32) piece of
 * dq_i += dS k_j / sqrt(dh), which the block adds into an fp32 row block it alone
 * owns, in the scratch or (narrow, where it fits) in shared memory (the same
 * thread reads and writes the same elements, in the order of
 * j), and rounds to bf16 into dqkv at the last key tile. One head never splits over
 * blocks, so no sum depends on scheduling: dqkv is bit-identical between runs.
 *
 * Padded positions: keys j >= L take no part (probability 0, dk = dv = 0). Query
 * rows i >= L inside a query tile that holds a valid row are computed as HF does
 * (they attend over the valid keys); query tiles with no valid row are skipped:
 * their out and dq rows are written as zeros and their dout is never read. In
 * training the dout of padded rows is zero (they never reach the loss), so the
 * gradients equal HF's. lengths must lie in [1, S] (not checked on the device).
 *
 * Dropout element e = (h S + i) S + j of sequence b, as the CPU backend; Philox
 * block e / 4 gives the words of four consecutive keys. The kernels order the keys
 * inside each 16-key chunk (free: it only changes which shared-memory rows
 * ldmatrix reads) so that one thread holds four consecutive keys of a row
 * (forward) or two lanes hold them (backward, one shuffle), so one Philox block is
 * computed per four elements when S % 4 == 0 (two when the four straddle blocks).
 *
 * Head sizes: the kernels are built for DH = 64 and 128 columns; dh <= 64 runs
 * DH = 64 and 64 < dh <= 128 runs DH = 128, with columns past dh zero-filled (and
 * element-wise loads instead of 16-byte cp.async when dh != DH).
 */
#ifndef MLM_KERNELS_FLASH_KERNELS_CUH
#define MLM_KERNELS_FLASH_KERNELS_CUH

#include <math.h>

#include "device.cuh"
#include "dropout.cuh"

static constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;
static constexpr int SMEM_ALIGN = 256;   // tiles start at this shared-address alignment (see blk)

/* ---- tile shapes ---- */

template <int DH> struct fwd_cfg {
    static constexpr int WARPS = DH == 64 ? 8 : 4;   // DH = 128: 64 query rows, as its registers allow
    static constexpr int THREADS = 32 * WARPS, BM = 16 * WARPS, BN = 64;
    static constexpr int MIN_BLOCKS = 2;   // 16 (DH 64) or 8 (DH 128, 80 KB of shared memory) warps per SM
    static size_t smem_bytes() { return SMEM_ALIGN + (size_t)(BM + 4 * BN) * DH * sizeof(bf16); }   // q, 2 x (k, v)
};

/* Backward variants, chosen at run time (flash_attention.cu, MLM_FLASH_BWD):
 * FLASH_BWD_WIDE, 8 warps and 128-key tiles, one block per SM (255 registers on
 * sm_90); FLASH_BWD_NARROW, 4 warps and 64-key tiles with half the query rows per
 * step, so that its registers fit three blocks per SM (DH 64: 168 registers) or two
 * (DH 128), without spills, and its fp32 dq partial sums in shared memory when they
 * fit beside its tiles in that many blocks' share (DH 64 up to S = 128: no scratch
 * traffic for the extra key tile; docs/PERF.md, "Flash backward"). */
enum { FLASH_BWD_WIDE = 0, FLASH_BWD_NARROW = 1 };
static constexpr size_t SMEM_PER_SM = 228 * 1024, SMEM_PER_BLOCK = 1024;   // sm_90; and reserved per block

template <int DH, int V = FLASH_BWD_WIDE> struct bwd_cfg {
    static constexpr bool NARROW = V == FLASH_BWD_NARROW;
    static constexpr int WARPS = NARROW ? 4 : 8, THREADS = 32 * WARPS, BN = 16 * WARPS;
    // blocks per SM the registers allow: 168 (DH 64) or 255 registers a thread, no spills
    static constexpr int MIN_BLOCKS = NARROW ? (DH == 64 ? 3 : 2) : 1;
    static constexpr size_t SMEM_BUDGET = SMEM_PER_SM / MIN_BLOCKS - SMEM_PER_BLOCK;   // a block's, for that many
    // query rows per step: the register budget of the score fragments beside dk, dv
    static constexpr int BM = NARROW ? (DH == 64 ? 32 : 16) : (DH == 64 ? 64 : 32);
    static constexpr int DS_LD = BM + 8;                 // dS^T row stride, padded against bank conflicts
    static constexpr int MT = BM / 16, NC = WARPS / MT;  // the dq step: m16 tiles x column chunks
    static constexpr int CW = DH / NC;                   // columns of dq per warp (32)
    static constexpr int DQ_LD = DH + 8;                 // row stride of dq in shared memory (2 wavefronts)
    __host__ __device__ static int rows(int S) { return (S + BM - 1) / BM * BM; }   // query rows of the tiles
    __host__ __device__ static size_t tile_bytes(int S) {   // k, v, 2 x (q, do), dS^T; lse, D
        return SMEM_ALIGN + (size_t)(2 * BN * DH + 4 * BM * DH + BN * DS_LD) * sizeof(bf16) +
               2 * (size_t)rows(S) * sizeof(float);
    }
    // dq partial sums (more than one key tile) in shared memory rather than the fp32 scratch
    __host__ __device__ static bool dq_in_smem(int S) {
        return NARROW && S > BN && tile_bytes(S) + (size_t)rows(S) * DQ_LD * sizeof(float) <= SMEM_BUDGET;
    }
    __host__ __device__ static size_t smem_bytes(int S) {
        return tile_bytes(S) + (dq_in_smem(S) ? (size_t)rows(S) * DQ_LD * sizeof(float) : 0);
    }
    static bool dq_scratch(int S) { return S > BN && !dq_in_smem(S); }   // launch: the fp32 scratch is needed
};

struct flash_params {
    const bf16 *qkv;          // (N, 3d)
    const int32_t *lengths;   // (B)
    bf16 *out;                // (N, d)
    float *lse;               // (B, H, S)
    const bf16 *dout;         // (N, d), backward
    bf16 *dqkv;               // (N, 3d), backward
    float *dq_acc;            // (B, H, bwd_cfg::rows(S), DH) fp32 partial dq, backward, when dq_scratch(S)
    int S, H, dh;
    float scale;              // 1 / sqrt(dh)
    bool vec;                 // dh == DH and 16-byte aligned qkv, dout: cp.async tile loads
    mlm_dropout drop;
};

/* ---- helpers ---- */

/* The dynamic shared memory from its first SMEM_ALIGN-aligned shared address: blk needs
 * tiles aligned to 2 DH bytes, and the window's start is only promised 16. */
__device__ __forceinline__ unsigned char *aligned_smem(unsigned char *p) {
    return p + ((SMEM_ALIGN - (smem_addr(p) & (SMEM_ALIGN - 1))) & (SMEM_ALIGN - 1));
}

/* Two floats as a bf16 pair, lo in the low half (the lower column of a fragment). */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* ---- shared-memory tiles: (rows, DH) bf16, 16-byte units XOR-swizzled ----
 * Unit u of row r sits at unit u ^ f(r), f(r) = (r % 8) ^ (3 if r % 16 >= 8). Any
 * 8 consecutive rows, and the row sets the key orders below read together
 * ({0,1,4,5,8,9,12,13}, {2,3,6,7,..}, the even and the odd rows of 16), land in 8
 * distinct bank groups: ldmatrix runs without conflicts. */
template <int DH> __device__ __forceinline__ int sw(int r, int c) {
    int f = (r & 7) ^ (((r >> 3) & 1) * 3);
    return r * DH + ((((c >> 3) ^ f)) << 3) + (c & 7);
}

/* The shared address of (r, c), c % 8 == 0, of a swizzled tile aligned to 2 DH bytes. */
template <int DH> __device__ __forceinline__ uint32_t sw_addr(const bf16 *tile, int r, int c) {
    return smem_addr(tile + sw<DH>(r, c));
}

/* From a = sw_addr(tile, r, c) with r < 16, the address of (r + 16 i, c + 16 j),
 * for c + 16 j < DH, when bit 1 of the unit index c / 8 is clear where 2 j is added
 * (so that XOR and addition agree: c / 8 in {0, 1} mod 4, e.g. c % 16 = 0 or 8):
 * f(r) repeats every 16 rows and the unit XOR only touches bits below the row size,
 * so a lane computes one address per operand and reaches every 16 x 16 block with
 * constants, instead of holding one address register per block. */
template <int DH> __device__ __forceinline__ uint32_t blk(uint32_t a, int i, int j) {
    return (a ^ (uint32_t)(32 * j)) + (uint32_t)(32 * DH * i);
}

/* Forward: column c (0..15) of a 16-key chunk of the score tile is key fwd_key(c),
 * so that lane t holds keys 4t .. 4t + 3 of its rows (columns 2t, 2t+1, 2t+8, 2t+9). */
__device__ __forceinline__ int fwd_key(int c) { return 4 * ((c & 7) >> 1) + 2 * (c >> 3) + (c & 1); }

/* Backward: row r (0..15) of a warp's 16 keys is key bwd_key(r), so that lane group
 * g (lanes 4g .. 4g + 3) holds keys 2g and 2g + 1 (fragment rows g and g + 8). */
__device__ __forceinline__ int bwd_key(int r) { return 2 * (r & 7) + (r >> 3); }

/* threadIdx.x, read again where it is called: an asm volatile that the compiler cannot
 * hoist, so that the tile loads' per-thread addresses are recomputed at each load (a
 * few integer ops) instead of held in registers across the loops (64 bits per 16-byte
 * unit of each tile: they cost the backward its spills, 40 and 88 B on sm_90, and
 * the narrow one its third block). The emulator reads threadIdx. */
__device__ __forceinline__ int tid_here() {
#ifdef __CUDA_ARCH__
    int t;
    asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(t));
    return t;
#else
    return threadIdx.x;
#endif
}

/* tile[r][c] = src[(row0 + r) ld + c] for row0 + r < limit and c < dh, else 0; all
 * THREADS threads of the block take part. vec: cp.async (the caller commits and
 * waits); else element loads. */
template <int ROWS, int DH, int THREADS>
__device__ __forceinline__ void load_tile(bf16 *tile, const bf16 *src, size_t ld, int row0, int limit, int dh,
                                          bool vec) {
    constexpr int UNITS = ROWS * DH / 8;
    static_assert(UNITS % THREADS == 0, "tile units must spread evenly over the threads");
#pragma unroll
    for (int k = 0; k < UNITS / THREADS; k++) {
        int u = tid_here() + k * THREADS, r = u / (DH / 8), c = u % (DH / 8) * 8;
        bool ok = row0 + r < limit;
        const bf16 *p = src + (size_t)(ok ? row0 + r : 0) * ld + c;
        bf16 *dst = tile + sw<DH>(r, c);
        if (vec) {
            cp_async16(dst, p, ok);
        } else {
            float x[8];
            load8(x, p, ok ? min(8, dh - c) : 0);
            uint4 raw = make_uint4(pack_bf16(x[0], x[1]), pack_bf16(x[2], x[3]), pack_bf16(x[4], x[5]),
                                   pack_bf16(x[6], x[7]));
            *reinterpret_cast<uint4 *>(dst) = raw;
        }
    }
}

/* dst[(row0 + r) ld + c] = tile[r0 + r][c] for the warp's 16 rows r below limit - row0
 * and c < dh. */
template <int DH>
__device__ __forceinline__ void store_warp_rows(bf16 *dst, size_t ld, const bf16 *tile, int r0, int row0, int limit,
                                                int dh) {
    constexpr int UNITS = 16 * DH / 8;
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int k = 0; k < UNITS / 32; k++) {
        int u = lane + 32 * k, r = u / (DH / 8), c = u % (DH / 8) * 8;
        if (row0 + r >= limit || c >= dh) continue;
        uint4 raw = *reinterpret_cast<const uint4 *>(tile + sw<DH>(r0 + r, c));
        const __nv_bfloat162 *h2 = reinterpret_cast<const __nv_bfloat162 *>(&raw);
        float x[8];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 f = __bfloat1622float2(h2[e]);
            x[2 * e] = f.x;
            x[2 * e + 1] = f.y;
        }
        store8(dst + (size_t)(row0 + r) * ld + c, x, min(8, dh - c));
    }
}

/* Rows [begin, end) of dst, columns < dh, set to 0 by the whole block (padding only). */
__device__ void zero_rows(bf16 *dst, size_t ld, int begin, int end, int dh) {
    for (int i = threadIdx.x; i < (end - begin) * dh; i += blockDim.x)
        dst[(size_t)(begin + i / dh) * ld + i % dh] = __float2bfloat16(0.0f);
}

/* p[0], p[1] = x, y for the n of them below dh - col (n = 2 when vec or both fit). */
__device__ __forceinline__ void store2(bf16 *p, float x, float y, int n) {
    if (n >= 2 && ((uintptr_t)p & 3) == 0) {
        *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(x, y);
    } else {
        if (n >= 1) p[0] = __float2bfloat16(x);
        if (n >= 2) p[1] = __float2bfloat16(y);
    }
}

/* The random words of the four consecutive dropout elements e0 .. e0 + 3 of
 * sequence seq: one Philox block when e0 % 4 == 0, two otherwise. */
__device__ __forceinline__ uint4 dropout_words4(const mlm_dropout &d, uint32_t seq, uint32_t e0) {
    uint4 a = dropout_words(d, seq, e0 >> 2);
    uint32_t s = e0 & 3;
    if (s == 0) return a;
    uint4 b = dropout_words(d, seq, (e0 >> 2) + 1);
    if (s == 1) return make_uint4(a.y, a.z, a.w, b.x);
    if (s == 2) return make_uint4(a.z, a.w, b.x, b.y);
    return make_uint4(a.w, b.x, b.y, b.z);
}

__device__ __forceinline__ float kept(uint32_t word, uint32_t threshold) { return word >= threshold ? 1.0f : 0.0f; }

/* The double-buffer step of both kernels: tile `next` of a and b (rows next R ..
 * next R + R - 1 of the sequence, those below L) starts loading into buffer next & 1
 * (tiles of `tile` elements) when next < count, then the block waits until the
 * current tile, committed before, has landed. */
template <int R, int DH, int THREADS>
__device__ __forceinline__ void next_tiles(bf16 *As, bf16 *Bs, int tile, const bf16 *a, int lda, const bf16 *b,
                                           int ldb, int next, int count, int L, int dh, bool vec) {
    if (next < count) {
        int nb = next & 1;
        load_tile<R, DH, THREADS>(As + nb * tile, a, lda, next * R, L, dh, vec);
        load_tile<R, DH, THREADS>(Bs + nb * tile, b, ldb, next * R, L, dh, vec);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
}

/* ================= forward ================= */

template <int DH>
__global__ void __launch_bounds__(fwd_cfg<DH>::THREADS, fwd_cfg<DH>::MIN_BLOCKS) flash_fwd_kernel(flash_params p) {
    typedef fwd_cfg<DH> C;
    constexpr int BM = C::BM, BN = C::BN, KV = BN * DH;
    FLASH_DYNAMIC_SMEM(smem);
    bf16 *Qs = (bf16 *)aligned_smem(smem), *Ks = Qs + BM * DH, *Vs = Ks + 2 * KV;   // q (BM, DH); k, v (2, BN, DH)
    const int h = blockIdx.y, b = blockIdx.z, q0 = blockIdx.x * BM, S = p.S;
    const int L = min(max(p.lengths[b], 1), S);   // as the host promises; a bad length never reads out of bounds
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int mi = lane >> 3, r8 = lane & 7;   // ldmatrix: the matrix this lane addresses, and the row
    const int d = p.H * p.dh;
    const size_t ld = 3 * (size_t)d;
    const bf16 *q = p.qkv + (size_t)b * S * ld + (size_t)h * p.dh, *k = q + d, *v = k + d;   // (S, dh), stride 3d
    bf16 *out = p.out + (size_t)b * S * d + (size_t)h * p.dh;                                 // (S, dh), stride d
    float *lse = p.lse + ((size_t)b * p.H + h) * S;                                           // (S)
    const int q_end = min(q0 + BM, S);
    if (q0 >= L) {   // no valid query row: zeros
        zero_rows(out, d, q0, q_end, p.dh);
        for (int r = q0 + threadIdx.x; r < q_end; r += C::THREADS) lse[r] = 0.0f;
        return;
    }
    const int nk = (L + BN - 1) / BN;
    load_tile<BM, DH, C::THREADS>(Qs, q, ld, q0, S, p.dh, p.vec);
    load_tile<BN, DH, C::THREADS>(Ks, k, ld, 0, L, p.dh, p.vec);
    load_tile<BN, DH, C::THREADS>(Vs, v, ld, 0, L, p.dh, p.vec);
    cp_async_commit();

    const float sl2 = p.scale * LOG2E;   // scores into log2 units
    const mlm_dropout drop = dropout_live(p.drop);   // step and seq_base from live when set
    const uint32_t thr = drop.threshold, seq = drop.seq_base + (uint32_t)b;
    const int row = 16 * warp + g;       // tile rows row and row + 8 are this thread's
    uint32_t qf[DH / 16][4];             // q rows of the warp, A fragments
    // ldmatrix addresses of this lane: k (B, keys in fwd_key order), v (B, transposed)
    const uint32_t k_addr = sw_addr<DH>(Ks, fwd_key(r8 + 8 * (mi >> 1)), 8 * (mi & 1));
    const uint32_t v_addr = sw_addr<DH>(Vs, fwd_key(r8 + 8 * (mi & 1)), 8 * (mi >> 1));
    float o[DH / 8][4] = {};             // ctx (16, DH) of the warp
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};   // running max (log2 units), sum
    for (int it = 0; it < nk; it++) {
        // prefetch the next key tile into the other buffer; wait for this one
        next_tiles<BN, DH, C::THREADS>(Ks, Vs, KV, k, ld, v, ld, it + 1, nk, L, p.dh, p.vec);
        if (it == 0) {
#pragma unroll
            for (int kk = 0; kk < DH / 16; kk++)
                ldsm_x4(qf[kk], blk<DH>(sw_addr<DH>(Qs, r8 + 8 * (mi & 1), 8 * (mi >> 1)), warp, kk));
        }
        const uint32_t buf = (it & 1) * KV * sizeof(bf16), kt = k_addr + buf, vt = v_addr + buf;
        const int kb = it * BN;

        // s (16, BN) = q k^T; n-tiles 2m, 2m+1 are the 16-key chunk m in fwd_key order
        float s[BN / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < DH / 16; kk++) {
#pragma unroll
            for (int m = 0; m < BN / 16; m++) {
                uint32_t bk[4];
                ldsm_x4(bk, blk<DH>(kt, m, kk));
                mma(s[2 * m], qf[kk], bk[0], bk[1]);
                mma(s[2 * m + 1], qf[kk], bk[2], bk[3]);
            }
        }
        // element (n-tile 2m + half, e) is row row + 8 (e >> 1), key kb + 16m + 4t + 2 half + (e & 1)
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = kb + 16 * (nt >> 1) + 4 * t + 2 * (nt & 1) + (e & 1);
                s[nt][e] = key < L ? s[nt][e] * sl2 : -INFINITY;
            }
        }
        // online softmax: the quad (4 lanes) of a row shares its max
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = mrow[r];
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float corr = exp2f(mrow[r] - mx);   // 0 on the first tile (mrow = -inf, mx finite)
            mrow[r] = mx;
            lrow[r] *= corr;
#pragma unroll
            for (int nt = 0; nt < DH / 8; nt++) {
                o[nt][2 * r] *= corr;
                o[nt][2 * r + 1] *= corr;
            }
        }
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[nt][e] = exp2f(s[nt][e] - mrow[e >> 1]);
                lrow[e >> 1] += s[nt][e];
            }
        }
        if (thr) {   // dropout: the sum above is of the kept and dropped alike
#pragma unroll
            for (int m = 0; m < BN / 16; m++) {
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    uint32_t i = (uint32_t)(q0 + row + 8 * r);
                    uint32_t e0 = ((uint32_t)h * S + i) * (uint32_t)S + (uint32_t)(kb + 16 * m + 4 * t);
                    uint4 w = dropout_words4(drop, seq, e0);
                    s[2 * m][2 * r] *= kept(w.x, thr);
                    s[2 * m][2 * r + 1] *= kept(w.y, thr);
                    s[2 * m + 1][2 * r] *= kept(w.z, thr);
                    s[2 * m + 1][2 * r + 1] *= kept(w.w, thr);
                }
            }
        }
        // ctx += P v: the score fragments of chunk m are the A fragment; v rows in fwd_key order
#pragma unroll
        for (int m = 0; m < BN / 16; m++) {
            uint32_t a[4] = {pack_bf16(s[2 * m][0], s[2 * m][1]), pack_bf16(s[2 * m][2], s[2 * m][3]),
                             pack_bf16(s[2 * m + 1][0], s[2 * m + 1][1]), pack_bf16(s[2 * m + 1][2], s[2 * m + 1][3])};
#pragma unroll
            for (int np = 0; np < DH / 16; np++) {
                uint32_t bv[4];
                ldsm_x4_t(bv, blk<DH>(vt, m, np));
                mma(o[2 * np], a, bv[0], bv[1]);
                mma(o[2 * np + 1], a, bv[2], bv[3]);
            }
        }
        __syncthreads();   // the buffer read here is the next prefetch's target
    }

    // ctx = o (1/(1-p)) / l; lse = ln(sum exp(scaled scores)); rows staged in the warp's own q rows
    const float keep_scale = thr ? drop.scale : 1.0f;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = lrow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float inv = keep_scale / l;
        if (t == 0 && q0 + row + 8 * r < S) lse[q0 + row + 8 * r] = (mrow[r] + log2f(l)) * LN2;
#pragma unroll
        for (int nt = 0; nt < DH / 8; nt++)
            *reinterpret_cast<uint32_t *>(Qs + sw<DH>(row + 8 * r, 8 * nt + 2 * t)) =
                pack_bf16(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv);
    }
    __syncwarp();
    store_warp_rows<DH>(out, d, Qs, 16 * warp, q0 + 16 * warp, S, p.dh);
}

/* ================= backward ================= */

/* acc (16 x BM) += A B^T for the warp's 16 rows of tile A (address a_addr, as from
 * sw_addr) and BM rows of tile B (address b_addr), both (rows, DH) swizzled: the
 * score-shaped products of the backward, s^T = k q^T and dP^T = v do^T. */
template <int DH, int BM>
__device__ __forceinline__ void warp_abt(float acc[BM / 8][4], uint32_t a_addr, uint32_t b_addr) {
#pragma unroll
    for (int kk = 0; kk < DH / 16; kk++) {
        uint32_t a[4];
        ldsm_x4(a, blk<DH>(a_addr, 0, kk));
#pragma unroll
        for (int np = 0; np < BM / 16; np++) {
            uint32_t b[4];
            ldsm_x4(b, blk<DH>(b_addr, np, kk));
            mma(acc[2 * np], a, b[0], b[1]);
            mma(acc[2 * np + 1], a, b[2], b[3]);
        }
    }
}

/* lse2[r] = lse[r] log2(e) and D[r] = sum_c do[r][c] o[r][c] for the rows r < rows of
 * the head (rows >= S: +inf and 0, so that their P is 0); 8 or 16 lanes per row. */
template <int DH, int THREADS>
__device__ __forceinline__ void row_stats(float *lse2, float *D, const float *lse, const bf16 *o, const bf16 *dO,
                                          int d, int rows, int S, int dh) {
    constexpr int UPR = DH / 8;   // 16-byte units per row
#pragma unroll 4
    for (int u = threadIdx.x; u < rows * UPR; u += THREADS) {   // rows * UPR is a multiple of THREADS
        int r = u / UPR, c = u % UPR * 8, n = r < S ? min(8, dh - c) : 0;
        float x[8], y[8], dot = 0.0f;
        load8(x, o + (size_t)(r < S ? r : 0) * d + c, n);
        load8(y, dO + (size_t)(r < S ? r : 0) * d + c, n);
#pragma unroll
        for (int e = 0; e < 8; e++) dot += x[e] * y[e];
#pragma unroll
        for (int off = UPR / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        if (u % UPR == 0) {
            D[r] = dot;
            lse2[r] = r < S ? lse[r] * LOG2E : INFINITY;
        }
    }
}

template <int DH, int V>
__global__ void __launch_bounds__(bwd_cfg<DH, V>::THREADS, bwd_cfg<DH, V>::MIN_BLOCKS)
    flash_bwd_kernel(flash_params p) {
    typedef bwd_cfg<DH, V> C;
    constexpr int BM = C::BM, BN = C::BN, DS_LD = C::DS_LD, QT = BM * DH;
    FLASH_DYNAMIC_SMEM(smem);
    bf16 *Ks = (bf16 *)aligned_smem(smem), *Vs = Ks + BN * DH;   // k, v (BN, DH) of the key tile
    bf16 *Qs = Vs + BN * DH, *dOs = Qs + 2 * QT;         // q, do (2, BM, DH)
    bf16 *dsT = dOs + 2 * QT;                            // dS^T (BN, DS_LD)
    const int S = p.S, rows = C::rows(S);
    float *lse2 = (float *)(dsT + BN * DS_LD), *Dr = lse2 + rows;   // (rows) each
    const int h = blockIdx.x, b = blockIdx.y, L = min(max(p.lengths[b], 1), p.S);   // as in the forward
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int mi = lane >> 3, r8 = lane & 7;
    const int d = p.H * p.dh;
    const size_t ld = 3 * (size_t)d, head = (size_t)b * p.H + h;
    const bf16 *q = p.qkv + (size_t)b * S * ld + (size_t)h * p.dh, *k = q + d, *v = k + d;   // (S, dh), stride 3d
    const bf16 *o = p.out + (size_t)b * S * d + (size_t)h * p.dh;                            // (S, dh), stride d
    const bf16 *dO = p.dout + (size_t)b * S * d + (size_t)h * p.dh;
    bf16 *dq = p.dqkv + (size_t)b * S * ld + (size_t)h * p.dh, *dk = dq + d, *dv = dk + d;   // (S, dh), stride 3d
    // dq partial sums (rows, acc_ld): in shared memory after lse2, D when they fit, else the scratch
    const bool dq_smem = C::dq_in_smem(S);
    const int acc_ld = dq_smem ? C::DQ_LD : DH;
    float *acc = dq_smem ? Dr + rows : p.dq_acc ? p.dq_acc + head * rows * DH : nullptr;
    const int nq = (L + BM - 1) / BM, nk = (L + BN - 1) / BN;   // tiles holding a valid row / key
    const float sl2 = p.scale * LOG2E;
    const mlm_dropout drop = dropout_live(p.drop);   // step and seq_base from live when set
    const uint32_t thr = drop.threshold, seq = drop.seq_base + (uint32_t)b;
    const float keep_scale = thr ? drop.scale : 1.0f;

    row_stats<DH, C::THREADS>(lse2, Dr, p.lse + head * S, o, dO, d, nq * BM, S, p.dh);
    zero_rows(dq, ld, min(nq * BM, S), S, p.dh);   // query tiles with no valid row
    zero_rows(dk, ld, min(nk * BN, S), S, p.dh);   // key tiles with no valid key
    zero_rows(dv, ld, min(nk * BN, S), S, p.dh);

    const int mt = warp % C::MT, nc = warp / C::MT;   // this warp's piece of dq
    // ldmatrix addresses of this lane: k, v as A (the warp's keys in bwd_key order); q, do
    // as B (_n) and transposed B (_t); k transposed for dq; dS^T transposed as A for dq
    const uint32_t k_a = sw_addr<DH>(Ks, 16 * warp + bwd_key(r8 + 8 * (mi & 1)), 8 * (mi >> 1));
    const uint32_t v_a = sw_addr<DH>(Vs, 16 * warp + bwd_key(r8 + 8 * (mi & 1)), 8 * (mi >> 1));
    const uint32_t q_n = sw_addr<DH>(Qs, r8 + 8 * (mi >> 1), 8 * (mi & 1));
    const uint32_t q_t = sw_addr<DH>(Qs, r8 + 8 * (mi & 1), 8 * (mi >> 1));
    const uint32_t o_n = sw_addr<DH>(dOs, r8 + 8 * (mi >> 1), 8 * (mi & 1));
    const uint32_t o_t = sw_addr<DH>(dOs, r8 + 8 * (mi & 1), 8 * (mi >> 1));
    const uint32_t k_t = sw_addr<DH>(Ks, r8 + 8 * (mi & 1), C::CW * nc + 8 * (mi >> 1));
    const uint32_t ds_a = smem_addr(dsT + (r8 + 8 * (mi >> 1)) * DS_LD + 16 * mt + 8 * (mi & 1));
    for (int j = 0; j < nk; j++) {
        const int kb = j * BN, kw = kb + 16 * warp;   // first key of the tile, of the warp
        const bool warp_keys = kw < L;                // the warp holds a valid key
        const int nkc = (min(BN, L - kb) + 15) / 16;  // 16-key chunks holding a valid key
        __syncthreads();   // the previous tile's readers of Ks, Vs are done
        load_tile<BN, DH, C::THREADS>(Ks, k, ld, kb, L, p.dh, p.vec);
        load_tile<BN, DH, C::THREADS>(Vs, v, ld, kb, L, p.dh, p.vec);
        load_tile<BM, DH, C::THREADS>(Qs, q, ld, 0, S, p.dh, p.vec);
        load_tile<BM, DH, C::THREADS>(dOs, dO, d, 0, S, p.dh, p.vec);
        cp_async_commit();
        float dk_acc[DH / 8][4] = {}, dv_acc[DH / 8][4] = {};   // (16 keys, DH) of the warp, rows in bwd_key order
        for (int i = 0; i < nq; i++) {
            next_tiles<BM, DH, C::THREADS>(Qs, dOs, QT, q, ld, dO, d, i + 1, nq, S, p.dh, p.vec);
            const uint32_t buf = (i & 1) * QT * sizeof(bf16);
            const int qb = i * BM;
            if (warp_keys) {
                // s^T (16 keys, BM queries) = k q^T
                float pt[BM / 8][4] = {};
                warp_abt<DH, BM>(pt, k_a, q_n + buf);
                // P^T; element (nt, e) is key kw + 2g + (e >> 1), query qb + 8nt + 2t + (e & 1)
#pragma unroll
                for (int nt = 0; nt < BM / 8; nt++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int key = kw + 2 * g + (e >> 1), qi = qb + 8 * nt + 2 * t + (e & 1);
                        pt[nt][e] = key < L ? exp2f(pt[nt][e] * sl2 - lse2[qi]) : 0.0f;
                    }
                }
                // dropout keep bits (bit 4nt + e): lanes g and g ^ 1 share the Philox blocks of
                // keys 4(g/2) .. +3; even g computes query 8nt + 2t's, odd g query 8nt + 2t + 1's
                uint32_t keep = 0xffffffffu;
                if (thr) {
                    keep = 0;
                    const bool odd = g & 1;
#pragma unroll
                    for (int nt = 0; nt < BM / 8; nt++) {
                        uint32_t i_me = (uint32_t)(qb + 8 * nt + 2 * t + (g & 1));
                        uint32_t e0 = ((uint32_t)h * S + i_me) * (uint32_t)S + (uint32_t)(kw + 4 * (g >> 1));
                        uint4 w = dropout_words4(drop, seq, e0);
                        uint32_t r0 = __shfl_xor_sync(0xffffffffu, odd ? w.x : w.z, 4);
                        uint32_t r1 = __shfl_xor_sync(0xffffffffu, odd ? w.y : w.w, 4);
                        uint32_t c0 = odd ? r0 : w.x, c1 = odd ? w.z : r0, c2 = odd ? r1 : w.y, c3 = odd ? w.w : r1;
                        keep |= ((uint32_t)(c0 >= thr) | (uint32_t)(c1 >= thr) << 1 | (uint32_t)(c2 >= thr) << 2 |
                                 (uint32_t)(c3 >= thr) << 3)
                                << (4 * nt);
                    }
                }
                // dv += dropout(P)^T do
#pragma unroll
                for (int kq = 0; kq < BM / 16; kq++) {
                    float x[8];
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        int nt = 2 * kq + (e >> 2);
                        x[e] = (keep >> (4 * nt + (e & 3)) & 1) ? pt[nt][e & 3] * keep_scale : 0.0f;
                    }
                    uint32_t a[4] = {pack_bf16(x[0], x[1]), pack_bf16(x[2], x[3]), pack_bf16(x[4], x[5]),
                                     pack_bf16(x[6], x[7])};
#pragma unroll
                    for (int np = 0; np < DH / 16; np++) {
                        uint32_t bo[4];
                        ldsm_x4_t(bo, blk<DH>(o_t + buf, kq, np));
                        mma(dv_acc[2 * np], a, bo[0], bo[1]);
                        mma(dv_acc[2 * np + 1], a, bo[2], bo[3]);
                    }
                }
                // dP^T = v do^T, then dS^T = P^T (dropout(dP^T) - D)
                float ds[BM / 8][4] = {};
                warp_abt<DH, BM>(ds, v_a, o_n + buf);
#pragma unroll
                for (int nt = 0; nt < BM / 8; nt++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float f = (keep >> (4 * nt + e) & 1) ? keep_scale : 0.0f;
                        ds[nt][e] = pt[nt][e] * (ds[nt][e] * f - Dr[qb + 8 * nt + 2 * t + (e & 1)]);
                    }
                }
                // dk += dS^T q; dS^T to shared memory in natural key order for the dq step
#pragma unroll
                for (int kq = 0; kq < BM / 16; kq++) {
                    uint32_t a[4] = {pack_bf16(ds[2 * kq][0], ds[2 * kq][1]), pack_bf16(ds[2 * kq][2], ds[2 * kq][3]),
                                     pack_bf16(ds[2 * kq + 1][0], ds[2 * kq + 1][1]),
                                     pack_bf16(ds[2 * kq + 1][2], ds[2 * kq + 1][3])};
                    bf16 *row0 = dsT + (16 * warp + 2 * g) * DS_LD + 16 * kq + 2 * t, *row1 = row0 + DS_LD;
                    *reinterpret_cast<uint32_t *>(row0) = a[0];
                    *reinterpret_cast<uint32_t *>(row1) = a[1];
                    *reinterpret_cast<uint32_t *>(row0 + 8) = a[2];
                    *reinterpret_cast<uint32_t *>(row1 + 8) = a[3];
#pragma unroll
                    for (int np = 0; np < DH / 16; np++) {
                        uint32_t bq[4];
                        ldsm_x4_t(bq, blk<DH>(q_t + buf, kq, np));
                        mma(dk_acc[2 * np], a, bq[0], bq[1]);
                        mma(dk_acc[2 * np + 1], a, bq[2], bq[3]);
                    }
                }
            }
            __syncthreads();   // dS^T of every warp is in shared memory

            // dq rows qb + 16mt .. +15, columns CW nc .. +CW-1: += dS k over the valid key chunks
            const int qrow = qb + 16 * mt + g, col = C::CW * nc + 2 * t;
            float old[C::CW / 8][4] = {};
            if (j > 0) {   // the partial sum of the earlier key tiles, loaded before the MMAs
#pragma unroll
                for (int nt = 0; nt < C::CW / 8; nt++) {
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        float2 x = *reinterpret_cast<const float2 *>(acc + (size_t)(qrow + 8 * r) * acc_ld + col + 8 * nt);
                        old[nt][2 * r] = x.x;
                        old[nt][2 * r + 1] = x.y;
                    }
                }
            }
            float dqp[C::CW / 8][4] = {};
            for (int kc = 0; kc < nkc; kc++) {
                uint32_t a[4];
                ldsm_x4_t(a, ds_a + 16 * kc * DS_LD * (uint32_t)sizeof(bf16));
#pragma unroll
                for (int np = 0; np < C::CW / 16; np++) {
                    uint32_t bk[4];
                    ldsm_x4_t(bk, blk<DH>(k_t, kc, np));
                    mma(dqp[2 * np], a, bk[0], bk[1]);
                    mma(dqp[2 * np + 1], a, bk[2], bk[3]);
                }
            }
#pragma unroll
            for (int nt = 0; nt < C::CW / 8; nt++) {
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float x = old[nt][2 * r] + dqp[nt][2 * r], y = old[nt][2 * r + 1] + dqp[nt][2 * r + 1];
                    int qi = qrow + 8 * r, c = col + 8 * nt;
                    if (j + 1 < nk)
                        *reinterpret_cast<float2 *>(acc + (size_t)qi * acc_ld + c) = make_float2(x, y);
                    else if (qi < S && c < p.dh)
                        store2(dq + (size_t)qi * ld + c, x * p.scale, y * p.scale, p.dh - c);
                }
            }
        }

        // dk, dv of the tile: rows staged in natural key order in the warp's own Ks, Vs rows
        __syncthreads();   // every warp's dq step is done reading Ks
#pragma unroll
        for (int nt = 0; nt < DH / 8; nt++) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                int rr = 16 * warp + 2 * g + r, c = 8 * nt + 2 * t;
                *reinterpret_cast<uint32_t *>(Ks + sw<DH>(rr, c)) =
                    pack_bf16(dk_acc[nt][2 * r] * p.scale, dk_acc[nt][2 * r + 1] * p.scale);
                *reinterpret_cast<uint32_t *>(Vs + sw<DH>(rr, c)) = pack_bf16(dv_acc[nt][2 * r], dv_acc[nt][2 * r + 1]);
            }
        }
        __syncwarp();
        store_warp_rows<DH>(dk, ld, Ks, 16 * warp, kw, S, p.dh);
        store_warp_rows<DH>(dv, ld, Vs, 16 * warp, kw, S, p.dh);
    }
}

#endif
