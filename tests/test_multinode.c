/*
 * Multi-node training as a cluster runs it (issue 15): test hosts made as Linux
 * network namespaces on a bridge (tests/netns/hosts.sh, addresses 198.18.0.I, never
 * routed), mpirun started on host 1 with a hostfile and an rsh agent that enters a
 * host's namespace (tests/netns/rsh_agent.sh), MPI over TCP on eth0.
 *
 * - 2 hosts x 1 rank and 2 hosts x 2 ranks train the weights of one process (< 1e-5);
 * - `--resume auto` across hosts continues bit-identically;
 * - a host that cannot be reached fails the start at once, naming it;
 * - a host cut off (its link down) or killed (kill -9 of all its processes) mid-run:
 *   rank 0 names the lost ranks, writes the last completed step as a checkpoint
 *   marked as written on failure, every mlmgpu process is gone within timeout_s plus
 *   a bounded grace, and after the fault `--resume auto` ends at the weights and
 *   moments of an uninterrupted run, bit for bit;
 * - a link that drops for well under timeout_s costs nothing: same weights, exit 0.
 *
 * Root only (namespaces, a bridge): elsewhere, or where they cannot be made, every
 * case reports itself skipped with the reason. Every test tears down its hosts and
 * every process it started, by pid, whatever happens (the suite's .fini).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "mlm/dist.h"
#include "mlm/fileio.h"
#include "mlm/log.h"
#include "mlm/safetensors.h"

#define NETNS MLM_SOURCE_ROOT "/tests/netns"
#define TIMEOUT_S 3        // [dist] timeout_s of the fault cases
#define EXIT_BOUND_S 15.0  // after the cut: the 1.5 s pause + timeout_s + 3 s arrival grace + 5 s abort grace + slack

static char out[1 << 16];
static char tag[16];       // this test's hosts (hosts.sh TAG), empty when none were made
static pid_t job = -1;     // a job started in the background (start_job)

/* Dropout on (the defaults), constant lr: steps of a few tens of ms. */
static const char *SMALL =
    "[model]\nhidden_size = 32\nnum_layers = 2\nnum_heads = 2\nintermediate_size = 64\nmax_position = 128\n"
    "[data]\ntrain = " SAMPLE "/train.shard\nval = " SAMPLE "/val.shard\nvocab = " SAMPLE "/vocab.txt\n"
    "[train]\nmicro_batch = 4\nbatch = 8\nsteps = 8\nlog_every = 1\neval_every = 0\neval_steps = 1\nthreads = 1\n"
    "out_dir = run\n"
    "[optim]\nlr = 1e-3\nwarmup_steps = 0\nschedule = constant\n";

static void setup(void) {
    make_tmpdir();
    write_file("small.ini", SMALL);
}

/* Whatever happened: the background job (its process group, by pid), then every
 * process of the hosts (by pid) with the hosts and the bridge. */
static void teardown(void) {
    if (job > 0) {
        kill(-job, SIGKILL);
        kill(job, SIGKILL);
        waitpid(job, NULL, 0);
        job = -1;
    }
    if (tag[0]) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, NETNS "/hosts.sh down %s >/dev/null 2>&1", tag);
        if (system(cmd) != 0) fprintf(stderr, "test_multinode: teardown of hosts %s failed\n", tag);
        tag[0] = 0;
    }
    rm_tmpdir();
}

TestSuite(multinode, .init = setup, .fini = teardown, .timeout = 150);

/* Hosts left by a test process that was killed (a Criterion timeout skips .fini):
 * tags n<pid> whose process is gone. */
