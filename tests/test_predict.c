/*
 * The performance model (src/host/predict.c) against counts worked out by hand from
 * the CUDA kernels: the FLOPs and bytes of single ops, the FLOPs of a whole training
 * micro-batch, the launch overhead without CUDA graphs, and the peak device memory.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/config.h"
#include "mlm/model.h"
#include "mlm/optimizer.h"
#include "mlm/predict.h"

static mlm_predict *pred;
static mlm_backend *be;

static void setup(void) {
    mlm_ceilings c = mlm_ceilings_h100();
    be = mlm_predict_backend(&c, 1, &pred);
}

static void teardown(void) {
    be->destroy(be);
    mlm_predict_free(pred);
}

TestSuite(predict, .init = setup, .fini = teardown);

static void expect_counts(const char *op, double flops, double bytes, long launches) {
    mlm_op_cost v = mlm_predict_get(pred, op, NULL);
    cr_expect_eq(v.calls, 1, "%s: %ld calls", op, v.calls);
    cr_expect_eq(v.flops, flops, "%s: %.0f FLOPs, by hand %.0f", op, v.flops, flops);
    cr_expect_eq(v.bytes, bytes, "%s: %.0f bytes, by hand %.0f", op, v.bytes, bytes);
    cr_expect_eq(v.launches, launches, "%s: %ld launches, by hand %ld", op, v.launches, launches);
}

/* The flash backward's variants (MLM_FLASH_BWD): narrow (the default) at S 128 holds
 * its two key tiles' dq rows in shared memory (74 KB with its tiles, under a third
 * of the SM's), at S 200 takes the fp32 scratch, 224 rows (query steps of 32);
 * wide at S 200 takes it for its two key tiles of 128, 256 rows (steps of 64). */
Test(predict, flash_backward_variants) {
    char *x = be->alloc(be, 1 << 20, "test");
    const double S[3] = {128, 200, 200}, rows[3] = {0, 224, 256};
    for (int k = 0; k < 3; k++) {
        mlm_predict_reset(pred);
        if (k == 2) setenv("MLM_FLASH_BWD", "wide", 1);
        be->attention_bwd(be, x, x, x, x, x, (int32_t *)x, 1, (int)S[k], 2, 64, NULL);
        unsetenv("MLM_FLASH_BWD");
        expect_counts("attention_bwd", 10.0 * 2 * S[k] * S[k] * 64,
                      2 * (5 * S[k] * 64 * 2 + S[k] * 4 + rows[k] * 64 * 4 * 2 + 3 * S[k] * 64 * 2), 1);
    }
    be->free(be, x);
}

/* The model reads the backend's switches as the backend does: a bad value dies
 * (exit 2) instead of being costed as the default. */
Test(predict, a_bad_switch_is_refused, .exit_code = 2) {
    char *x = be->alloc(be, 1 << 20, "test");
    setenv("MLM_BIAS_GRAD", "sideways", 1);
    be->linear_bwd(be, x, (float *)x, (float *)x, x, x, x, NULL, 64, 16, 32, MLM_ACT_NONE, 0);
    cr_assert_fail("MLM_BIAS_GRAD=sideways was costed");
}

