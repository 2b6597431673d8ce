/*
 * The flash-attention kernels (src/kernels/flash_kernels.cuh), unchanged, run on
 * the CPU under tests/emu/emu.h, against the CPU backend's attention (the oracle):
 * forward out, backward dq, dk, dv on fresh random bf16 inputs, with either backward
 * (wide, and narrow: the default, cases at the end). Shapes cover both
 * kernel widths (DH 64 and 128), head sizes that are not (12, 100: zero-filled
 * columns, element loads), lengths that are not multiples of the tiles, a
 * one-token sequence, one and several key tiles (the fp32 dq scratch), S = 512,
 * dropout by value and from live values, and an output buffer that is not 16-byte
 * aligned. Every output element must be written; query tiles wholly past the length
 * must be zero; relative L2 error under 1e-2 (bf16 outputs); ldmatrix without bank
 * conflicts. This runs wherever the suite runs; tests/gpu checks the same kernels
 * on a GPU.
 */
#include <criterion/criterion.h>

#include "emu.h"
#include "flash_kernels.cuh"

extern "C" {
#include "mlm/backend.h"
}

static uint64_t rng_state = 88172645463325252ull;
static float rnd() {   // [-1, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}
static float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

struct relerr {
    double num = 0, den = 0;
    void add(double got, double ref) { num += (got - ref) * (got - ref), den += ref * ref; }
    double value() const { return den > 0 ? sqrt(num / den) : sqrt(num); }
};

static const float UNTOUCHED = 12345.0f;   // what the outputs hold before the kernels run

struct flash_case {
    int B, S, H, dh;
    std::vector<int> lengths;
    double p;          // dropout
    bool live;         // step and seq_base from live values
    bool unaligned;    // out and dout one element off 16-byte alignment
    int variant = FLASH_BWD_WIDE;   // the backward kernel: FLASH_BWD_WIDE or FLASH_BWD_NARROW
};

template <int DH, int V> static void run_kernels(flash_params p, int B, long *conflicts, long *phases) {
    typedef bwd_cfg<DH, V> C;
    *conflicts += emu_run_kernel(flash_fwd_kernel<DH>, dim3((p.S + fwd_cfg<DH>::BM - 1) / fwd_cfg<DH>::BM, p.H, B),
                                 fwd_cfg<DH>::THREADS, fwd_cfg<DH>::smem_bytes(), p, phases);
    std::vector<float> acc;
    if (C::dq_scratch(p.S)) {   // as launch_bwd: fp32 dq partial sums, poisoned
        acc.assign((size_t)B * p.H * C::rows(p.S) * DH, NAN);
        p.dq_acc = acc.data();
    }
    *conflicts += emu_run_kernel(flash_bwd_kernel<DH, V>, dim3(p.H, B), C::THREADS, C::smem_bytes(p.S), p, phases);
}

static void check_case(const flash_case &c) {
    const int B = c.B, S = c.S, H = c.H, dh = c.dh, d = H * dh, DH = dh <= 64 ? 64 : 128;
    const size_t N = (size_t)B * S;
    char name[160];
    snprintf(name, sizeof name, "%s B%d S%d H%d dh%d L0=%d p=%.2f live=%d unaligned=%d",
             c.variant == FLASH_BWD_NARROW ? "narrow" : "wide", B, S, H, dh, c.lengths[0], c.p, c.live, c.unaligned);
    // inputs, bf16-exact so that both sides see the same numbers; dout is zero on
    // padded rows, as in training
    std::vector<float> qkv_f(N * 3 * d), dout_f(N * d);
    for (auto &x : qkv_f) x = bf16_round(rnd());
    for (size_t r = 0; r < N; r++)
        for (int k = 0; k < d; k++) dout_f[r * d + k] = (int)(r % S) < c.lengths[r / S] ? bf16_round(rnd()) : 0.0f;
    std::vector<int32_t> lengths(c.lengths.begin(), c.lengths.end());
    mlm_live live = {777, 4242, 0.0f, 0};   // host memory: read by the CPU backend and the emulated device alike
    mlm_dropout drop = {0, 1.0f, 0x123456789abcdefull, 5, 3, 100, c.live ? &live : nullptr};
    if (c.p > 0) {
        drop.threshold = (uint32_t)(c.p * 4294967296.0);
        drop.scale = (float)(1.0 / (1.0 - c.p));
    }

    // the oracle
    mlm_backend *cpu = mlm_backend_cpu(1);
    std::vector<float> out_c(N * d), dqkv_c(N * 3 * d);
    void *saved = cpu->alloc(cpu, cpu->attention_saved_bytes(cpu, B, S, H), "saved");
    cpu->attention_fwd(cpu, out_c.data(), saved, qkv_f.data(), lengths.data(), B, S, H, dh, &drop);
    cpu->attention_bwd(cpu, dqkv_c.data(), dout_f.data(), qkv_f.data(), out_c.data(), saved, lengths.data(), B, S, H,
                       dh, &drop);
    cpu->free(cpu, saved);
    cpu->destroy(cpu);

    // the kernels
    int off = c.unaligned ? 1 : 0;
    std::vector<bf16> qkv(N * 3 * d), dout(N * d + 8), out(N * d + 8), dqkv(N * 3 * d);
    for (size_t i = 0; i < qkv.size(); i++) qkv[i] = __float2bfloat16(qkv_f[i]);
    for (size_t i = 0; i < N * d; i++) dout[off + i] = __float2bfloat16(dout_f[i]);
    for (auto &x : out) x = __float2bfloat16(UNTOUCHED);
    for (auto &x : dqkv) x = __float2bfloat16(UNTOUCHED);
    std::vector<float> lse((size_t)B * H * S, NAN);
    flash_params p = {};
    p.qkv = qkv.data();
    p.lengths = lengths.data();
    p.out = out.data() + off;
    p.lse = lse.data();
    p.dout = dout.data() + off;
    p.dqkv = dqkv.data();
    p.S = S, p.H = H, p.dh = dh;
    p.scale = 1.0f / sqrtf((float)dh);
    p.vec = dh == DH && (((uintptr_t)p.qkv | (uintptr_t)p.dout) & 15) == 0;   // as flash_args
    p.drop = drop;
    long conflicts = 0, phases = 0;
    bool narrow = c.variant == FLASH_BWD_NARROW;
    if (DH == 64) narrow ? run_kernels<64, FLASH_BWD_NARROW>(p, B, &conflicts, &phases)
                         : run_kernels<64, FLASH_BWD_WIDE>(p, B, &conflicts, &phases);
    else narrow ? run_kernels<128, FLASH_BWD_NARROW>(p, B, &conflicts, &phases)
                : run_kernels<128, FLASH_BWD_WIDE>(p, B, &conflicts, &phases);

    // compare: out and dq on the valid rows, dk and dv everywhere; rows of query
    // tiles wholly past the length are zero (the kernels skip them)
    relerr e_out, e_dq, e_dk, e_dv;
    long untouched = 0, skipped_nonzero = 0;
    const int fwd_bm = DH == 64 ? fwd_cfg<64>::BM : fwd_cfg<128>::BM, bwd_bm = DH == 64 ? (narrow ? bwd_cfg<64, FLASH_BWD_NARROW>::BM : bwd_cfg<64>::BM)
                                       : (narrow ? bwd_cfg<128, FLASH_BWD_NARROW>::BM : bwd_cfg<128>::BM);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < S; i++) {
            size_t r = (size_t)b * S + i;
            int L = c.lengths[b];
            for (int k = 0; k < d; k++) {
                float o = __bfloat162float(p.out[r * d + k]);
                float dq = __bfloat162float(dqkv[r * 3 * d + k]), dk = __bfloat162float(dqkv[r * 3 * d + d + k]);
                float dv = __bfloat162float(dqkv[r * 3 * d + 2 * d + k]);
                untouched += (o == UNTOUCHED) + (dq == UNTOUCHED) + (dk == UNTOUCHED) + (dv == UNTOUCHED);
                if (i < L) {
                    e_out.add(o, out_c[r * d + k]);
                    e_dq.add(dq, dqkv_c[r * 3 * d + k]);
                }
                if (i / fwd_bm * fwd_bm >= L) skipped_nonzero += o != 0.0f;
                if (i / bwd_bm * bwd_bm >= L) skipped_nonzero += dq != 0.0f;
                e_dk.add(dk, dqkv_c[r * 3 * d + d + k]);
                e_dv.add(dv, dqkv_c[r * 3 * d + 2 * d + k]);
            }
        }
    cr_expect_eq(untouched, 0, "%s: %ld output elements never written", name, untouched);
    cr_expect_eq(skipped_nonzero, 0, "%s: %ld elements of skipped query tiles not zero", name, skipped_nonzero);
    const char *what[4] = {"out", "dq", "dk", "dv"};
    const relerr *e[4] = {&e_out, &e_dq, &e_dk, &e_dv};
    for (int k = 0; k < 4; k++)
        cr_expect_lt(e[k]->value(), 1e-2, "%s: %s relative L2 error %.3g against the CPU backend", name, what[k],
                     e[k]->value());
    cr_expect_eq(conflicts, 0, "%s: %ld extra ldmatrix wavefronts from bank conflicts in %ld phases", name, conflicts,
                 phases);
    cr_expect_gt(phases, 0);
}

