/*
 * Data-parallel training on the CPU with MPI (dist.h): two ranks with half the
 * micro-batch end at the weights of one rank with the whole batch, having read
 * disjoint halves of every global batch; a killed or hung rank ends the job with an
 * error naming it within a bounded time and leaves the last checkpoint loadable;
 * resuming with another world size and a batch that does not split over the ranks
 * fail with exit 2; one rank through MPI (MLM_DIST_FORCE) is bit-identical to a plain
 * run. Also the gradient buckets partition the parameter buffer.
 *
 * The mpirun tests skip when mpirun is not installed or this build has no MPI. Each
 * rank uses one thread (2 ranks on 2 cores).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

/* The training device: cpu here; test_dist_emu builds this file again with "cuda",
 * the emulated CUDA backend and NCCL (tests/emu). */
#ifndef DIST_DEVICE
#define DIST_DEVICE "cpu"
#endif
#ifndef DIST_RANK_ENV      // more NAME=value for every rank (the emulator's device count)
#define DIST_RANK_ENV ""
#endif
#include "mlm/config.h"
#include "mlm/dist.h"
#include "mlm/log.h"
#include "mlm/fileio.h"
#include "mlm/model.h"
#include "mlm/safetensors.h"

static char out[1 << 16];

/* Dropout on (the defaults), constant lr. */
static const char *SMALL =
    "[model]\nhidden_size = 32\nnum_layers = 2\nnum_heads = 2\nintermediate_size = 64\nmax_position = 128\n"
    "[data]\ntrain = " SAMPLE "/train.shard\nval = " SAMPLE "/val.shard\nvocab = " SAMPLE "/vocab.txt\n"
    "[train]\nmicro_batch = 4\nbatch = 8\nsteps = 5\nlog_every = 1\neval_steps = 2\nthreads = 1\n"
    "out_dir = run\n"
    "[optim]\nlr = 1e-3\nwarmup_steps = 0\nschedule = constant\n";

static void need_mpi(void) {
    if (!mlm_dist_have_mpi()) cr_skip_test("this build has no MPI (meson setup -Ddist=enabled)");
    if (system("command -v mpirun >/dev/null 2>&1") != 0)
        cr_skip_test("mpirun is not installed: apt-get install openmpi-bin libopenmpi-dev");
}

/* `mpirun -np np mlmgpu train --config small.ini --device cpu EXTRA` in tmpdir with
 * env (NAME=value ...) exported to the ranks; returns the exit code, *secs the time. */
static int train_mpi(int np, const char *env, const char *extra, double *secs) {
    char cmd[4096], exports[1024] = "";
    char all[1024];
    snprintf(all, sizeof all, "%s %s", DIST_RANK_ENV, env);
    char *copy = strdup(all), *save = NULL;
    for (char *v = strtok_r(copy, " ", &save); v; v = strtok_r(NULL, " ", &save))
        snprintf(exports + strlen(exports), sizeof exports - strlen(exports), " -x %s", v);
    free(copy);
    snprintf(cmd, sizeof cmd,
             "cd %s && OMP_NUM_THREADS=1 OMPI_MCA_btl_vader_single_copy_mechanism=none timeout 120 mpirun "
             "--oversubscribe --allow-run-as-root --bind-to none -np %d -x OMP_NUM_THREADS "
             "-x OMPI_MCA_btl_vader_single_copy_mechanism%s %s train --config small.ini --device " DIST_DEVICE " %s",
             tmpdir, np, exports, MLM_BIN, extra);
    double t0 = mlm_now_s();
    int rc = run_shell(cmd, out, sizeof out);
    if (secs) *secs = mlm_now_s() - t0;
    return rc;
}

