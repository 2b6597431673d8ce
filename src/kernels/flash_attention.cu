/*
 * Flash attention on the GPU, host side: shape checks, arguments and launches of
 * the kernels of flash_kernels.cuh (design in that file and docs/ATTENTION.md). The
 * attention ops of attention.cu call it for up to FLASH_MAX_S positions.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "flash_ptx.cuh"
#include "flash_kernels.cuh"

/* ================= host ================= */

size_t flash_attention_saved_bytes(mlm_backend *be, int B, int S, int H) {
    return (size_t)B * H * S * sizeof(float);
}

/* Dies on shapes the kernels do not take. */
static void check_flash(int S, int H, int dh) {
    if (S > FLASH_MAX_S || dh < 1 || dh > FLASH_MAX_DH)
        mlm_die(MLM_EXIT_INPUT, "cuda flash attention: %d positions, head size %d; it takes up to %d and %d", S, dh,
                FLASH_MAX_S, FLASH_MAX_DH);
    if ((uint64_t)H * S * S > UINT32_MAX)
        mlm_die(MLM_EXIT_INPUT, "cuda flash attention: %d heads x %d^2 positions overflow the dropout counter", H, S);
}

/* The batch is a grid dimension (z forward, y backward). */
static void check_batch(int B) {
    if (B > 65535)
        mlm_die(MLM_EXIT_INPUT, "cuda flash attention: a micro-batch of %d sequences; it takes up to 65535", B);
}

static flash_params flash_args(const void *qkv, const int32_t *lengths, void *out, const void *saved,
                               const void *dout, void *dqkv, int S, int H, int dh, const mlm_dropout *drop) {
    flash_params p = {};
    p.qkv = (const bf16 *)qkv;
    p.lengths = lengths;
    p.out = (bf16 *)out;
    p.lse = (float *)saved;
    p.dout = (const bf16 *)dout;
    p.dqkv = (bf16 *)dqkv;
    p.S = S;
    p.H = H;
    p.dh = dh;
    p.scale = 1.0f / sqrtf((float)dh);
    p.vec = dh == (dh <= 64 ? 64 : 128) && (((uintptr_t)qkv | (uintptr_t)dout) & 15) == 0;
    p.drop = dropout_arg(drop);
    return p;
}

template <int DH> static void launch_fwd(cuda_state *st, const flash_params &p, int B) {
    typedef fwd_cfg<DH> C;
    size_t smem = C::smem_bytes();
    static bool raised = false;   // a function attribute: set once (CUDA graphs replay launches that rely on it)
    if (!raised)
        cudaCheck(cudaFuncSetAttribute(flash_fwd_kernel<DH>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    raised = true;
    dim3 grid(cdiv(p.S, C::BM), p.H, B);
    flash_fwd_kernel<DH><<<grid, C::THREADS, smem, st->stream>>>(p);
    launchCheck();
}

template <int DH, int V> static void launch_bwd(cuda_state *st, flash_params p, int B) {
    typedef bwd_cfg<DH, V> C;
    size_t smem = C::smem_bytes(p.S);
    if (C::dq_scratch(p.S)) {   // more than one key tile, dq partial sums not in shared memory: fp32 scratch
        size_t bytes = (size_t)B * p.H * C::rows(p.S) * DH * sizeof(float);
        void *scratch;
        cuda_scratch_slices(st, 1, &bytes, &scratch);
        p.dq_acc = (float *)scratch;
    }
    // set once, for the largest S (narrow: dq rows in shared memory stop at SMEM_BUDGET): the limit is
    // shared by every launch, recorded graphs included
    static bool raised = false;
    if (!raised) {
        size_t most = C::smem_bytes(FLASH_MAX_S);
        if (C::NARROW && most < C::SMEM_BUDGET) most = C::SMEM_BUDGET;
        cudaCheck(cudaFuncSetAttribute(flash_bwd_kernel<DH, V>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)most));
        if (C::NARROW)   // all of the SM's 228 KB as shared memory (percent), so that MIN_BLOCKS blocks fit
            cudaCheck(cudaFuncSetAttribute(flash_bwd_kernel<DH, V>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                           100));
    }
    raised = true;
    flash_bwd_kernel<DH, V><<<dim3(p.H, B), C::THREADS, smem, st->stream>>>(p);
    launchCheck();
}

/* The backward variant (flash_kernels.cuh), read once from MLM_FLASH_BWD: "narrow"
 * (the default: no spills, three blocks per SM at DH 64, two at DH 128) or "wide"
 * (8 warps, one block per SM: the kernel it replaced), so that one build measures
 * both (bench/gpu_check.sh). Anything else is refused. */
static int flash_bwd_variant(void) {
    static int variant = -1;
    if (variant < 0) {
        static const char *const choices[] = {"narrow", "wide", NULL};
        variant = mlm_env_choice("MLM_FLASH_BWD", choices) == 1 ? FLASH_BWD_WIDE : FLASH_BWD_NARROW;
    }
    return variant;
}

void flash_attention_fwd(mlm_backend *be, void *out, void *saved, const void *qkv, const int32_t *lengths, int B,
                         int S, int H, int dh, const mlm_dropout *drop) {
    if (B * S == 0) return;
    check_flash(S, H, dh);
    check_batch(B);
    flash_bwd_variant();   // a bad MLM_FLASH_BWD dies at the first forward, not after it
    flash_params p = flash_args(qkv, lengths, out, saved, NULL, NULL, S, H, dh, drop);
    if (dh <= 64) launch_fwd<64>(cuda_st(be), p, B);
    else launch_fwd<128>(cuda_st(be), p, B);
}

void flash_attention_bwd(mlm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                         const void *saved, const int32_t *lengths, int B, int S, int H, int dh,
                         const mlm_dropout *drop) {
    if (B * S == 0) return;
    check_flash(S, H, dh);
    check_batch(B);
    flash_params p = flash_args(qkv, lengths, (void *)out, saved, dout, dqkv, S, H, dh, drop);
    bool narrow = flash_bwd_variant() == FLASH_BWD_NARROW;
    if (dh <= 64) narrow ? launch_bwd<64, FLASH_BWD_NARROW>(cuda_st(be), p, B) : launch_bwd<64, FLASH_BWD_WIDE>(cuda_st(be), p, B);
    else narrow ? launch_bwd<128, FLASH_BWD_NARROW>(cuda_st(be), p, B) : launch_bwd<128, FLASH_BWD_WIDE>(cuda_st(be), p, B);
}
