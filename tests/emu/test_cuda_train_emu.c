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
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"

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

static int same_files(const char *a, const char *b) {
    char cmd[1024], o[4096];
    snprintf(cmd, sizeof cmd, "cmp %s/%s %s/%s", tmpdir, a, tmpdir, b);
    return run_shell(cmd, o, sizeof o) == 0;
}

TestSuite(cuda_train_emu, .init = make_tmpdir, .fini = rm_tmpdir, .timeout = 600);

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
    cr_expect(same_files("full/checkpoints/step_0000006/model.safetensors",
                         "split/checkpoints/step_0000006/model.safetensors"), "resumed weights differ");
    cr_expect(same_files("full/checkpoints/step_0000006/optimizer.safetensors",
                         "split/checkpoints/step_0000006/optimizer.safetensors"), "resumed AdamW moments differ");
}