Test(predict, single_ops_by_hand) {
    char *x = be->alloc(be, 1 << 20, "test");   // addresses only: nothing is read or written
    // GEMM 64 x 32 x 16 with a bf16 bias: A, B, C and the bias; then the GELU pass reads
    // pre and writes out
    be->linear_fwd(be, x, x, x, x, x, 64, 16, 32, MLM_ACT_GELU);
    expect_counts("linear_fwd", 2.0 * 64 * 32 * 16, (64 * 16 + 32 * 16) * 2 + 64 * 32 * 2 + 32 * 2 + 2 * 64 * 32 * 2, 2);
    // master, g, m, v read; master, g (zeroed), m, v written in fp32 and the bf16 copy
    mlm_adamw_args a = {1e-3f, 0.9f, 0.999f, 1e-6f, 0.01f, 1, 1.0f};
    be->adamw(be, (float *)x, x, (float *)x, (float *)x, (float *)x, 1000, &a, (float *)x);
    expect_counts("adamw", 0, 1000 * (4 * 4 + 4 * 4 + 2), 1);
    // labels, the bf16 logits read once and written once, row statistics written; then
    // one block reads them and adds two floats
    be->cross_entropy(be, x, (int32_t *)x, 10, 50, 128, 1.0f, NULL, (float *)x);
    expect_counts("cross_entropy", 0, 10 * 4 + 500 * 2 + 500 * 2 + 10 * 8 + 10 * 8 + 2 * 4 * 2, 2);
    // tied decoder backward, M 64 d 32 V 100: the dW GEMM (g, in, dW read and written in
    // fp32, the bias gradient's 100 floats written by its epilogue), their addition to db
    // (both read, db written), the din GEMM
    be->decoder_bwd(be, x, (float *)x, (float *)x, x, x, x, 64, 32, 100, 128);
    expect_counts("decoder_bwd", 2 * (2.0 * 100 * 32 * 64),
                  ((100 * 64 + 64 * 32) * 2 + 100 * 32 * 4 * 2 + 100 * 4) + (100 * 4 * 2 + 100 * 4) +
                      ((64 * 100 + 100 * 32) * 2 + 64 * 32 * 2),
                  3);
    // linear backward without GELU, N 64 I 16 O 32, with MLM_BIAS_GRAD=colsum: the dW GEMM,
    // the bias column sum (dout in, one chunk of float2 partials; the partials in, db read
    // and written), the din GEMM (dout, W in, din out)
    mlm_predict_reset(pred);
    setenv("MLM_BIAS_GRAD", "colsum", 1);
    be->linear_bwd(be, x, (float *)x, (float *)x, x, x, x, NULL, 64, 16, 32, MLM_ACT_NONE, 0);
    unsetenv("MLM_BIAS_GRAD");
    expect_counts("linear_bwd", 2 * (2.0 * 64 * 16 * 32),
                  ((32 * 64 + 64 * 16) * 2 + 32 * 16 * 4 * 2) + (64 * 32 * 2 + 32 * 8) + (32 * 8 + 32 * 4 * 2) +
                      ((64 * 32 + 32 * 16) * 2 + 64 * 16 * 2),
                  4);
    // flash forward, B 2 S 32 H 2 dh 16 (computed as 64 columns): q, k, v read, out and
    // the log-sum-exp written, four heads
    be->attention_fwd(be, x, x, x, (int32_t *)x, 2, 32, 2, 16, NULL);
    expect_counts("attention_fwd", 4.0 * 4 * 32 * 32 * 64, 4 * (3 * 32 * 16 * 2) + 4 * 32 * 16 * 2 + 4 * 32 * 4, 1);
    // backward at S 256, four key tiles of the narrow kernel (the default): q, k, v,
    // dout, out and the log-sum-exp read, dqkv written, the fp32 dq rows (256 of 64
    // columns) written and read once
    unsetenv("MLM_FLASH_BWD");
    be->attention_bwd(be, x, x, x, x, x, (int32_t *)x, 1, 256, 2, 64, NULL);
    expect_counts("attention_bwd", 10.0 * 2 * 256 * 256 * 64,
                  2 * (5 * 256 * 64 * 2 + 256 * 4 + 256 * 64 * 4 * 2 + 3 * 256 * 64 * 2), 1);
    // residual LayerNorm backward, 80 rows of 64 in 3 blocks of 32 rows: dout, the saved
    // sum, mean, rstd and gamma read, dx and dres written with two sets of (3, 64)
    // float2 partials; the finish passes read each set and add into 2 and 1 vectors
    be->residual_ln_bwd(be, x, x, (float *)x, (float *)x, (float *)x, x, x, (float *)x, (float *)x, x, 2, 40, 64,
                        NULL);
    expect_counts("residual_ln_bwd", 0,
                  (2 * 80 * 64 * 2 + 2 * 80 * 4 + 64 * 2) + (2 * 80 * 64 * 2 + 2 * 3 * 64 * 8) +
                      (3 * 64 * 8 + 2 * 64 * 4 * 2) + (3 * 64 * 8 + 64 * 4 * 2),
                  3);
    mlm_op_cost all = mlm_predict_get(pred, NULL, NULL);
    cr_expect_gt(all.seconds, 0);
    be->free(be, x);
}

/* Every GEMM and attention FLOP of a micro-batch: the encoder's six GEMM FLOPs per
 * weight (forward, two in the backward), the MLM head's on the padded masked rows,
 * and flash attention's 4 (forward) + 10 (backward, with the recomputed scores)
 * S^2 DH per head and layer. */