static void sweep_leftovers(void) {
    char list[8192], cmd[256];
    if (run_shell("ip netns list 2>/dev/null", list, sizeof list) != 0) return;
    for (char *save = NULL, *l = strtok_r(list, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int pid;
        char dash;
        if (sscanf(l, "mhn%d%c", &pid, &dash) != 2 || dash != '-' || kill(pid, 0) == 0 || errno != ESRCH) continue;
        snprintf(cmd, sizeof cmd, NETNS "/hosts.sh down n%d >/dev/null 2>&1", pid);
        if (system(cmd) != 0) fprintf(stderr, "test_multinode: could not remove the leftover hosts n%d\n", pid);
    }
}

/* Makes n test hosts, or skips the test saying why they cannot be made. */
static void need_hosts(int n) {
    if (geteuid() != 0) cr_skip_test("not root: test hosts are network namespaces (ip netns add)");
    if (!mlm_dist_have_mpi()) cr_skip_test("this build has no MPI (meson setup -Ddist=enabled)");
    if (system("command -v mpirun >/dev/null 2>&1") != 0)
        cr_skip_test("mpirun is not installed: apt-get install openmpi-bin libopenmpi-dev");
    if (system("command -v ip >/dev/null 2>&1") != 0) cr_skip_test("no ip command: apt-get install iproute2");
    sweep_leftovers();
    snprintf(tag, sizeof tag, "n%d", (int)(getpid() % 10000000));
    char cmd[512];
    snprintf(cmd, sizeof cmd, NETNS "/hosts.sh down %s >/dev/null 2>&1; " NETNS "/hosts.sh up %s %d", tag, tag, n);
    int rc = run_shell(cmd, out, sizeof out);
    if (rc == 3) {
        tag[0] = 0;
        cr_skip_test("test hosts cannot be made here: %s", out);
    }
    cr_assert_eq(rc, 0, "hosts.sh up: %s", out);
}

static void hosts(const char *what, int host) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, NETNS "/hosts.sh %s %s %d", what, tag, host);
    cr_assert_eq(run_shell(cmd, out, sizeof out), 0, "hosts.sh %s %d: %s", what, host, out);
}

/* The mpirun command for hosts x ppn ranks, started on host 1, with env (NAME=value
 * ...) exported to the ranks, output to log (NULL: to the caller). */
static void mpirun_cmd(char *cmd, size_t n, int nhosts, int ppn, const char *env, const char *extra,
                       const char *log) {
    char hostfile[256] = "", exports[1024] = "";
    for (int i = 1; i <= nhosts; i++)
        snprintf(hostfile + strlen(hostfile), sizeof hostfile - strlen(hostfile), "198.18.0.%d slots=%d\n", i, ppn);
    write_file("hosts", hostfile);
    char *copy = strdup(env), *save = NULL;
    for (char *v = strtok_r(copy, " ", &save); v; v = strtok_r(NULL, " ", &save))
        snprintf(exports + strlen(exports), sizeof exports - strlen(exports), " -x %s", v);
    free(copy);
    char redirect[300] = "";
    if (log) snprintf(redirect, sizeof redirect, " >%s 2>&1", log);
    snprintf(cmd, n,
             "cd %s && MLM_NETNS_TAG=%s exec timeout 90 " NETNS "/hosts.sh exec %s 1 mpirun --allow-run-as-root "
             "-np %d --hostfile hosts --map-by ppr:%d:node --bind-to none --mca plm_rsh_agent " NETNS
             "/rsh_agent.sh --mca btl tcp,self --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 "
             "-x OMP_NUM_THREADS=1%s %s train --config small.ini --device cpu %s%s",
             tmpdir, tag, tag, nhosts * ppn, ppn, exports, MLM_BIN, extra, redirect);
}

/* Runs the job to its end: the exit code, *secs its time. */
static int run_job(int nhosts, int ppn, const char *env, const char *extra, double *secs) {
    char cmd[4096];
    mpirun_cmd(cmd, sizeof cmd, nhosts, ppn, env, extra, NULL);
    double t0 = mlm_now_s();
    int rc = run_shell(cmd, out, sizeof out);
    if (secs) *secs = mlm_now_s() - t0;
    return rc;
}

