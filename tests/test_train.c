/*
 * The mlmgpu command and the training loop end to end: argument and config errors
 * exit 2 naming the culprit before any work, the run directory gets the resolved
 * config and metrics.jsonl, a tiny model's loss falls on the committed sample of
 * real English text, and a diverging run stops naming the step.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <cblas.h>
#undef I   // complex.h's imaginary unit, pulled in by cblas.h

#include "common.h"
#include "mlm/backend.h"
#include "mlm/config.h"

/* mlmgpu ARGS in tmpdir, output into out. */
static int run(const char *args, char *out, size_t n) { return run_mlmgpu("", args, out, n); }

static char out[1 << 16];

TestSuite(cli, .init = make_tmpdir, .fini = rm_tmpdir);

Test(cli, version_and_help) {
    cr_expect_eq(run("--version", out, sizeof out), 0);
    cr_expect(strstr(out, "mlmgpu 0.") != NULL, "%s", out);
    cr_expect_eq(run("train --help", out, sizeof out), 0);
    cr_expect(strstr(out, "--config FILE") != NULL, "%s", out);
    cr_expect_eq(run("frobnicate", out, sizeof out), 2);
    cr_expect(strstr(out, "unknown command 'frobnicate'") != NULL, "%s", out);
}

Test(cli, argument_errors_exit_2) {
    cr_expect_eq(run("train", out, sizeof out), 2);
    cr_expect(strstr(out, "--config FILE is required") != NULL, "%s", out);
    cr_expect_eq(run("train --config", out, sizeof out), 2);
    cr_expect(strstr(out, "--config needs a value") != NULL, "%s", out);
    write_file("ok.ini", "[train]\nsteps = 1\n");
    cr_expect_eq(run("train --config ok.ini --device tpu", out, sizeof out), 2);
    cr_expect(strstr(out, "--device 'tpu'") != NULL, "%s", out);
    cr_expect_eq(run("train --config ok.ini --bogus", out, sizeof out), 2);
    cr_expect(strstr(out, "unknown argument '--bogus'") != NULL, "%s", out);
    // the integer options of every command: the option, the value and the range named
    const char *bad[][2] = {{"eval --model m --data d --steps 0", "--steps '0': expected a whole number from 1"},
                            {"fill-mask --model m --top-k 2x \"a [MASK]\"", "--top-k '2x'"},
                            {"prepare --input a --vocab v --out o --seq-len 99999999999", "--seq-len '99999999999'"},
                            {"vocab --input a --out o --vocab-size -3", "--vocab-size '-3'"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(run(bad[i][0], out, sizeof out), 2, "%s", bad[i][0]);
        cr_expect(strstr(out, bad[i][1]) != NULL, "%s: %s", bad[i][0], out);
    }
}

Test(cli, config_errors_exit_2_before_work) {
    write_file("heads.ini", "[model]\nhidden_size = 100\nnum_heads = 3\n");
    cr_expect_eq(run("train --config heads.ini", out, sizeof out), 2);
    cr_expect(strstr(out, "heads.ini:") && strstr(out, "hidden_size") , "%s", out);
    cr_expect(strstr(out, "step") == NULL, "work started: %s", out);
    write_file("batch.ini", "[train]\nmicro_batch = 3\nbatch = 10\n");
    cr_expect_eq(run("train --config batch.ini", out, sizeof out), 2);
    cr_expect(strstr(out, "batch.ini:3: train.batch") != NULL, "%s", out);
    write_file("mask.ini", "[data]\nmask_prob = 1.5\n");
    cr_expect_eq(run("train --config mask.ini", out, sizeof out), 2);
    cr_expect(strstr(out, "mask.ini:2: data.mask_prob") != NULL, "%s", out);
    write_file("key.ini", "[model]\nhidden = 4\n");
    cr_expect_eq(run("train --config key.ini", out, sizeof out), 2);
    cr_expect(strstr(out, "key.ini:2: model.hidden") != NULL, "%s", out);
    cr_expect_eq(run("train --config nope.ini", out, sizeof out), 2);
    cr_expect(strstr(out, "nope.ini") != NULL, "%s", out);
    write_file("ok.ini", "[train]\nsteps = 1\n");
    cr_expect_eq(run("train --config ok.ini --set train.steps=x", out, sizeof out), 2);
    cr_expect(strstr(out, "--set train.steps=x") != NULL, "%s", out);
}

Test(cli, cuda_device_not_available) {
    write_file("ok.ini", "[data]\ntrain = " SAMPLE "/train.shard\n");
    cr_expect_eq(run("train --config ok.ini --device cuda", out, sizeof out), 2);
    cr_expect(strstr(out, "--device cuda") != NULL, "%s", out);
}

Test(cli, data_errors_exit_2) {
    write_file("nodata.ini", "[train]\nsteps = 1\n");
    cr_expect_eq(run("train --config nodata.ini --device cpu", out, sizeof out), 2);
    cr_expect(strstr(out, "data.train") != NULL, "%s", out);
    write_file("bad.shard", "this is not a shard, it is a text file long enough to hold a header....\n");
    write_file("badshard.ini", "[data]\ntrain = bad.shard\n");
    cr_expect_eq(run("train --config badshard.ini --device cpu", out, sizeof out), 2);
    cr_expect(strstr(out, "bad.shard: not an mlmgpu shard") != NULL, "%s", out);
    write_file("seq.ini", "[data]\ntrain = " SAMPLE "/train.shard\nseq_len = 64\n");
    cr_expect_eq(run("train --config seq.ini --device cpu", out, sizeof out), 2);
    cr_expect(strstr(out, "seq_len is 128 but data.seq_len is 64") != NULL, "%s", out);
    write_file("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nother\n");
    write_file("vocab.ini", "[data]\ntrain = " SAMPLE "/train.shard\nvocab = vocab.txt\n");
    cr_expect_eq(run("train --config vocab.ini --device cpu", out, sizeof out), 2);
    cr_expect(strstr(out, "another vocabulary") != NULL, "%s", out);
}

/* A small model on the sample text: 40 steps. */
static const char *TINY =
    "[model]\nhidden_size = 64\nnum_layers = 2\nnum_heads = 2\nintermediate_size = 256\n"
    "[data]\ntrain = " SAMPLE "/train.shard\nval = " SAMPLE "/val.shard\nvocab = " SAMPLE "/vocab.txt\n"
    "[train]\nmicro_batch = 8\nbatch = 16\nsteps = 40\nlog_every = 5\neval_every = 20\neval_steps = 2\n"
    "threads = 2\nout_dir = run\n"
    "[optim]\nlr = 2e-3\nwarmup_steps = 5\n";

/* Reads "loss" of the train lines of metrics.jsonl into losses; returns how many. */
static int read_losses(const char *split, double *losses, int max) {
    char path[256], line[1024], key[64];
    snprintf(path, sizeof path, "%s/run/metrics.jsonl", tmpdir);
    snprintf(key, sizeof key, "\"split\":\"%s\"", split);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no metrics.jsonl");
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        if (!strstr(line, key)) continue;
        const char *needed[] = {"\"step\":", "\"loss\":", "\"acc\":"};
        for (int i = 0; i < 3; i++) cr_assert(strstr(line, needed[i]), "%s lacks %s", line, needed[i]);
        if (!strcmp(split, "train"))
            cr_assert(strstr(line, "\"lr\":") && strstr(line, "\"grad_norm\":") && strstr(line, "\"tokens_per_s\":"),
                      "%s", line);
        losses[n++] = atof(strstr(line, "\"loss\":") + 7);
    }
    fclose(f);
    return n;
}