Test(predict, a_micro_batch_by_hand) {
    enum { L = 2, d = 32, H = 2, I = 64, V = 100, B = 3, S = 16, M = 20 };
    mlm_config cfg;
    mlm_config_defaults(&cfg);
    mlm_model_config mc = cfg.model;
    mc.vocab_size = V, mc.hidden_size = d, mc.num_layers = L, mc.num_heads = H, mc.intermediate_size = I;
    mc.max_position = S;
    mlm_model m;
    mlm_model_create(&m, &mc, be, B, S, 64, 1);
    int32_t ids[B * S], lengths[B] = {S, S, S}, rows[M], labels[M];
    for (int i = 0; i < B * S; i++) ids[i] = 5 + i % 90;
    for (int i = 0; i < M; i++) rows[i] = 2 * i, labels[i] = ids[2 * i];
    mlm_batch b = {B, S, M, ids, NULL, lengths, rows, labels, 0, 1};
    mlm_predict_reset(pred);
    mlm_model_step_micro(&m, &b, 1.0f / M);
    double N = B * S, Mp = 64;   // masked rows padded to the backend's 64
    double gemm = 6 * N * L * (4.0 * d * d + 2.0 * d * I) + 6 * Mp * ((double)d * d + (double)d * V);
    double attention = 14.0 * L * B * H * S * S * 64;   // dh 16 computed as 64 columns
    mlm_op_cost all = mlm_predict_get(pred, NULL, NULL);
    cr_expect_eq(all.flops, gemm + attention, "%.0f FLOPs, by hand %.0f", all.flops, gemm + attention);
    mlm_optim_config o = cfg.optim;
    mlm_predict_reset(pred);
    mlm_optim_step(&m, &o, 1, 1e-3f);
    size_t n = m.lay.num_params;
    mlm_op_cost opt = mlm_predict_get(pred, NULL, NULL);
    // sum of squares (the gradients in, a double per block of 2048 out; the partials
    // in, the norm out), two AdamW calls that zero the gradients they read, and no
    // separate zeroing pass
    double P = ceil(n / 2048.0);
    double bytes = (n * 4.0 + P * 8) + (P * 8 + 4) + n * (4 * 4 + 4 * 4 + 2.0);
    cr_expect_eq(opt.bytes, bytes, "optimizer: %.0f bytes, by hand %.0f", opt.bytes, bytes);
    cr_expect_eq(mlm_predict_get(pred, "adamw", NULL).calls, 2);
    cr_expect_eq(mlm_predict_get(pred, "zero", NULL).calls, 0);
    cr_expect_eq(opt.launches, 4, "sum of squares (2 kernels) and AdamW (2 calls): %d launches", (int)opt.launches);
    // what the model allocated, the cuBLASLt workspace, and scratch and partials
    // buffers of one MiB each (every op of this size needs less)
    size_t state = n * (2 + 4 + 4 + 4 + 4) + 4 * sizeof(float);
    cr_expect_eq(mlm_predict_peak_bytes(pred), state + m.act_bytes + (32u << 20) + (1u << 20) + (1u << 20),
                 "peak %zu", mlm_predict_peak_bytes(pred));
    mlm_model_destroy(&m);
}

Test(predict, launches_cost_without_graphs) {
    mlm_ceilings c = mlm_ceilings_h100();
    mlm_predict *off;
    mlm_backend *eager = mlm_predict_backend(&c, 0, &off);
    char *x = be->alloc(be, 1 << 20, "test"), *y = eager->alloc(eager, 1 << 20, "test");
    be->layernorm_bwd(be, x, (float *)x, (float *)x, x, x, (float *)x, (float *)x, x, 64, 32);
    eager->layernorm_bwd(eager, y, (float *)y, (float *)y, y, y, (float *)y, (float *)y, y, 64, 32);
    mlm_op_cost on = mlm_predict_get(pred, "layernorm_bwd", NULL), eg = mlm_predict_get(off, "layernorm_bwd", NULL);
    cr_expect_eq(on.launches, 2, "the rows kernel and the partials' finish");
    cr_expect_float_eq(eg.seconds - on.seconds, 2 * c.launch_s, 1e-12);
    be->free(be, x);
    eager->free(eager, y);
    eager->destroy(eager);
    mlm_predict_free(off);
}