/* Starts the job in the background (its own process group), output to tmpdir/log. */
static void start_job(int nhosts, int ppn, const char *env, const char *extra) {
    char cmd[4096];
    mpirun_cmd(cmd, sizeof cmd, nhosts, ppn, env, extra, "log");
    job = fork();
    cr_assert_geq(job, 0, "fork: %s", strerror(errno));
    if (job == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
}

/* Waits (at most secs) for rank 0 to log step `step` of out_dir run. */
static void wait_for_step(int step, double secs) {
    char path[256], *text, err[512], key[64];
    size_t len;
    tmp_path(path, sizeof path, "run/metrics.jsonl");
    snprintf(key, sizeof key, "\"step\":%d,", step);
    for (double t0 = mlm_now_s(); mlm_now_s() - t0 < secs; usleep(20000)) {
        int status;
        if (waitpid(job, &status, WNOHANG) == job) {
            job = -1;
            char *log = read_tmp("log", NULL);
            cr_assert_fail("the job ended (status %d) before step %d: %s", status, step, log);
        }
        if (mlm_read_file(path, &text, &len, err, sizeof err) != 0) continue;
        int found = strstr(text, key) != NULL;
        free(text);
        if (found) return;
    }
    cr_assert_fail("step %d was not logged within %.0f s", step, secs);
}

/* The number of mlmgpu processes on hosts 1..nhosts. */
static int mlmgpu_processes(int nhosts) {
    int count = 0;
    for (int h = 1; h <= nhosts; h++) {
        char cmd[256], pids[4096];
        snprintf(cmd, sizeof cmd, "ip netns pids mh%s-%d", tag, h);
        if (run_shell(cmd, pids, sizeof pids) != 0) continue;
        for (char *save = NULL, *p = strtok_r(pids, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
            char path[64], comm[64] = "";
            snprintf(path, sizeof path, "/proc/%d/comm", atoi(p));
            FILE *f = fopen(path, "r");
            if (!f) continue;
            if (fgets(comm, sizeof comm, f) && strncmp(comm, "mlmgpu", 6) == 0) count++;
            fclose(f);
        }
    }
    return count;
}

/* Seconds until no mlmgpu process is left on the hosts (fails after bound). */
static double wait_mlmgpu_gone(int nhosts, double t0, double bound) {
    while (mlmgpu_processes(nhosts) > 0) {
        if (mlm_now_s() - t0 > bound) {
            char cmd[256];
            snprintf(cmd, sizeof cmd, "cat %s/log", tmpdir);
            run_shell(cmd, out, sizeof out);
            cr_assert_fail("%d mlmgpu process(es) still running %.0f s after the fault: %s", mlmgpu_processes(nhosts),
                           bound, out);
        }
        usleep(50000);
    }
    return mlm_now_s() - t0;
}

/* Ends what is left of the background job (mpirun may wait for a lost daemon): the
 * job's process group, then every process of the hosts, by pid. */
static void end_job(int nhosts) {
    kill(-job, SIGKILL);
    kill(job, SIGKILL);
    waitpid(job, NULL, 0);
    job = -1;
    for (int h = 1; h <= nhosts; h++) hosts("kill", h);
}


/* Weights and AdamW moments of two checkpoints, byte for byte. */
static void expect_same_bytes(const char *a, const char *b) {
    static const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int i = 0; i < 2; i++) {
        char pa[256], pb[256];
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        cr_expect(same_tmp_files(pa, pb), "%s differs between %s and %s", files[i], a, b);
    }
}

Test(multinode, hosts_train_as_one_process) {
    need_hosts(2);
    char worst[128] = "";
    cr_assert_eq(run_mlmgpu("OMP_NUM_THREADS=1", "train --config small.ini --device cpu --set train.steps=5 "
                            "--set train.micro_batch=8 --set train.out_dir=one", out, sizeof out), 0, "%s", out);
    double secs;
    int rc = run_job(2, 1, "", "--set train.steps=5 --set train.out_dir=h2x1", &secs);
    cr_assert_eq(rc, 0, "2 hosts x 1 rank: exit %d: %s", rc, out);
    cr_expect(strstr(out, "data parallel: 2 ranks (1 on this node)"), "not one rank per host: %s", out);
    cr_expect_lt(secs, 30, "2 hosts x 1 rank took %.1f s", secs);
    double rel = max_rel_diff("one/checkpoints/step_0000005/model.safetensors",
                              "h2x1/checkpoints/step_0000005/model.safetensors", worst, sizeof worst);
    cr_expect_lt(rel, 1e-5, "2 hosts x 1 rank: max relative difference %.3g in %s", rel, worst);
    rc = run_job(2, 2, "", "--set train.steps=5 --set train.micro_batch=2 --set train.out_dir=h2x2", &secs);
    cr_assert_eq(rc, 0, "2 hosts x 2 ranks: exit %d: %s", rc, out);
    cr_expect(strstr(out, "data parallel: 4 ranks (2 on this node)"), "not two ranks per host: %s", out);
    rel = max_rel_diff("one/checkpoints/step_0000005/model.safetensors",
                       "h2x2/checkpoints/step_0000005/model.safetensors", worst, sizeof worst);
    cr_expect_lt(rel, 1e-5, "2 hosts x 2 ranks: max relative difference %.3g in %s", rel, worst);
}

Test(multinode, resume_across_hosts_is_bit_identical) {
    need_hosts(2);
    int rc = run_job(2, 1, "", "--set train.steps=6 --set train.out_dir=full", NULL);
    cr_assert_eq(rc, 0, "%s", out);
    rc = run_job(2, 1, "", "--set train.steps=3", NULL);
    cr_assert_eq(rc, 0, "%s", out);
    rc = run_job(2, 1, "", "--set train.steps=6 --resume auto", NULL);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "resumed from run/checkpoints/latest at step 3"), "%s", out);
    expect_same_bytes("full/checkpoints/step_0000006", "run/checkpoints/step_0000006");
}