/* Reads `step S rank R pos P sample I` lines; fills rank[s][p] and sample[s][p]. */
static void read_data_log(const char *name, int steps, int batch, int rank[][8], long sample[][8]) {
    char path[256], line[256];
    tmp_path(path, sizeof path, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    for (int s = 0; s < steps; s++)
        for (int p = 0; p < batch; p++) rank[s][p] = -1;
    int st, r, pos;
    long smp;
    while (fgets(line, sizeof line, f)) {
        cr_assert_eq(sscanf(line, "step %d rank %d pos %d sample %ld", &st, &r, &pos, &smp), 4, "%s", line);
        cr_assert(st >= 1 && st <= steps && pos >= 0 && pos < batch, "%s", line);
        cr_expect_eq(rank[st - 1][pos], -1, "step %d position %d read twice", st, pos);
        rank[st - 1][pos] = r;
        sample[st - 1][pos] = smp;
    }
    fclose(f);
}

TestSuite(dist, .init = make_tmpdir, .fini = rm_tmpdir, .timeout = 240);

Test(dist, buckets_partition_the_parameters) {
    mlm_config cfg;
    mlm_config_defaults(&cfg);
    cfg.model.num_layers = 3;
    mlm_layout lay;
    mlm_layout_init(&lay, &cfg.model);
    mlm_grad_bucket b[8];
    int n = mlm_grad_buckets(&lay, b, 8);
    cr_assert_eq(n, 5);
    // every element in exactly one range
    unsigned char *seen = calloc(lay.num_params, 1);
    size_t total = 0;
    for (int k = 0; k < n; k++) {
        size_t elems = 0;
        for (int i = 0; i < b[k].nranges; i++) {
            for (size_t e = b[k].r[i].offset; e < b[k].r[i].offset + b[k].r[i].count; e++) {
                cr_assert(e < lay.num_params);
                cr_assert_eq(seen[e], 0, "element %zu in two buckets", e);
                seen[e] = 1;
            }
            elems += b[k].r[i].count;
        }
        cr_expect_eq(elems, b[k].elems);
        total += elems;
    }
    cr_expect_eq(total, lay.num_params);
    free(seen);
    // backward order: head (no word embeddings), layers 2, 1, 0, then the embeddings
    size_t wte = mlm_offset(&lay, MLM_T_WTE, 0), dec_b = mlm_offset(&lay, MLM_T_DEC_B, 0);
    cr_expect_eq(b[0].r[b[0].nranges - 1].offset + b[0].r[b[0].nranges - 1].count, lay.num_params,
                 "the head bucket ends with the decoder bias");
    cr_expect(b[0].r[0].offset != wte && b[0].r[b[0].nranges - 1].offset <= dec_b);
    for (int l = 0; l < 3; l++) {
        const mlm_grad_bucket *bl = &b[3 - l];
        cr_expect_eq(bl->r[0].offset, mlm_offset(&lay, MLM_T_QKV_W, l), "bucket %d starts with layer %d", 3 - l, l);
        cr_expect_eq(bl->nranges, 12);
    }
    cr_expect_eq(b[4].r[0].offset, wte, "the embeddings come last");
    cr_expect_eq(b[4].nranges, 2, "wte|wpe|wtt and the LayerNorm merge into two ranges");
}

Test(dist, two_ranks_match_one_rank) {
    need_mpi();
    write_file("small.ini", SMALL);
    char args[512];
    snprintf(args, sizeof args,
             "train --config small.ini --device " DIST_DEVICE " --set train.out_dir=one --set train.micro_batch=8");
    cr_assert_eq(run_mlmgpu("OMP_NUM_THREADS=1 MLM_DEBUG_DATA_LOG=one.log", args, out, sizeof out), 0, "%s", out);
    double secs;
    int rc = train_mpi(2, "MLM_DEBUG_DATA_LOG=two.log", "--set train.out_dir=two", &secs);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_expect_lt(secs, 60, "2 ranks took %.1f s", secs);
    cr_expect(strstr(out, "data parallel: 2 ranks"), "%s", out);
    cr_expect(strstr(out, "step      5/5"), "%s", out);
    char worst[128] = "";
    double rel = max_rel_diff("one/checkpoints/step_0000005/model.safetensors",
                              "two/checkpoints/step_0000005/model.safetensors", worst, sizeof worst);
    cr_expect_lt(rel, 1e-5, "max relative difference %.3g in %s", rel, worst);
    // disjoint halves, together the global batch, the same samples as one rank read
    int r1[5][8], r2[5][8];
    long s1[5][8], s2[5][8];
    read_data_log("one.log", 5, 8, r1, s1);
    read_data_log("two.log", 5, 8, r2, s2);
    for (int s = 0; s < 5; s++)
        for (int p = 0; p < 8; p++) {
            cr_expect_eq(r1[s][p], 0, "one rank: step %d position %d", s + 1, p);
            cr_expect_eq(r2[s][p], p / 4, "two ranks: step %d position %d read by rank %d", s + 1, p, r2[s][p]);
            cr_expect_eq(s2[s][p], s1[s][p], "step %d position %d: sample %ld vs %ld", s + 1, p, s2[s][p], s1[s][p]);
        }
    char state[256], *text, err[512];
    size_t len;
    tmp_path(state, sizeof state, "two/checkpoints/latest/trainer_state.json");
    cr_assert_eq(mlm_read_file(state, &text, &len, err, sizeof err), 0, "%s", err);
    cr_expect(strstr(text, "\"world_size\":\t2"), "%s", text);
    free(text);
}

Test(dist, one_rank_through_mpi_is_bit_identical) {
    need_mpi();
    write_file("small.ini", SMALL);
    cr_assert_eq(run_mlmgpu("OMP_NUM_THREADS=1", "train --config small.ini --device " DIST_DEVICE " --set train.out_dir=plain",
                            out, sizeof out), 0, "%s", out);
    // MLM_DIST_FORCE: the multi-rank code path (broadcasts, buckets, watchdog) on one rank
    int rc = train_mpi(1, "MLM_DIST_FORCE=1", "--set train.out_dir=mpi", NULL);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "data parallel: 1 ranks"), "%s", out);
    char a[256], b[256], *x, *y, err[512];
    size_t na, nb;
    tmp_path(a, sizeof a, "plain/checkpoints/latest/model.safetensors");
    tmp_path(b, sizeof b, "mpi/checkpoints/latest/model.safetensors");
    cr_assert_eq(mlm_read_file(a, &x, &na, err, sizeof err), 0, "%s", err);
    cr_assert_eq(mlm_read_file(b, &y, &nb, err, sizeof err), 0, "%s", err);
    cr_expect(na == nb && memcmp(x, y, na) == 0, "weights differ");
    free(x);
    free(y);
}

