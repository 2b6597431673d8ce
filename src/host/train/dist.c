/*
 * The comm layer (include/mlm/dist.h): the job from MPI, collectives under a
 * watchdog, and the bucketed gradient all-reduce (NCCL on CUDA, MPI on the CPU).
 *
 * The watchdog. Every collective is non-blocking underneath (MPI_I*, NCCL on its own
 * stream) and the host polls it against a deadline of [dist] timeout_s. Alongside,
 * each rank posts an arrival notice {collective number, step} to rank 0, so that
 * when the deadline passes rank 0 can name the ranks that never reached the
 * collective; the other ranks wait a little longer (ARRIVAL_GRACE_S) so that rank 0's
 * message is the one printed. Then MPI_Abort (after ncclCommAbort) ends the job. A
 * rank that dies outright is usually reported first by mpirun itself.
 *
 * A failed collective on rank 0 first runs the trainer's failure hook (it writes the
 * last completed step as a checkpoint): rank 0 tells the other ranks it is doing so
 * (TAG_HOLD), and a rank whose own deadline passes meanwhile waits for rank 0's
 * second notice (at most another timeout_s) instead of aborting the job under it.
 * MPI_Abort need not return, nor end the job: mpirun may wait for a daemon on a host
 * that cannot be reached. So before it an alarm is armed that ends the process with
 * _exit after ABORT_GRACE_S, and every surviving process exits non-zero within
 * timeout_s (+ ARRIVAL_GRACE_S, + the checkpoint's time) + ABORT_GRACE_S.
 *
 * Without MPI in the build, or without an MPI launcher, the world has one rank and
 * every collective returns at once.
 */
#include "mlm/dist.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mlm/log.h"

#ifdef MLM_HAVE_MPI
#include <mpi.h>
#endif
#ifdef MLM_HAVE_NCCL
#include "mlm/dist_nccl.h"
#endif

#define ARRIVAL_GRACE_S 3.0
#define ABORT_GRACE_S 5     // seconds MPI_Abort may take before the process ends itself
#define SIGNAL_WAIT_S 0.5   // a signal came: how long rank 0 still waits for ranks that have not arrived
#define MPI_CHUNK (1u << 30)   // elements per MPI call (counts are int)

static struct {
    int rank, world, local_rank, local_size;
    int mpi;                 // MPI was initialised here
    int active;              // collectives go through MPI/NCCL: world > 1 or MLM_DIST_FORCE
    double timeout_s;
    int step;
    int seq;                 // watched collectives so far (the same on every rank)
    mlm_backend *be;
    int cuda;                // be is the CUDA backend
#ifdef MLM_HAVE_MPI
    MPI_Comm comm;           // MPI_COMM_WORLD's duplicate, errors returned
#endif
#ifdef MLM_HAVE_NCCL
    mlm_nccl *nccl;
#endif
    mlm_dist_failure_fn fail_hook;   // rank 0: run before a failed collective aborts the job
    void *fail_ctx;
} g = {.world = 1, .local_size = 1, .timeout_s = 300.0};

/* ---------------------------------------------------------------- the job */

int mlm_dist_rank(void) { return g.rank; }
int mlm_dist_world(void) { return g.world; }
int mlm_dist_local_rank(void) { return g.local_rank; }
int mlm_dist_local_size(void) { return g.local_size; }
int mlm_dist_active(void) { return g.active; }
void mlm_dist_set_timeout(double seconds) { g.timeout_s = seconds; }
void mlm_dist_set_step(int step) { g.step = step; }
void mlm_dist_set_failure_hook(mlm_dist_failure_fn fn, void *ctx) { g.fail_hook = fn, g.fail_ctx = ctx; }

static volatile sig_atomic_t signalled;   // SIGINT/SIGTERM reached this process
void mlm_dist_signal_received(void) { signalled = 1; }