Test(multinode, unreachable_host_fails_at_start) {
    need_hosts(2);
    hosts("cut", 2);
    double secs;
    int rc = run_job(2, 1, "", "", &secs);
    cr_expect_neq(rc, 0, "%s", out);
    cr_expect_neq(rc, 124, "mpirun hung: %s", out);
    cr_expect_lt(secs, 20, "took %.1f s", secs);
    cr_expect(strstr(out, "198.18.0.2"), "the error does not name the host: %s", out);
    cr_expect(strstr(out, "step ") == NULL, "training started: %s", out);
}

/* Hosts that share one name (MPI's TCP links between them hang at start): the
 * start-up is bounded, and the error says what to check. */
Test(multinode, start_up_that_hangs_is_bounded) {
    need_hosts(2);
    double secs;
    setenv("MLM_NETNS_HOSTNAME", "shared", 1);
    int rc = run_job(2, 2, "MLM_DIST_INIT_TIMEOUT_S=3", "--set train.micro_batch=2", &secs);
    unsetenv("MLM_NETNS_HOSTNAME");
    cr_expect_neq(rc, 0, "%s", out);
    cr_expect_neq(rc, 124, "mpirun hung: %s", out);
    cr_expect_lt(secs, 20, "took %.1f s", secs);
    const char *ours = "MPI start-up (MPI_Init, the node split) did not complete within 3 s";
    // Open MPI's node split with two nodes of one name usually hangs, but sometimes
    // segfaults first: then the bound was not exercised, which is no pass either
    if (!strstr(out, ours) && strstr(out, "exited on signal"))
        cr_skip_test("Open MPI crashed in the node split instead of hanging (rc %d in %.1f s): the start-up "
                     "timeout was not exercised this run", rc, secs);
    cr_expect(strstr(out, ours), "%s", out);
}

/* The failure checkpoint of step 3 with its marker naming the lost ranks. */
static void expect_failure_checkpoint(const char *ranks) {
    char *state = read_tmp("run/checkpoints/latest/trainer_state.json", NULL);
    cr_expect(strstr(state, "\"step\":\t3,"), "%s", state);
    cr_expect(strstr(state, "\"written_on_failure\":\ttrue"), "%s", state);
    cr_expect(strstr(state, ranks), "not %s: %s", ranks, state);
    free(state);
    char *regular = read_tmp("run/checkpoints/step_0000002/trainer_state.json", NULL);
    cr_expect(strstr(regular, "written_on_failure") == NULL, "%s", regular);
    free(regular);
}