TestSuite(train, .init = make_tmpdir, .fini = rm_tmpdir);

Test(train, loss_falls_on_real_text, .timeout = 300) {
    write_file("tiny.ini", TINY);
    int rc = run("train --config tiny.ini --device cpu", out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "device: cpu") && strstr(out, "step     40/40") && strstr(out, "tok/s") &&
              strstr(out, "ETA"), "%s", out);
    double train[16], val[4];
    int n = read_losses("train", train, 16), nv = read_losses("val", val, 4);
    cr_assert_eq(n, 8, "train lines: %d", n);
    cr_assert_eq(nv, 2, "val lines: %d", nv);
    cr_expect_gt(train[0], 9.5, "initial loss %f should be near ln(30522) = 10.3", train[0]);
    cr_expect_lt(train[n - 1], train[0] - 2.0, "loss did not fall: %f -> %f", train[0], train[n - 1]);
    cr_expect_lt(val[1], train[0] - 2.0, "validation loss %f", val[1]);
    // the saved config reads back
    char path[256], err[1024];
    snprintf(path, sizeof path, "%s/run/config.ini", tmpdir);
    mlm_config c;
    cr_assert_eq(mlm_config_load(&c, path, NULL, 0, err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.model.hidden_size, 64);
    cr_expect_eq(c.train.steps, 40);
}

/* "OpenBLAS NAME kernels" of the device line in out, NAME into name. */
static int blas_kernels(const char *out, char *name, size_t n) {
    const char *p = strstr(out, "OpenBLAS ");
    return p && sscanf(p, "OpenBLAS %63s kernels", name) == 1 && n >= 64;
}

/* OpenBLAS 0.3.21 takes CPU models newer than itself (Emerald Rapids, model 207) for
 * a Prescott and runs SSE3 kernels, 5x slower than the AVX-512 ones it has: the CPU
 * backend must run the kernels the CPU's features call for, and leave a user's
 * OPENBLAS_CORETYPE alone. */