TestSuite(flash_emu, .timeout = 300);

Test(flash_emu, one_key_tile_with_padding) { check_case({2, 100, 2, 64, {100, 37}, 0.0, false, false}); }
Test(flash_emu, several_key_tiles_and_a_one_token_sequence) {
    check_case({3, 200, 2, 64, {200, 77, 1}, 0.1, false, false});
}
Test(flash_emu, dropout_from_live_values) { check_case({3, 203, 1, 64, {203, 150, 129}, 0.1, true, false}); }
Test(flash_emu, head_size_12) { check_case({2, 77, 2, 12, {77, 40}, 0.1, false, false}); }
Test(flash_emu, head_size_100_on_the_wide_kernel) { check_case({2, 150, 2, 100, {150, 65}, 0.1, false, false}); }
Test(flash_emu, head_size_128) { check_case({2, 300, 1, 128, {300, 257}, 0.1, false, false}); }
Test(flash_emu, unaligned_output) { check_case({1, 130, 3, 64, {130}, 0.1, false, true}); }
Test(flash_emu, seq_512) { check_case({1, 512, 1, 64, {512}, 0.1, false, false}); }

/* The narrow backward (4 warps, 64-key tiles, 32 or 16 query rows a step): one key
 * tile, two (DH 64: dq partial sums in shared memory; DH 128: the scratch), more
 * (the fp32 scratch: S 150 .. 512), odd lengths, padding, dropout by value and from
 * live values, head sizes 12, 100 and 128, an unaligned output. */