int mlm_dist_have_mpi(void) {
#ifdef MLM_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

int mlm_dist_cpu_threads(int configured) {
    if (configured > 0 || g.local_size <= 1) return configured;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores / g.local_size > 1 ? (int)(cores / g.local_size) : 1;
}

static volatile sig_atomic_t abort_code = MLM_EXIT_RUNTIME;

/* The alarm after MPI_Abort: the launcher did not end this process in time. */
static void on_abort_alarm(int sig) {
    static const char msg[] = "mlmgpu: error: the job was not ended within the abort grace; this process exits\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);   // async-signal-safe; nothing to do on failure
    (void)w, (void)sig;
    _exit(abort_code);
}

/* Ends the whole job with code: ncclCommAbort and MPI_Abort under an alarm that ends
 * this process after ABORT_GRACE_S should either hang or the launcher not kill it;
 * _exit should MPI_Abort return (exit handlers could block on MPI). */
static _Noreturn void end_job(int code) {
    fflush(stdout);
    fflush(stderr);
    abort_code = code;
    signal(SIGALRM, on_abort_alarm);
    alarm(ABORT_GRACE_S);
#ifdef MLM_HAVE_NCCL
    mlm_nccl_abort(g.nccl);
#endif
#ifdef MLM_HAVE_MPI
    if (g.mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    _exit(code);
}

static void print_error(const char *fmt, va_list ap) {
    if (g.world > 1) fprintf(stderr, "mlmgpu: error: [rank %d of %d] ", g.rank, g.world);
    else fputs("mlmgpu: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
}

/* Prints "mlmgpu: error: [rank r] MSG" and ends the whole job with code (MPI_Abort;
 * exit when this is the only rank). */
static _Noreturn __attribute__((format(printf, 2, 3))) void abort_job(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_error(fmt, ap);
    va_end(ap);
    if (!g.mpi) exit(code);
    end_job(code);
}

_Noreturn void mlm_dist_die_all(int code, const char *fmt, ...) {
    if (g.rank == 0) {
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        mlm_die(code, "%s", msg);
    }
    // mpirun ends the job when rank 0 exits; should rank 0 not have failed, give up later
    double deadline = mlm_now_s() + g.timeout_s;
    while (mlm_now_s() < deadline) sleep(1);
    exit(code);
}

/* The launcher's world size from the environment: > 0 from OpenMPI or a PMI
 * launcher, -1 under PMIx without a size, 0 when no launcher started us. */
static int launcher_size(const char **var) {
    const char *names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = getenv(names[i]);
        if (v && atoi(v) > 0) {
            *var = names[i];
            return atoi(v);
        }
    }
    *var = "PMIX_RANK";
    return getenv("PMIX_RANK") ? -1 : 0;
}

#ifdef MLM_HAVE_MPI
#define INIT_TIMEOUT_S 300   // MPI start-up, before [dist] timeout_s is known (MLM_DIST_INIT_TIMEOUT_S)
static char init_alarm_msg[512];

/* MPI_Init and the node split are blocking: a host that MPI cannot reach (the wrong
 * interface, a firewall) or nodes that share one host name would hang them for good. */
static void on_init_alarm(int sig) {
    ssize_t w = write(STDERR_FILENO, init_alarm_msg, strlen(init_alarm_msg));   // async-signal-safe
    (void)w, (void)sig;
    _exit(MLM_EXIT_RUNTIME);
}

static _Noreturn __attribute__((format(printf, 2, 3))) void fail_collective(const char *missing, const char *fmt,
                                                                           ...);

static void mpi_check(int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fail_collective("", "step %d: %s failed: %s (did a rank die?)", g.step, call, msg);
}
#endif

void mlm_dist_init(int *argc, char ***argv) {
    const char *var;
    int size = launcher_size(&var);
#ifndef MLM_HAVE_MPI
    const char *pmix = getenv("PMIX_RANK");
    if (size > 1 || (size < 0 && pmix && atoi(pmix) != 0))
        mlm_die(MLM_EXIT_INPUT,
                "launched as one of several ranks (%s=%s) but this build of mlmgpu has no MPI; install "
                "libopenmpi-dev and rebuild (meson setup build -Ddist=enabled), or run without mpirun",
                var, getenv(var));
    (void)argc, (void)argv;
#else
    if (size == 0) return;   // no launcher: one rank, no MPI
    int provided = 0;
    const char *it = getenv("MLM_DIST_INIT_TIMEOUT_S");
    unsigned init_s = INIT_TIMEOUT_S;
    if (it && *it) {   // a whole number of seconds, checked before MPI starts
        char *end;
        errno = 0;
        long v = strtol(it, &end, 10);
        if (errno || *end || v < 1 || v > 86400)
            mlm_die(MLM_EXIT_INPUT, "MLM_DIST_INIT_TIMEOUT_S=%s: expected a whole number of seconds from 1 to 86400",
                    it);
        init_s = (unsigned)v;
    }
    const char *rank = getenv("OMPI_COMM_WORLD_RANK") ? getenv("OMPI_COMM_WORLD_RANK") : getenv("PMIX_RANK");
    snprintf(init_alarm_msg, sizeof init_alarm_msg,
             "mlmgpu: error: [rank %s] MPI start-up (MPI_Init, the node split) did not complete within %u s "
             "(MLM_DIST_INIT_TIMEOUT_S): a host that MPI cannot reach (check btl_tcp_if_include / "
             "oob_tcp_if_include, firewalls), or nodes that share one host name\n", rank ? rank : "?", init_s);
    signal(SIGALRM, on_init_alarm);
    alarm(init_s);
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        mlm_die(MLM_EXIT_RUNTIME, "MPI_Init_thread failed (launched by mpirun: %s is set)", var);
    g.mpi = 1;
    MPI_Comm_dup(MPI_COMM_WORLD, &g.comm);
    MPI_Comm_set_errhandler(g.comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(g.comm, &g.rank);
    MPI_Comm_size(g.comm, &g.world);
    MPI_Comm node;
    mpi_check(MPI_Comm_split_type(g.comm, MPI_COMM_TYPE_SHARED, g.rank, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    MPI_Comm_rank(node, &g.local_rank);
    MPI_Comm_size(node, &g.local_size);
    MPI_Comm_free(&node);
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    const char *force = getenv("MLM_DIST_FORCE");
    g.active = g.world > 1 || (force && atoi(force) != 0);
    if (provided < MPI_THREAD_FUNNELED && g.rank == 0)
        mlm_log("warning: the MPI library provides thread level %d, below MPI_THREAD_FUNNELED", provided);
#endif
}

void mlm_dist_finalize(void) {
    mlm_dist_detach();
#ifdef MLM_HAVE_MPI
    if (g.mpi) {
        MPI_Comm_free(&g.comm);
        MPI_Finalize();
        g.mpi = 0;
    }
#endif
}

/* Sleeps s seconds, or less when a signal comes. */
static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

void mlm_dist_fault_point(int step) {
    const char *kr = getenv("MLM_FAULT_KILL_RANK"), *ks = getenv("MLM_FAULT_KILL_STEP");
    const char *hr = getenv("MLM_FAULT_HANG_RANK"), *hs = getenv("MLM_FAULT_HANG_STEP");
    if (kr && ks && atoi(kr) == g.rank && atoi(ks) == step) {
        fprintf(stderr, "mlmgpu: fault injection: rank %d kills itself at step %d\n", g.rank, step);
        raise(SIGKILL);
    }
    const char *ps = getenv("MLM_FAULT_PAUSE_STEP"), *pt = getenv("MLM_FAULT_PAUSE_S");
    if (ps && atoi(ps) == step)   // every rank: a window for the multinode tests to cut a link in
        sleep_s(pt ? atof(pt) : 2.0);   // a signal (the launcher ending the job) ends it early
    if (hr && hs && atoi(hr) == g.rank && atoi(hs) == step) {
        fprintf(stderr, "mlmgpu: fault injection: rank %d stops answering at step %d\n", g.rank, step);
        for (;;) pause();
    }
}

/* ---------------------------------------------------------------- the watchdog */

#ifdef MLM_HAVE_MPI
/* Polls one collective: 1 done, 0 not yet, -1 failed (reason in err). */
typedef int (*poll_fn)(void *arg, char *err, size_t len);

static void nap(long spins) {
    if (spins < 64) return;   // a fast collective: spin
    sleep_s(spins < 2000 ? 20e-6 : 500e-6);
}

typedef struct { MPI_Request *r; int n; } mpi_reqs;

static int poll_mpi(void *arg, char *err, size_t len) {
    mpi_reqs *q = arg;
    int done = 0, rc = MPI_Testall(q->n, q->r, &done, MPI_STATUSES_IGNORE);
    if (rc == MPI_SUCCESS) return done;
    char msg[MPI_MAX_ERROR_STRING];
    int n = 0;
    MPI_Error_string(rc, msg, &n);
    return mlm_fail(err, len, "%s", msg);
}

enum { TAG_ARRIVAL = 0x6d6c, TAG_HOLD = 0x6d6d };
enum { NOTE_HOLD = 1, NOTE_DONE = 2 };   // rank 0's TAG_HOLD notices: writing the checkpoint, done

/* Rank 0's notice (TAG_HOLD) to every other rank: sent, never waited for (a peer
 * may be gone); note stays valid, being static. */
static void tell_others(const int *note) {
    MPI_Request req;
    for (int r = 1; r < g.world; r++)
        if (MPI_Isend(note, 1, MPI_INT, r, TAG_HOLD, g.comm, &req) == MPI_SUCCESS) MPI_Request_free(&req);
}

/* A collective failed or timed out (missing: the ranks that never reached it, "" when
 * not known): prints the error; rank 0 runs the failure hook between two notices to
 * the other ranks (hold, then done), so that none aborts the job under it; ends the job. */
static _Noreturn __attribute__((format(printf, 2, 3))) void fail_collective(const char *missing, const char *fmt,
                                                                           ...) {
    va_list ap;
    va_start(ap, fmt);
    print_error(fmt, ap);
    va_end(ap);
    if (g.rank == 0 && g.fail_hook) {
        static const int hold = NOTE_HOLD, done = NOTE_DONE;
        tell_others(&hold);
        mlm_dist_failure_fn hook = g.fail_hook;
        g.fail_hook = NULL;   // a failure inside the hook does not run it again
        hook(g.fail_ctx, missing);
        tell_others(&done);
        for (int i = 0; i < 100; i++) {   // let the done notices leave (MPI moves them inside MPI calls)
            int flag;
            MPI_Iprobe(MPI_ANY_SOURCE, TAG_HOLD, g.comm, &flag, MPI_STATUS_IGNORE);
            sleep_s(1e-3);
        }
    }
    end_job(MLM_EXIT_RUNTIME);
}

/* A rank other than 0 whose deadline passed: when rank 0 has said it is writing the
 * failure checkpoint, waits for its done notice (or rank 0's MPI_Abort), at most
 * timeout_s, so as not to abort the job while rank 0 writes. */
static void wait_for_rank0_hook(void) {
    int flag = 0, note = 0;
    if (g.rank == 0 || MPI_Iprobe(0, TAG_HOLD, g.comm, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag) return;
    MPI_Recv(&note, 1, MPI_INT, 0, TAG_HOLD, g.comm, MPI_STATUS_IGNORE);
    double until = mlm_now_s() + g.timeout_s;
    while (note != NOTE_DONE && mlm_now_s() < until) {
        if (MPI_Iprobe(0, TAG_HOLD, g.comm, &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag)
            MPI_Recv(&note, 1, MPI_INT, 0, TAG_HOLD, g.comm, MPI_STATUS_IGNORE);
        sleep_s(0.01);
    }
}

/* Arrival notices {collective number, step} of the ranks to rank 0. */
typedef struct {
    MPI_Request *req;
    int n;
    int note[2];          // what this rank sends
    int (*got)[2];        // rank 0: what rank r + 1 sent
} arrivals;

static void post_arrivals(arrivals *a) {
    memset(a, 0, sizeof *a);
    if (g.world == 1) return;
    a->note[0] = g.seq, a->note[1] = g.step;
    a->n = g.rank == 0 ? g.world - 1 : 1;
    a->req = mlm_xmalloc(a->n * sizeof *a->req, "arrival notices");
    if (g.rank != 0) {
        mpi_check(MPI_Isend(a->note, 2, MPI_INT, 0, TAG_ARRIVAL, g.comm, &a->req[0]), "MPI_Isend");
        return;
    }
    a->got = mlm_xmalloc(a->n * sizeof *a->got, "arrival notices");
    for (int r = 1; r < g.world; r++)
        mpi_check(MPI_Irecv(a->got[r - 1], 2, MPI_INT, r, TAG_ARRIVAL, g.comm, &a->req[r - 1]), "MPI_Irecv");
}

/* Rank 0: the ranks whose notice has not come, as "1, 3". */
static void missing_ranks(arrivals *a, char *out, size_t n) {
    out[0] = 0;
    for (int r = 1; r < g.world && g.rank == 0; r++) {
        int got = 0;
        MPI_Test(&a->req[r - 1], &got, MPI_STATUS_IGNORE);
        if (!got) snprintf(out + strlen(out), n - strlen(out), "%s%d", out[0] ? ", " : "", r);
    }
}

/* Rank 0, all notices in: every rank must be at the same collective. */
static void check_arrivals(arrivals *a, const char *what) {
    for (int r = 1; r < g.world && g.rank == 0; r++)
        if (a->got[r - 1][0] != g.seq)
            abort_job(MLM_EXIT_RUNTIME,
                      "step %d: rank %d is at collective %d (its step %d) while rank 0 is at %d (%s): the ranks run "
                      "different code paths",
                      g.step, r, a->got[r - 1][0], a->got[r - 1][1], g.seq, what);
    free(a->req);
    free(a->got);
}

/* Waits for poll to say done, within the timeout; on failure or timeout aborts the
 * job with a message naming the step, `what` and (rank 0) the missing ranks. */
static void watch(const char *what, poll_fn poll, void *arg) {
    char err[512] = "";
    arrivals a;
    g.seq++;
    post_arrivals(&a);
    mpi_reqs notices = {a.req, a.n};
    double deadline = mlm_now_s() + g.timeout_s + (g.rank ? ARRIVAL_GRACE_S : 0);
    int done = 0, arrived = 0;
    char who[256] = "";
    double sig_seen = 0;
    for (long spins = 0; !(done && arrived); spins++) {
        if (!done && (done = poll(arg, err, sizeof err)) < 0) {
            missing_ranks(&a, who, sizeof who);
            fail_collective(who, "step %d: %s failed: %s (did a rank die?%s%s)", g.step, what, err,
                            who[0] ? " not heard from: rank(s) " : "", who);
        }
        if (!arrived && (arrived = poll_mpi(&notices, err, sizeof err)) < 0) {
            missing_ranks(&a, who, sizeof who);
            fail_collective(who, "step %d: %s: arrival notice failed: %s", g.step, what, err);
        }
        if (done && arrived) break;
        // mpirun signals the ranks when it lost a host's daemon (its processes killed),
        // then SIGKILLs them 1 s later: a rank still missing soon after is taken as lost
        if (signalled && g.rank == 0 && sig_seen == 0) sig_seen = mlm_now_s();
        if (sig_seen > 0 && mlm_now_s() > sig_seen + SIGNAL_WAIT_S) {
            missing_ranks(&a, who, sizeof who);
            if (who[0])
                fail_collective(who,
                                "step %d: a signal came while rank(s) %s had not reached the %s (the launcher "
                                "ending the job after losing them?); aborting the job", g.step, who, what);
            sig_seen = -1;   // every rank is here: the collective finishes, the signal is handled after it
        }
        if (mlm_now_s() > deadline) {
            missing_ranks(&a, who, sizeof who);
            if (who[0])
                fail_collective(who,
                                "step %d: rank(s) %s did not reach the %s within [dist] timeout_s = %g s (dead, hung "
                                "or far slower); aborting the job",
                                g.step, who, what, g.timeout_s);
            wait_for_rank0_hook();
            fail_collective("", "step %d: the %s did not complete within [dist] timeout_s = %g s%s; aborting the job",
                            g.step, what, g.timeout_s,
                            g.rank == 0 ? " although every rank reached it" : " (rank 0 names missing ranks)");
        }
        nap(spins);
    }
    check_arrivals(&a, what);
}
#endif

/* ---------------------------------------------------------------- host collectives */

#ifdef MLM_HAVE_MPI
/* Starts one MPI call per chunk of n elements of `type`, size bytes each. */
typedef int (*mpi_chunk_fn)(void *p, int count, MPI_Request *req);

static void mpi_chunked(void *buf, size_t n, size_t size, mpi_chunk_fn start, const char *what) {
    int nreq = (int)((n + MPI_CHUNK - 1) / MPI_CHUNK);
    MPI_Request *reqs = mlm_xcalloc(nreq ? nreq : 1, sizeof *reqs, "MPI requests");
    for (int i = 0; i < nreq; i++) {
        size_t at = (size_t)i * MPI_CHUNK, cnt = n - at < MPI_CHUNK ? n - at : MPI_CHUNK;
        mpi_check(start((char *)buf + at * size, (int)cnt, &reqs[i]), what);
    }
    mpi_reqs q = {reqs, nreq};
    watch(what, poll_mpi, &q);
    free(reqs);
}

static int start_sum_double(void *p, int count, MPI_Request *req) {
    return MPI_Iallreduce(MPI_IN_PLACE, p, count, MPI_DOUBLE, MPI_SUM, g.comm, req);
}
static int start_bcast_bytes(void *p, int count, MPI_Request *req) {
    return MPI_Ibcast(p, count, MPI_BYTE, 0, g.comm, req);
}
static int start_bcast_float(void *p, int count, MPI_Request *req) {
    return MPI_Ibcast(p, count, MPI_FLOAT, 0, g.comm, req);
}
#endif

void mlm_dist_allreduce_host(double *v, int n, const char *what) {
#ifdef MLM_HAVE_MPI
    if (g.active) mpi_chunked(v, (size_t)n, sizeof *v, start_sum_double, what);
#endif
    (void)v, (void)n, (void)what;
}

void mlm_dist_bcast_host(void *buf, size_t bytes, const char *what) {
#ifdef MLM_HAVE_MPI
    if (g.active) mpi_chunked(buf, bytes, 1, start_bcast_bytes, what);
#endif
    (void)buf, (void)bytes, (void)what;
}

/* ---------------------------------------------------------------- backend memory */

#ifdef MLM_HAVE_NCCL
static int poll_nccl(void *arg, char *err, size_t len) { return mlm_nccl_poll(arg, err, len); }

/* Queues op (0 sum, 1 broadcast) over n ranges of base on the NCCL stream. */
static void nccl_launch(int op, float *base, const mlm_range *r, int n, const char *what) {
    float *bufs[MLM_BUCKET_MAX_RANGES];
    size_t counts[MLM_BUCKET_MAX_RANGES];
    char err[512];
    for (int i = 0; i < n; i++) bufs[i] = base + r[i].offset, counts[i] = r[i].count;
    if (mlm_nccl_launch(g.nccl, op, bufs, counts, n, g.timeout_s, err, sizeof err) != 0)
        abort_job(MLM_EXIT_RUNTIME, "step %d: %s: %s", g.step, what, err);
}
#endif

void mlm_dist_bcast_f32(mlm_backend *be, float *buf, size_t n, const char *what) {
    if (!g.active) return;
    if (be != g.be) abort_job(MLM_EXIT_RUNTIME, "%s: the comm layer is not attached to this backend", what);
#ifdef MLM_HAVE_NCCL
    if (g.cuda) {
        mlm_range r = {0, n};
        nccl_launch(1, buf, &r, 1, what);
        watch(what, poll_nccl, g.nccl);
        return;
    }
#endif
#ifdef MLM_HAVE_MPI
    be->sync(be);   // host memory on the CPU backend: finish what is queued
    mpi_chunked(buf, n, sizeof(float), start_bcast_float, what);
#endif
    (void)buf, (void)n;
}

void mlm_dist_attach(mlm_backend *be) {
    g.be = be;
    g.cuda = strcmp(be->name, "cuda") == 0;
    if (!g.active) return;
    double on_cuda = g.cuda;
    mlm_dist_allreduce_host(&on_cuda, 1, "device check");
    if (on_cuda != 0 && on_cuda != g.world)
        mlm_dist_die_all(MLM_EXIT_INPUT,
                         "%g of %d ranks train on CUDA and the others on the CPU; give every rank a GPU (rank uses "
                         "device = local rank) or pass --device cpu",
                         on_cuda, g.world);
    if (!g.cuda) return;
#ifdef MLM_HAVE_NCCL
    char id[MLM_NCCL_ID_BYTES] = {0}, err[1024];
    if (g.rank == 0 && mlm_nccl_unique_id(id, err, sizeof err) != 0)
        abort_job(MLM_EXIT_RUNTIME, "NCCL set-up: %s", err);
    mlm_dist_bcast_host(id, sizeof id, "NCCL id broadcast");
    g.nccl = mlm_nccl_create(be, id, g.rank, g.world, g.timeout_s, err, sizeof err);
    if (!g.nccl)
        abort_job(MLM_EXIT_RUNTIME, "NCCL communicator (rank %d, device %d): %s", g.rank, g.local_rank, err);
#else
    mlm_dist_die_all(MLM_EXIT_INPUT,
                     "this build has no NCCL, which multi-GPU training needs: install NCCL (libnccl.so and "
                     "nccl.h under /usr/local/cuda) and reconfigure, or pass --device cpu");
#endif
}

void mlm_dist_detach(void) {
#ifdef MLM_HAVE_NCCL
    mlm_nccl_destroy(g.nccl);
    g.nccl = NULL;
#endif
    g.be = NULL;
}

/* ---------------------------------------------------------------- gradient buckets */

static void add_range(mlm_grad_bucket *b, size_t offset, size_t count) {
    mlm_range *last = b->nranges ? &b->r[b->nranges - 1] : NULL;
    if (last && last->offset + last->count == offset) last->count += count;
    else if (b->nranges == MLM_BUCKET_MAX_RANGES)
        mlm_die(MLM_EXIT_RUNTIME, "a gradient bucket needs more than MLM_BUCKET_MAX_RANGES = %d ranges (dist.h)",
                MLM_BUCKET_MAX_RANGES);
    else b->r[b->nranges++] = (mlm_range){offset, count};
    b->elems += count;
}

/* The tensors of part (model.h) into b, in buffer order, so neighbours merge into one
 * range; a layer's tensors at layer l. */
static void add_part(mlm_grad_bucket *b, const mlm_layout *lay, mlm_part part, int l) {
    for (int id = 0; id < MLM_T_COUNT; id++)
        if (lay->t[id].part == part) add_range(b, mlm_offset(lay, id, l), lay->t[id].rows * lay->t[id].cols);
}

int mlm_grad_buckets(const mlm_layout *lay, mlm_grad_bucket *out, int max) {
    int L = lay->cfg.num_layers, count = L + 2;
    for (int k = 0; k < count && k < max; k++) {
        mlm_grad_bucket *b = &out[k];
        memset(b, 0, sizeof *b);
        if (k == 0) add_part(b, lay, MLM_PART_HEAD, 0);
        else if (k <= L) add_part(b, lay, MLM_PART_LAYER, L - k);
        else add_part(b, lay, MLM_PART_EMBEDDINGS, 0);
    }
    return count;
}

struct mlm_grad_sync {
    mlm_model *m;
    int nbuckets;
    mlm_grad_bucket *b;
    int launched;            // buckets launched this step
#ifdef MLM_HAVE_MPI
    MPI_Request *reqs;       // CPU: the MPI_Iallreduce of each range chunk
    int nreqs, max_reqs;
#endif
};

static void launch_bucket(mlm_grad_sync *gs, int k) {
    const mlm_grad_bucket *b = &gs->b[k];
#ifdef MLM_HAVE_NCCL
    if (g.cuda) {
        nccl_launch(0, gs->m->grads, b->r, b->nranges, "gradient all-reduce");
        return;
    }
#endif
#ifdef MLM_HAVE_MPI
    for (int i = 0; i < b->nranges; i++)
        for (size_t at = 0; at < b->r[i].count; at += MPI_CHUNK) {
            size_t cnt = b->r[i].count - at < MPI_CHUNK ? b->r[i].count - at : MPI_CHUNK;
            mpi_check(MPI_Iallreduce(MPI_IN_PLACE, gs->m->grads + b->r[i].offset + at, (int)cnt, MPI_FLOAT, MPI_SUM,
                                     g.comm, &gs->reqs[gs->nreqs++]),
                      "gradient all-reduce (MPI_Iallreduce)");
        }
#endif
    (void)b;
}

/* Launches buckets in order up to and including k. */
static void launch_upto(mlm_grad_sync *gs, int k) {
    while (gs->launched <= k && gs->launched < gs->nbuckets) launch_bucket(gs, gs->launched++);
}

/* The model's hook: layer L = the head, l = encoder layer l, -1 = the embeddings. */
static void on_grads_done(void *ctx, int layer) {
    mlm_grad_sync *gs = ctx;
    launch_upto(gs, gs->m->lay.cfg.num_layers - layer);
#ifdef MLM_HAVE_MPI
    // MPI moves non-blocking collectives only inside MPI calls: let the launched ones progress
    int done;
    if (!g.cuda) MPI_Testall(gs->nreqs, gs->reqs, &done, MPI_STATUSES_IGNORE);
#endif
}

mlm_grad_sync *mlm_grad_sync_create(mlm_model *m) {
    if (!g.active) return NULL;
    mlm_grad_sync *gs = mlm_xcalloc(1, sizeof *gs, "gradient all-reduce");
    gs->m = m;
    gs->nbuckets = mlm_grad_buckets(&m->lay, NULL, 0);
    gs->b = mlm_xcalloc(gs->nbuckets, sizeof *gs->b, "gradient buckets");
    mlm_grad_buckets(&m->lay, gs->b, gs->nbuckets);
#ifdef MLM_HAVE_MPI
    for (int k = 0; k < gs->nbuckets; k++)
        for (int i = 0; i < gs->b[k].nranges; i++) gs->max_reqs += (int)((gs->b[k].r[i].count + MPI_CHUNK - 1) / MPI_CHUNK);
    gs->reqs = mlm_xcalloc(gs->max_reqs, sizeof *gs->reqs, "gradient all-reduce requests");
#endif
    return gs;
}

void mlm_grad_sync_destroy(mlm_grad_sync *gs) {
    if (!gs) return;
    gs->m->grad_hook = NULL;
#ifdef MLM_HAVE_MPI
    free(gs->reqs);
#endif
    free(gs->b);
    free(gs);
}

void mlm_grad_sync_arm(mlm_grad_sync *gs) {
    if (!gs) return;
    gs->m->grad_hook = on_grads_done;
    gs->m->grad_hook_ctx = gs;
}

void mlm_grad_sync_finish(mlm_grad_sync *gs) {
    if (!gs) return;
    gs->m->grad_hook = NULL;
    launch_upto(gs, gs->nbuckets - 1);
    gs->launched = 0;
#ifdef MLM_HAVE_NCCL
    if (g.cuda) {
        char err[512];
        if (mlm_nccl_order_compute(g.nccl, err, sizeof err) != 0)
            abort_job(MLM_EXIT_RUNTIME, "step %d: gradient all-reduce: %s", g.step, err);
        return;
    }
#endif
#ifdef MLM_HAVE_MPI
    mpi_reqs q = {gs->reqs, gs->nreqs};
    watch("gradient all-reduce", poll_mpi, &q);
    gs->nreqs = 0;
#endif
}

void mlm_grad_sync_wait(mlm_grad_sync *gs) {
#ifdef MLM_HAVE_NCCL
    if (gs && g.cuda) watch("gradient all-reduce", poll_nccl, g.nccl);
#endif
    (void)gs;
}
