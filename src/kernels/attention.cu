/*
 * The attention ops of the CUDA backend (twin: src/host/cpu/attention.c): the flash
 * kernels (flash_attention.cu) up to FLASH_MAX_S positions, beyond that (and for
 * every S after mlm_cuda_use_cublas_attention) the cuBLAS path of this file:
 * cuBLASLt strided-batched GEMMs around a fused mask + softmax (fp32) + dropout
 * kernel, the probabilities saved.
 *
 * Forward, per (sequence b, head h), with q, k, v permuted to head layout
 * (3, B, H, S, dh) so that every head is one matrix of a strided batch:
 *   scores = q k^T / sqrt(dh)                    fp32 (B*H, S, S)
 *   P = softmax over the keys j < lengths[b]     bf16 (B*H, S, S), saved
 *   Pd = dropout(P)                              bf16, the operand of the next GEMM
 *   ctx = Pd v, permuted back to (N, d)
 * Every query row, padded or not, attends over the valid keys and padded keys get
 * probability exactly 0, as the CPU backend and HF's additive mask. Dropout element
 * e = (h S + i) S + j of sequence b, the CPU backend's indexing; the backward
 * recomputes the mask from Philox. Backward:
 *   dPd = dy v^T; dP = dropout(dPd); dS = P (dP - rowsum(dP P))
 *   dv = Pd^T dy, dq = dS k / sqrt(dh), dk = dS^T q / sqrt(dh)
 * Padded keys get zero dk and dv because their P and dS are zero. lengths must lie
 * in [1, S]; the device does not check them (the CPU backend exits on others).
 */
#include <math.h>

#include "common.cuh"
#include "dropout.cuh"
#include "mlm/backend_cuda.h"

enum { ROWS_PER_BLOCK = 8, PERMUTE_THREADS = 256 };

static size_t cublas_attention_saved_bytes(int B, int S, int H) {
    return (size_t)B * H * S * S * sizeof(bf16);
}

/* ---- layout: tokens (B, S, P, H, dh) <-> heads (P, B, H, S, dh), P = 3 (qkv) or 1 ---- */

template <int VEC> struct vec_of;   // VEC bf16 moved as one word
template <> struct vec_of<8> { typedef uint4 t; };
template <> struct vec_of<4> { typedef uint2 t; };
template <> struct vec_of<2> { typedef uint32_t t; };
template <> struct vec_of<1> { typedef uint16_t t; };

/* One VEC-element move per thread between the layouts; i indexes the head layout. */
template <int VEC>
__global__ void permute_kernel(bf16 *dst, const bf16 *src, int B, int S, int P, int H, int dh, bool to_heads) {
    typedef typename vec_of<VEC>::t word;
    size_t i = VEC * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= (size_t)P * B * H * S * dh) return;
    size_t rest = i;
    int x = rest % dh; rest /= dh;
    int s = rest % S;  rest /= S;
    int h = rest % H;  rest /= H;
    int b = rest % B;
    int p = (int)(rest / B);
    size_t t = ((((size_t)b * S + s) * P + p) * H + h) * dh + x;
    *reinterpret_cast<word *>(dst + (to_heads ? i : t)) = *reinterpret_cast<const word *>(src + (to_heads ? t : i));
}

/* dst = src in the other layout, moving the widest word that divides dh and keeps
 * both buffers aligned. */
static void permute(cuda_state *st, bf16 *dst, const bf16 *src, int B, int S, int P, int H, int dh,
                    bool to_heads) {
    uintptr_t bits = (uintptr_t)dst | (uintptr_t)src;
    int vec = 1;
    while (vec < 8 && dh % (2 * vec) == 0 && bits % (2 * vec * sizeof(bf16)) == 0) vec *= 2;
    unsigned grid = cdiv(cdiv((size_t)P * B * H * S * dh, vec), PERMUTE_THREADS);
    switch (vec) {
    case 8: permute_kernel<8><<<grid, PERMUTE_THREADS, 0, st->stream>>>(dst, src, B, S, P, H, dh, to_heads); break;
    case 4: permute_kernel<4><<<grid, PERMUTE_THREADS, 0, st->stream>>>(dst, src, B, S, P, H, dh, to_heads); break;
    case 2: permute_kernel<2><<<grid, PERMUTE_THREADS, 0, st->stream>>>(dst, src, B, S, P, H, dh, to_heads); break;
    default: permute_kernel<1><<<grid, PERMUTE_THREADS, 0, st->stream>>>(dst, src, B, S, P, H, dh, to_heads);
    }
    launchCheck();
}