/* The checkpoint of step 2 is there, whole, and scores with `mlmgpu eval`. */
static void expect_step_2_loadable(void) {
    char link[256], target[64] = "";
    tmp_path(link, sizeof link, "run/checkpoints/latest");
    cr_assert_gt(readlink(link, target, sizeof target - 1), 0, "no checkpoint");
    cr_expect_str_eq(target, "step_0000002");
    int rc = run_mlmgpu("", "eval --model run/checkpoints/latest --data " SAMPLE "/val.shard --steps 1 "
                        "--micro-batch 4 --device cpu", out, sizeof out);
    cr_expect_eq(rc, 0, "the last checkpoint does not load: %s", out);
}

/* Two ranks with a fault (env) at step 3 and a checkpoint every 2 steps: the job
 * must fail, by itself (not the 120 s timeout), in under a minute. */
static void faulty_job(const char *env, const char *timeout_s) {
    need_mpi();
    write_file("small.ini", SMALL);
    double secs;
    char extra[256];
    snprintf(extra, sizeof extra, "--set train.checkpoint_every=2 --set dist.timeout_s=%s", timeout_s);
    int rc = train_mpi(2, env, extra, &secs);
    cr_expect_neq(rc, 0, "%s", out);
    cr_expect_neq(rc, 124, "mpirun hung: %s", out);
    cr_expect_lt(secs, 60, "took %.1f s", secs);
}

Test(dist, killed_rank_ends_the_job) {
    faulty_job("MLM_FAULT_KILL_RANK=1 MLM_FAULT_KILL_STEP=3", "10");
    // mpirun sees the death first, or else the watchdog names the rank that did not come
    cr_expect(strstr(out, "process rank 1") || strstr(out, "rank(s) 1 did not reach"),
              "the failure does not name rank 1: %s", out);
    expect_step_2_loadable();
}

Test(dist, hung_rank_is_named_after_the_timeout) {
    faulty_job("MLM_FAULT_HANG_RANK=1 MLM_FAULT_HANG_STEP=3", "5");
    cr_expect(strstr(out, "step 3: rank(s) 1 did not reach the"), "%s", out);
    cr_expect(strstr(out, "timeout_s = 5 s"), "%s", out);
    expect_step_2_loadable();
}

Test(dist, resume_needs_the_same_world_size) {
    need_mpi();
    write_file("small.ini", SMALL);
    cr_assert_eq(run_mlmgpu("", "train --config small.ini --device " DIST_DEVICE " --set train.steps=2", out, sizeof out), 0,
                 "%s", out);
    int rc = train_mpi(2, "", "--set train.steps=4 --resume auto", NULL);
    cr_expect_eq(rc, 2, "%s", out);
    cr_expect(strstr(out, "written by a job of 1 rank(s) but this job has 2"), "%s", out);
}

/* Two ranks with env and extra arguments exit 2 with message before any step. */
static void expect_refused_start(const char *env, const char *extra, const char *message) {
    need_mpi();
    write_file("small.ini", SMALL);
    int rc = train_mpi(2, env, extra, NULL);
    cr_expect_eq(rc, 2, "%s", out);
    cr_expect(strstr(out, message), "%s", out);
    cr_expect(strstr(out, "step ") == NULL, "work started: %s", out);
}

/* The start-up limit is read before MPI starts; a value that is not a whole number
 * of seconds stops every rank at once instead of falling back to 300 s. */
Test(dist, a_bad_init_timeout_is_refused) {
    expect_refused_start("MLM_DIST_INIT_TIMEOUT_S=5m", "", "MLM_DIST_INIT_TIMEOUT_S=5m: expected a whole number of seconds");
}

Test(dist, batch_must_split_over_the_ranks) {
    expect_refused_start("", "--set train.batch=4", "train.batch 4 is not a multiple of train.micro_batch 4 x 2 ranks");
}
