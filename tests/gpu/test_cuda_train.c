/*
 * The CUDA backend end to end: 200 steps of bert-tiny on the committed sample of
 * real text track the CPU backend's loss curve within 2% (the same data, masking
 * and dropout: all of it is keyed Philox), a second GPU run with the same seed
 * gives bit-identical losses, and so does a run that launches every op instead of
 * replaying CUDA graphs (MLM_CUDA_GRAPHS=0). Skipped without a usable GPU.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "mlm/backend_cuda.h"

static char out[1 << 16];

static void need_gpu(void) {
    char why[512];
    mlm_backend *be = mlm_backend_cuda(0, why, sizeof why);
    if (!be) cr_skip_test("no CUDA device: %s", why);
    be->destroy(be);
}

static void train(const char *env, const char *device, const char *run) {
    char args[1024];
    snprintf(args, sizeof args, "train --config " MLM_SOURCE_ROOT "/configs/bert-tiny.ini --device %s "
             "--set data.train=" SAMPLE "/train.shard --set data.val= --set data.vocab=" SAMPLE "/vocab.txt "
             "--set train.steps=200 --set train.log_every=10 --set train.out_dir=%s", device, run);
    int rc = run_mlmgpu(env, args, out, sizeof out);
    cr_assert_eq(rc, 0, "%s run: exit %d: %s", device, rc, out);
}

TestSuite(cuda_train, .init = make_tmpdir, .fini = rm_tmpdir, .timeout = 600);

Test(cuda_train, tracks_the_cpu_loss_curve) {
    need_gpu();
    train("", "cuda", "gpu");
    cr_expect(strstr(out, "replay as CUDA graphs"), "no CUDA graph was recorded: %s", out);
    train("", "cpu", "cpu");
    train("", "cuda", "gpu2");
    train("MLM_CUDA_GRAPHS=0", "cuda", "eager");
    cr_expect(!strstr(out, "CUDA graphs"), "MLM_CUDA_GRAPHS=0 still recorded graphs: %s", out);
    double g[32], c[32], g2[32], e[32];
    int n = read_metric_losses("gpu", "train", g, 32);
    cr_assert_eq(n, 20);
    cr_assert_eq(read_metric_losses("cpu", "train", c, 32), 20);
    cr_assert_eq(read_metric_losses("gpu2", "train", g2, 32), 20);
    cr_assert_eq(read_metric_losses("eager", "train", e, 32), 20);
    for (int i = 0; i < n; i++) {
        cr_expect_lt(fabs(g[i] - c[i]) / c[i], 0.02, "step %d: GPU loss %.4f, CPU %.4f", 10 * (i + 1), g[i], c[i]);
        cr_expect_eq(g[i], g2[i], "step %d: GPU reruns differ (%.6f, %.6f)", 10 * (i + 1), g[i], g2[i]);
        cr_expect_eq(g[i], e[i], "step %d: graph replay %.6f, eager launches %.6f", 10 * (i + 1), g[i], e[i]);
    }
    cr_expect_lt(g[n - 1], g[0] - 1.0, "the GPU loss did not fall: %.4f -> %.4f", g[0], g[n - 1]);
}