/* ---- softmax rows: one warp per row (b, h, i) of S keys ---- */

/* Calls f(j, factor) for the keys j of a row whose dropout elements are e0 + j, in
 * groups of four elements (one Philox call each) spread over the warp's lanes;
 * factor is the dropout factor of element e0 + j, 1 when dropout is off. */
template <class F>
__device__ __forceinline__ void for_row_keys(uint32_t e0, int S, const mlm_dropout &drop, uint32_t seq, F f) {
    int lane = threadIdx.x & 31;
    uint64_t end = (uint64_t)e0 + S;
    for (uint64_t g = (e0 >> 2) + lane; 4 * g < end; g += 32) {
        uint4 w = drop.threshold ? dropout_words(drop, seq, (uint32_t)g) : make_uint4(0, 0, 0, 0);
        uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int q = 0; q < 4; q++) {
            uint64_t e = 4 * g + q;
            if (e < e0 || e >= end) continue;
            f((int)(e - e0), drop.threshold ? dropout_factor(drop, words[q]) : 1.0f);
        }
    }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* P (row) = softmax(scores) over j < L, 0 beyond; Pd = dropout(P) when Pd != NULL. */
__global__ void softmax_fwd_kernel(bf16 *P, bf16 *Pd, const float *scores, const int32_t *lengths, int B, int H,
                                   int S, mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= B * H * S) return;
    int b = row / (H * S), L = lengths[b];
    const float *x = scores + (size_t)row * S;
    float mx = -INFINITY, sum = 0.0f;
    for (int j = lane; j < L; j += 32) mx = fmaxf(mx, x[j]);
    mx = warp_max(mx);
    for (int j = lane; j < L; j += 32) sum += expf(x[j] - mx);
    float inv = 1.0f / warp_sum(sum);
    bf16 *p = P + (size_t)row * S, *pd = Pd ? Pd + (size_t)row * S : nullptr;
    for_row_keys((uint32_t)(row % (H * S)) * S, S, drop, drop.seq_base + (uint32_t)b, [&](int j, float factor) {
        bf16 v = __float2bfloat16(j < L ? expf(x[j] - mx) * inv : 0.0f);
        p[j] = v;
        if (pd) pd[j] = __float2bfloat16(__bfloat162float(v) * factor);
    });
}

/* From dPd (the gradient of the dropped probabilities) and the saved P: dS, the
 * gradient of the scores, and Pd = dropout(P) when Pd != NULL. */
__global__ void softmax_bwd_kernel(bf16 *dS, bf16 *Pd, const float *dPd, const bf16 *P, const int32_t *lengths,
                                   int B, int H, int S, mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (row >= B * H * S) return;
    int b = row / (H * S), L = lengths[b];
    uint32_t e0 = (uint32_t)(row % (H * S)) * S, seq = drop.seq_base + (uint32_t)b;
    const float *dp = dPd + (size_t)row * S;
    const bf16 *p = P + (size_t)row * S;
    float dot = 0.0f;
    for_row_keys(e0, S, drop, seq, [&](int j, float factor) {
        if (j < L) dot += dp[j] * factor * __bfloat162float(p[j]);
    });
    dot = warp_sum(dot);
    bf16 *ds = dS + (size_t)row * S, *pd = Pd ? Pd + (size_t)row * S : nullptr;
    for_row_keys(e0, S, drop, seq, [&](int j, float factor) {
        float pj = __bfloat162float(p[j]);
        ds[j] = __float2bfloat16(j < L ? pj * (dp[j] * factor - dot) : 0.0f);
        if (pd) pd[j] = __float2bfloat16(pj * factor);
    });
}