static flash_case narrow(flash_case c) {
    c.variant = FLASH_BWD_NARROW;
    return c;
}
Test(flash_emu, narrow_one_key_tile_with_padding) { check_case(narrow({2, 61, 2, 64, {61, 37}, 0.1, false, false})); }
Test(flash_emu, narrow_two_key_tiles_dq_in_smem) { check_case(narrow({3, 128, 2, 64, {128, 77, 1}, 0.1, false, false})); }
Test(flash_emu, narrow_dropout_from_live_values) { check_case(narrow({2, 203, 1, 64, {203, 129}, 0.1, true, false})); }
Test(flash_emu, narrow_head_size_12) { check_case(narrow({2, 77, 2, 12, {77, 40}, 0.1, false, false})); }
Test(flash_emu, narrow_head_size_100) { check_case(narrow({2, 150, 2, 100, {150, 65}, 0.1, false, false})); }
Test(flash_emu, narrow_head_size_128_two_key_tiles) { check_case(narrow({2, 113, 1, 128, {113, 70}, 0.1, false, false})); }
Test(flash_emu, narrow_head_size_128_scratch) { check_case(narrow({2, 300, 1, 128, {300, 257}, 0.1, false, false})); }
Test(flash_emu, narrow_unaligned_output) { check_case(narrow({1, 130, 3, 64, {130}, 0.1, false, true})); }
Test(flash_emu, narrow_seq_512) { check_case(narrow({1, 512, 1, 64, {512}, 0.0, false, false})); }