Test(train, cpu_runs_the_blas_kernels_the_cpu_supports, .timeout = 120) {
    if (getenv("OPENBLAS_CORETYPE")) cr_skip_test("OPENBLAS_CORETYPE is set in the test's environment");
    cr_expect_null(mlm_cpu_blas_core_choice("SkylakeX"));
    cr_expect_null(mlm_cpu_blas_core_choice("Haswell"));
    write_file("tiny.ini", TINY);
    const char *cmd = "train --config tiny.ini --device cpu --set train.steps=1 --set train.eval_every=0 --overwrite";
    int rc = run(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    char name[64];
    cr_assert(blas_kernels(out, name, sizeof name), "no OpenBLAS kernels named: %s", out);
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const char *old[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai",
                         "Coppermine", "Northwood", "Banias", "Sandybridge"};
    if (avx2)
        for (size_t i = 0; i < sizeof old / sizeof old[0]; i++)
            cr_expect(strcasecmp(name, old[i]), "an AVX2%s CPU runs OpenBLAS's %s kernels: %s",
                      avx512 ? "/AVX-512" : "", name, out);
    cr_expect_str_eq(mlm_cpu_blas_core_choice("Prescott") ? mlm_cpu_blas_core_choice("Prescott") : "none",
                     avx512 ? "SkylakeX" : avx2 ? "Haswell" : "none");
    // the user's choice stands, even an old one
    rc = run_mlmgpu("OPENBLAS_CORETYPE=Prescott", cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(blas_kernels(out, name, sizeof name), "no OpenBLAS kernels named: %s", out);
    cr_expect_str_eq(name, "Prescott", "%s", out);
    const char *want = mlm_cpu_blas_core_choice(openblas_get_corename());
    if (!want) return;   // the library picked well here: nothing is re-run
    // where it did not: the re-run follows a symlink of another name; and where argv[0]
    // is not the program (as under valgrind) it re-runs nothing and says so
    char link[512], shell[1024];
    tmp_path(link, sizeof link, "other-name");
    cr_assert_eq(symlink(MLM_BIN, link), 0);
    snprintf(shell, sizeof shell, "cd %s && ./other-name %s", tmpdir, cmd);
    rc = run_shell(shell, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_expect(blas_kernels(out, name, sizeof name) && !strcmp(name, want), "%s", out);
    snprintf(shell, sizeof shell, "cd %s && bash -c 'exec -a not-the-program %s %s'", tmpdir, MLM_BIN, cmd);
    rc = run_shell(shell, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "could not restart with OPENBLAS_CORETYPE="), "%s", out);
    cr_expect(blas_kernels(out, name, sizeof name) && strcmp(name, want), "%s", out);
}

/* The end-of-run predictions show a validation sequence a person can read: in a
 * split of mostly code-like documents, the prose one. */
Test(train, predictions_show_a_prose_sequence, .timeout = 120) {
    char corpus[1 << 15] = "";
    for (int i = 0; i < 40; i++) {
        // documents of 60-80 tokens: each fills whole 32-token sequences
        for (int k = 0; k < 2; k++)
            strcat(corpus, i % 8 == 5 ? "the people of the town went to the market to buy bread and milk and "
                                        "they talked about the weather and the river and the old bridge. "
                                      : "x = ( 1 + 2 ) ; { y [ 3 ] = 4 ; } z = x * 5 ; w = ( 6 ) ; { 7 ; 8 } ; ");
        strcat(corpus, "\n\n");
    }
    write_file("corpus.txt", corpus);
    int rc = run("prepare --input corpus.txt --vocab " SAMPLE "/vocab.txt --seq-len 32 --out pdata "
                 "--val-fraction 0.5", out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    write_file("p.ini", "[model]\nhidden_size = 32\nnum_layers = 1\nnum_heads = 2\nintermediate_size = 64\n"
                        "max_position = 32\n[data]\ntrain = pdata/train\nval = pdata/val\nvocab = pdata/vocab.txt\n"
                        "seq_len = 32\n[train]\nmicro_batch = 4\nbatch = 4\nsteps = 2\nout_dir = run\n");
    rc = run("train --config p.ini --device cpu", out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    const char *p = strstr(out, "predictions on a validation sequence");
    cr_assert(p, "no predictions shown: %s", out);
    int shown = 0;
    for (const char *line = strstr(p, "\n"); line && *line; line = strstr(line + 1, "\n")) {
        const char *end = strchr(line + 1, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (!memmem(line, len, "*[MASK]*", 8)) continue;
        shown++;
        cr_expect(!memmem(line, len, ";", 1) && !memmem(line, len, "{", 1), "a code-like sequence shown: %.*s",
                  (int)len, line);
    }
    cr_expect_gt(shown, 0, "%s", p);
}

Test(train, divergence_stops_naming_the_step, .timeout = 120) {
    write_file("tiny.ini", TINY);
    int rc = run("train --config tiny.ini --device cpu --set optim.lr=1e30 --set optim.warmup_steps=0 "
                 "--set optim.grad_clip=0", out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "error: step ") && strstr(out, "not finite") , "%s", out);
}

Test(train, too_big_a_micro_batch_names_what_fits) {
    write_file("big.ini", TINY);
    int rc = run("train --config big.ini --device cpu --set train.micro_batch=200000 --set train.batch=200000",
                 out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "out of cpu memory: micro_batch 200000 x 128 tokens needs") &&
              strstr(out, "train.micro_batch = "), "%s", out);
    cr_expect(strstr(out, "step ") == NULL, "training started: %s", out);
}