/* Dropout elements (h S + i) S + j of a sequence are 32-bit counters. */
static void check_attention(int S, int H) {
    if ((uint64_t)H * S * S > UINT32_MAX)
        mlm_die(MLM_EXIT_INPUT, "cuda attention: %d heads x %d^2 positions overflow the dropout counter", H, S);
}

/* ---- forward ---- */

static void cublas_attention_fwd(mlm_backend *be, void *out, void *saved, const void *qkv, const int32_t *lengths,
                                 int B, int S, int H, int dh, const mlm_dropout *drop) {
    cuda_state *st = cuda_st(be);
    if (B * S == 0) return;
    check_attention(S, H);
    int BH = B * H, dropping = drop && drop->threshold;
    size_t nd = (size_t)B * S * H * dh, sq = (size_t)BH * S * S;
    size_t bytes[4] = {3 * nd * sizeof(bf16), sq * sizeof(float), dropping ? sq * sizeof(bf16) : 0, nd * sizeof(bf16)};
    void *p[4];   // q|k|v (3, B, H, S, dh), scores f32 (B*H, S, S), Pd (B*H, S, S), ctx (B, H, S, dh)
    cuda_scratch_slices(st, 4, bytes, p);
    bf16 *q = (bf16 *)p[0], *k = q + nd, *v = k + nd, *P = (bf16 *)saved;
    bf16 *Pd = dropping ? (bf16 *)p[2] : nullptr, *ctx = (bf16 *)p[3];
    float *scores = (float *)p[1];
    long long sh = (long long)S * dh, ss = (long long)S * S;
    permute(st, q, (const bf16 *)qkv, B, S, 3, H, dh, true);
    // scores (B*H, S, S) = q k^T / sqrt(dh)
    cuda_gemm(st, {.M = S, .N = S, .K = dh, .A = q, .lda = dh, .B = k, .ldb = dh, .tb = true, .C = scores,
                   .ldc = S, .ctype = CUDA_R_32F, .alpha = 1.0f / sqrtf((float)dh), .batch = BH, .sa = sh,
                   .sb = sh, .sc = ss});
    softmax_fwd_kernel<<<cdiv(sq / S, ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, 0, st->stream>>>(
        P, Pd, scores, lengths, B, H, S, dropout_arg(drop));
    launchCheck();
    // ctx (B*H, S, dh) = Pd (S, S) v (S, dh)
    cuda_gemm(st, {.M = S, .N = dh, .K = S, .A = dropping ? Pd : P, .lda = S, .B = v, .ldb = dh, .C = ctx,
                   .ldc = dh, .batch = BH, .sa = ss, .sb = sh, .sc = sh});
    permute(st, (bf16 *)out, ctx, B, S, 1, H, dh, false);
}

/* ---- backward ---- */

static void cublas_attention_bwd(mlm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                                 const void *saved, const int32_t *lengths, int B, int S, int H, int dh,
                                 const mlm_dropout *drop) {
    cuda_state *st = cuda_st(be);
    if (B * S == 0) return;
    check_attention(S, H);
    int BH = B * H, dropping = drop && drop->threshold;
    size_t nd = (size_t)B * S * H * dh, sq = (size_t)BH * S * S;
    size_t bytes[6] = {3 * nd * sizeof(bf16), nd * sizeof(bf16), sq * sizeof(float), sq * sizeof(bf16),
                       dropping ? sq * sizeof(bf16) : 0, 3 * nd * sizeof(bf16)};
    void *p[6];   // q|k|v, dy (B, H, S, dh), dPd f32 (B*H, S, S), dS, Pd (B*H, S, S), dq|dk|dv
    cuda_scratch_slices(st, 6, bytes, p);
    bf16 *q = (bf16 *)p[0], *k = q + nd, *v = k + nd, *dy = (bf16 *)p[1], *dS = (bf16 *)p[3];
    bf16 *Pd = dropping ? (bf16 *)p[4] : nullptr, *dq = (bf16 *)p[5], *dk = dq + nd, *dv = dk + nd;
    const bf16 *P = (const bf16 *)saved, *Pv = dropping ? Pd : P;
    float *dPd = (float *)p[2], alpha = 1.0f / sqrtf((float)dh);
    long long sh = (long long)S * dh, ss = (long long)S * S;
    permute(st, q, (const bf16 *)qkv, B, S, 3, H, dh, true);
    permute(st, dy, (const bf16 *)dout, B, S, 1, H, dh, true);
    // dPd (B*H, S, S) = dy (S, dh) v^T
    cuda_gemm(st, {.M = S, .N = S, .K = dh, .A = dy, .lda = dh, .B = v, .ldb = dh, .tb = true, .C = dPd,
                   .ldc = S, .ctype = CUDA_R_32F, .batch = BH, .sa = sh, .sb = sh, .sc = ss});
    softmax_bwd_kernel<<<cdiv(sq / S, ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, 0, st->stream>>>(
        dS, Pd, dPd, P, lengths, B, H, S, dropout_arg(drop));
    launchCheck();
    // dv = Pd^T dy, dq = dS k / sqrt(dh), dk = dS^T q / sqrt(dh): (B*H, S, dh) each
    cuda_gemm(st, {.M = S, .N = dh, .K = S, .A = Pv, .lda = S, .ta = true, .B = dy, .ldb = dh, .C = dv,
                   .ldc = dh, .batch = BH, .sa = ss, .sb = sh, .sc = sh});
    cuda_gemm(st, {.M = S, .N = dh, .K = S, .A = dS, .lda = S, .B = k, .ldb = dh, .C = dq, .ldc = dh,
                   .alpha = alpha, .batch = BH, .sa = ss, .sb = sh, .sc = sh});
    cuda_gemm(st, {.M = S, .N = dh, .K = S, .A = dS, .lda = S, .ta = true, .B = q, .ldb = dh, .C = dk,
                   .ldc = dh, .alpha = alpha, .batch = BH, .sa = ss, .sb = sh, .sc = sh});
    permute(st, (bf16 *)dqkv, dq, B, S, 3, H, dh, false);
}

/* ---- the table's ops: flash up to FLASH_MAX_S positions, the cuBLAS path beyond ----
 * The choice depends on S alone, since attention_saved_bytes does not know dh. */

static bool flash_path(mlm_backend *be, int S) { return S <= FLASH_MAX_S && !cuda_st(be)->cublas_attention; }

size_t cuda_attention_saved_bytes(mlm_backend *be, int B, int S, int H) {
    return flash_path(be, S) ? flash_attention_saved_bytes(be, B, S, H) : cublas_attention_saved_bytes(B, S, H);
}

void cuda_attention_fwd(mlm_backend *be, void *out, void *saved, const void *qkv, const int32_t *lengths, int B,
                        int S, int H, int dh, const mlm_dropout *drop) {
    if (flash_path(be, S)) flash_attention_fwd(be, out, saved, qkv, lengths, B, S, H, dh, drop);
    else cublas_attention_fwd(be, out, saved, qkv, lengths, B, S, H, dh, drop);
}

void cuda_attention_bwd(mlm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                        const void *saved, const int32_t *lengths, int B, int S, int H, int dh,
                        const mlm_dropout *drop) {
    if (flash_path(be, S)) flash_attention_bwd(be, dqkv, dout, qkv, out, saved, lengths, B, S, H, dh, drop);
    else cublas_attention_bwd(be, dqkv, dout, qkv, out, saved, lengths, B, S, H, dh, drop);
}

extern "C" void mlm_cuda_use_cublas_attention(mlm_backend *be, int on) {
    cuda_state *st = cuda_st(be);
    cuda_graphs_reset(st);   // recorded graphs hold the other path's kernels
    st->cublas_attention = on != 0;
}
