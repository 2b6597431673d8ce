/*
 * The training loop on the CUDA backend, on the emulated device (tests/emu): what
 * tests/gpu/test_cuda_train.c checks on a GPU, at a size the emulator runs in
 * seconds. mlmgpu_emu is mlmgpu linked with the emulated backend; each run is six
 * steps of a 2-layer model on the committed sample, two micro-batches per step,
 * validation and a checkpoint every third step:
 *  - the micro-batches replay as CUDA graphs, and launching every op instead
 *    (MLM_CUDA_GRAPHS=0) gives the same losses, bit for bit;
 *  - stopping at step 3 and resuming gives the same losses and the same weights as
 *    the run that went straight through;
 *  - the loss curve tracks the CPU backend's (the same data, masking and dropout)
 *    within 2% (bf16 against fp32).
 * The loop's statistics are read one step behind through download_start here too.
 * A bad value of a backend switch (MLM_CUDA_GRAPHS, MLM_FLASH_BWD, MLM_BIAS_GRAD,
 * MLM_GEMM_TUNE) stops mlmgpu before training starts, and MLM_GEMM_TUNE=1 reports
 * the GEMM algorithms it chose by timing.
 *
 * And a RoBERTa model (model.architecture = roberta: positions from padding_idx + 1,
 * <pad> = 1, one token type) on the CUDA backend against the CPU backend, the
 * oracle that tests/test_hf_parity.c holds to HF RobertaForMaskedLM: one training
 * micro-batch with dropout, its loss and every gradient, and the forward's logits.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "../lcg.h"
#include "mlm/backend.h"
#include "mlm/backend_cuda.h"
#include "mlm/model.h"

static char out[1 << 16];

static const char *SMALL =
    "[model]\nhidden_size = 32\nnum_layers = 2\nnum_heads = 2\nintermediate_size = 64\nmax_position = 128\n"
    "[data]\ntrain = " SAMPLE "/train.shard\nval = " SAMPLE "/val.shard\nvocab = " SAMPLE "/vocab.txt\n"
    "[train]\nmicro_batch = 4\nbatch = 8\nsteps = 6\nlog_every = 1\neval_every = 3\neval_steps = 2\n"
    "checkpoint_every = 3\nout_dir = run\n"
    "[optim]\nlr = 1e-3\nwarmup_steps = 0\nschedule = constant\n";

static int train(const char *env, const char *device, const char *extra) {
    char args[1024];
    snprintf(args, sizeof args, "train --config small.ini --device %s %s", device, extra);
    return run_mlmgpu(env, args, out, sizeof out);
}

TestSuite(cuda_train_emu, .init = make_tmpdir, .fini = rm_tmpdir, .timeout = 600);

/* A bad value of a backend switch is refused before training starts, naming the
 * variable, its value and the choices. */