/* Hosts x ppn ranks, checkpoint every 2 steps; every rank pauses 1.5 s at step 4 and
 * fault(host 2) strikes then. Checks the failure path, restores host 2 with repair,
 * resumes and compares with an uninterrupted run. */
static void lost_host(int ppn, void (*fault)(void), void (*repair)(void), const char *named, const char *ranks) {
    char extra[256], resume[256], whole[256];
    snprintf(extra, sizeof extra, "--set train.checkpoint_every=2 --set dist.timeout_s=%d --set train.micro_batch=%d",
             TIMEOUT_S, 4 / ppn);
    start_job(2, ppn, "MLM_FAULT_PAUSE_STEP=4 MLM_FAULT_PAUSE_S=1.5", extra);
    wait_for_step(3, 60);
    double t0 = mlm_now_s();
    fault();
    double secs = wait_mlmgpu_gone(2, t0, EXIT_BOUND_S);
    end_job(2);
    char *log = read_tmp("log", NULL);
    // mpirun, having lost a host's daemon, may end the job and stop forwarding rank 0's
    // output before its last lines arrive (seen in one full run of the suite); the
    // checkpoint's trainer_state.json records the same facts and is checked either way
    if (strstr(log, "ORTE has lost communication") && !strstr(log, "checkpoint on failure")) {
        fprintf(stderr, "multinode: mpirun ended the job before rank 0's last lines were forwarded\n");
    } else {
        cr_expect(strstr(log, named), "the lost ranks are not named (%s): %s", named, log);
        cr_expect(strstr(log, "checkpoint on failure: run/checkpoints/step_0000003"), "%s", log);
    }
    free(log);
    expect_failure_checkpoint(ranks);
    fprintf(stderr, "multinode: every mlmgpu process gone %.1f s after the fault\n", secs);
    repair();
    snprintf(resume, sizeof resume, "--set train.checkpoint_every=2 --set train.micro_batch=%d --resume auto", 4 / ppn);
    int rc = run_job(2, ppn, "", resume, NULL);
    cr_assert_eq(rc, 0, "resume: %s", out);
    cr_expect(strstr(out, "resumed from run/checkpoints/latest at step 3"), "%s", out);
    snprintf(whole, sizeof whole, "--set train.out_dir=whole --set train.micro_batch=%d", 4 / ppn);
    rc = run_job(2, ppn, "", whole, NULL);
    cr_assert_eq(rc, 0, "uninterrupted: %s", out);
    expect_same_bytes("whole/checkpoints/step_0000008", "run/checkpoints/step_0000008");
}

static void cut_host_2(void) { hosts("cut", 2); }
static void restore_host_2(void) { hosts("restore", 2); }
static void kill_host_2(void) { hosts("kill", 2); }
static void nothing(void) {}

Test(multinode, cut_host_checkpoints_and_resumes) {
    need_hosts(2);
    // 2 x 2: rank 1 survives beside rank 0 and must not abort the job while rank 0 writes
    lost_host(2, cut_host_2, restore_host_2, "rank(s) 2, 3 did not reach the masked-token count", "[2, 3]");
}

Test(multinode, killed_host_checkpoints_and_resumes) {
    need_hosts(2);
    // mpirun loses host 2's daemon and signals rank 0; or, the watchdog names rank 1
    lost_host(1, kill_host_2, nothing, "rank(s) 1 ", "[1]");
}

Test(multinode, short_link_drop_costs_nothing) {
    need_hosts(2);
    start_job(2, 1, "MLM_FAULT_PAUSE_STEP=4 MLM_FAULT_PAUSE_S=1", "--set dist.timeout_s=5");
    wait_for_step(3, 60);
    hosts("cut", 2);
    usleep(500000);
    hosts("restore", 2);
    int status = 0;
    cr_assert_eq(waitpid(job, &status, 0), job);
    job = -1;
    char *log = read_tmp("log", NULL);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the job failed: %s", log);
    free(log);
    int rc = run_job(2, 1, "", "--set train.out_dir=whole", NULL);
    cr_assert_eq(rc, 0, "%s", out);
    expect_same_bytes("whole/checkpoints/step_0000008", "run/checkpoints/step_0000008");
}