Test(cuda_train_emu, a_bad_backend_setting_is_refused) {
    write_file("small.ini", SMALL);
    static const char *const cases[][2] = {
        {"MLM_BIAS_GRAD=sideways", "MLM_BIAS_GRAD=sideways: expected epilogue or colsum"},
        {"MLM_GEMM_TUNE=yes", "MLM_GEMM_TUNE=yes: expected 0 or 1"},
        {"MLM_CUDA_GRAPHS=off", "MLM_CUDA_GRAPHS=off: expected 1 or 0"},
        {"MLM_FLASH_BWD=thin", "MLM_FLASH_BWD=thin: expected narrow or wide"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_expect_eq(train(cases[i][0], "cuda", ""), 2, "%s: %s", cases[i][0], out);
        cr_expect(strstr(out, cases[i][1]), "%s", out);
        cr_expect(!strstr(out, "step "), "training started: %s", out);
    }
}

/* MLM_GEMM_TUNE=1 picks each GEMM's algorithm by timing and says what it chose at
 * the end. The emulated cuBLASLt's algorithms give the same results and its first
 * is made slow (EMU_LT_SLOW_ALGO=0): the losses are the untuned run's, bit for bit,
 * and every timed problem left the first. */
Test(cuda_train_emu, gemm_tuning_reports_its_choices) {
    write_file("small.ini", SMALL);
    cr_assert_eq(train("", "cuda", "--set train.out_dir=plain --set train.steps=3"), 0, "%s", out);
    cr_assert_eq(train("MLM_GEMM_TUNE=1 EMU_LT_SLOW_ALGO=0", "cuda", "--set train.out_dir=tuned --set train.steps=3"),
                 0, "%s", out);
    const char *line = strstr(out, "MLM_GEMM_TUNE: ");
    cr_assert(line, "no tuning report: %s", out);
    int tuned = 0, changed = -1;
    cr_expect_eq(sscanf(line, "MLM_GEMM_TUNE: %d GEMM problems timed (up to %*d algorithms each), %d run", &tuned,
                        &changed), 2, "%s", line);
    cr_expect_gt(tuned, 10, "%s", line);
    cr_expect_eq(changed, tuned, "%s", line);
    double plain[4], tuned_loss[4];
    cr_assert_eq(read_metric_losses("plain", "train", plain, 4), 3);
    cr_assert_eq(read_metric_losses("tuned", "train", tuned_loss, 4), 3);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(plain[i], tuned_loss[i], "step %d: %.6f untuned, %.6f tuned", i + 1, plain[i], tuned_loss[i]);
}

Test(cuda_train_emu, graphs_resume_and_the_cpu_curve) {
    write_file("small.ini", SMALL);
    cr_assert_eq(train("", "cuda", "--set train.out_dir=full"), 0, "%s", out);
    cr_expect(strstr(out, "device: cuda"), "%s", out);
    cr_expect(strstr(out, "replay as CUDA graphs"), "no micro-batch was recorded as a graph: %s", out);
    cr_expect(strstr(out, "val  step      3"), "no validation at step 3: %s", out);
    cr_assert_eq(train("MLM_CUDA_GRAPHS=0", "cuda", "--set train.out_dir=eager"), 0, "%s", out);
    cr_expect(!strstr(out, "CUDA graphs"), "%s", out);
    cr_assert_eq(train("", "cuda", "--set train.out_dir=split --set train.steps=3"), 0, "%s", out);
    cr_assert_eq(train("", "cuda", "--set train.out_dir=split --resume auto"), 0, "%s", out);
    cr_expect(strstr(out, "resumed from split/checkpoints/latest at step 3"), "%s", out);
    cr_assert_eq(train("", "cpu", "--set train.out_dir=cpu"), 0, "%s", out);

    double full[8], eager[8], split[8], cpu[8];
    cr_assert_eq(read_metric_losses("full", "train", full, 8), 6);
    cr_assert_eq(read_metric_losses("eager", "train", eager, 8), 6);
    cr_assert_eq(read_metric_losses("split", "train", split, 8), 6);
    cr_assert_eq(read_metric_losses("cpu", "train", cpu, 8), 6);
    for (int i = 0; i < 6; i++) {
        cr_expect_eq(full[i], eager[i], "step %d: graphs %.6f, each op launched %.6f", i + 1, full[i], eager[i]);
        cr_expect_eq(full[i], split[i], "step %d: straight %.6f, resumed %.6f", i + 1, full[i], split[i]);
        cr_expect_lt(fabs(full[i] - cpu[i]) / cpu[i], 0.02, "step %d: cuda %.4f, cpu %.4f", i + 1, full[i], cpu[i]);
    }
    cr_expect(same_tmp_files("full/checkpoints/step_0000006/model.safetensors",
                             "split/checkpoints/step_0000006/model.safetensors"), "resumed weights differ");
    cr_expect(same_tmp_files("full/checkpoints/step_0000006/optimizer.safetensors",
                             "split/checkpoints/step_0000006/optimizer.safetensors"), "resumed AdamW moments differ");
}

/* ---- RoBERTa on the CUDA backend against the CPU backend ---- */

static const mlm_model_config roberta = {
    .architecture = MLM_ARCH_ROBERTA, .vocab_size = 101, .hidden_size = 64, .num_layers = 2, .num_heads = 4,
    .intermediate_size = 128, .max_position = 16 + 2, .type_vocab_size = 1, .layer_norm_eps = 1e-5f,
    .hidden_dropout = 0.1f, .attention_dropout = 0.1f, .init_range = 0.02f,
};
enum { RB = 3, RS = 16, RM = 7 };

static uint64_t rng = 2024;


static double rel_l2(const float *ref, const float *x, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* One micro-step (dropout on) and a forward from params: loss sum, gradients, logits. */
static void roberta_step(mlm_backend *be, const float *params, const mlm_batch *b, float *loss, float *grads,
                         float *logits) {
    mlm_model m;
    mlm_model_create(&m, &roberta, be, RB, RS, RM, 77);
    mlm_model_set_params(&m, params);
    mlm_model_step_micro(&m, b, 1.0f / RM);
    float stats[4];
    be->download(be, stats, m.stats, sizeof stats);
    be->download(be, grads, m.grads, m.lay.num_params * sizeof(float));
    *loss = stats[0];
    mlm_model_forward(&m, b, logits);
    mlm_model_destroy(&m);
}

Test(cuda_train_emu, roberta_step_matches_cpu) {
    char err[256];
    mlm_backend *gpu = mlm_backend_cuda(0, err, sizeof err), *cpu = mlm_backend_cpu(2);
    cr_assert(gpu, "emulated CUDA backend: %s", err);
    mlm_layout lay;
    mlm_layout_init(&lay, &roberta);
    // <s> words </s> <pad>...: <s> 0, <pad> 1, </s> 2, <mask> 4, words from 5
    static const int32_t lengths[RB] = {16, 9, 3}, rows[RM] = {1, 5, 9, 14, 16 + 2, 16 + 7, 32 + 1};
    int32_t ids[RB * RS], labels[RM];
    for (int r = 0; r < RB * RS; r++) {
        int s = r % RS, n = lengths[r / RS];
        ids[r] = s >= n ? 1 : s == 0 ? 0 : s == n - 1 ? 2 : 5 + (int32_t)(lcg_next(&rng) % 96);
    }
    for (int i = 0; i < RM; i++) {
        labels[i] = ids[rows[i]];
        ids[rows[i]] = 4;
    }
    mlm_batch b = {RB, RS, RM, ids, NULL, lengths, rows, labels, 3, 5};
    size_t n = lay.num_params, V = (size_t)roberta.vocab_size;
    float *params = malloc(n * sizeof(float)), *gc = malloc(n * sizeof(float)), *gg = malloc(n * sizeof(float));
    float *lc = malloc(RM * V * sizeof(float)), *lg = malloc(RM * V * sizeof(float)), loss_c, loss_g;
    for (int id = 0; id < MLM_T_COUNT; id++) {   // spread enough that attention is far from uniform
        const mlm_tensor_info *t = &lay.t[id];
        float center = t->init == MLM_INIT_ONE ? 1.0f : 0.0f;
        for (size_t i = 0; i < t->numel; i++) params[t->offset + i] = bf16r(center + 0.1f * lcg_uniform(&rng));
    }
    roberta_step(cpu, params, &b, &loss_c, gc, lc);
    roberta_step(gpu, params, &b, &loss_g, gg, lg);
    cr_expect(isfinite(loss_g) && fabs(loss_g - loss_c) < 1e-2 * fabs(loss_c), "loss: cuda %.6g, cpu %.6g", loss_g,
              loss_c);
    double e = rel_l2(lc, lg, RM * V);
    cr_expect(e < 2e-2, "logits: ||cuda - cpu|| / ||cpu|| = %.3g", e);
    for (int id = 0; id < MLM_T_COUNT; id++) {
        const mlm_tensor_info *t = &lay.t[id];
        e = rel_l2(gc + t->offset, gg + t->offset, t->numel);
        cr_expect(e < 2e-2, "gradient of %s: ||cuda - cpu|| / ||cpu|| = %.3g, limit 2e-2", t->name, e);
    }
    // positions 2 .. S+1 are used; rows 0 (never) and 1 (padding_idx) get no gradient
    const float *wpe = gg + lay.t[MLM_T_WPE].offset;
    size_t d = (size_t)roberta.hidden_size, nonzero = 0;
    for (size_t i = 0; i < 2 * d; i++) nonzero += wpe[i] != 0.0f;
    cr_expect_eq(nonzero, 0, "%zu gradient elements of position rows 0 and 1 are not zero", nonzero);
    for (size_t i = 2 * d; i < 3 * d; i++) nonzero += wpe[i] != 0.0f;
    cr_expect_gt(nonzero, 0, "position row 2 (the first token's) has no gradient");
    free(params), free(gc), free(gg), free(lc), free(lg);
    gpu->destroy(gpu);
    cpu->destroy(cpu);
}
