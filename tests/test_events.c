/*
 * TensorBoard event files (include/mlm/events.h): CRC-32C against its published
 * test vectors and a bit-at-a-time reference written here, the TFRecord framing
 * and the Event encoding byte by byte, files decoded by a protobuf reader of this
 * file's own, write failures cut back to whole records, and a training run whose
 * event files hold what metrics.jsonl holds, resumed. Where the tensorboard Python
 * package is installed, its own reader reads the run back (skipped otherwise).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "mlm/events.h"
#include "mlm/fileio.h"

static char out[1 << 16];

TestSuite(events, .init = make_tmpdir, .fini = rm_tmpdir, .timeout = 240);

/* ---------------------------------------------------------------- references */

/* CRC-32C one bit at a time, straight from the definition (reflected 0x82F63B78). */
static uint32_t ref_crc(const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static uint32_t ref_masked(const void *data, size_t n) {
    uint32_t c = ref_crc(data, n);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

static uint64_t le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* One decoded Event: the fields mlmgpu writes, anything else is a failure. */
typedef struct {
    double wall;
    long long step;
    char file_version[32];
    int start;   // session_log START
    int n;
    char tags[8][32];
    float values[8];
} event;

static uint64_t varint(const uint8_t *p, size_t n, size_t *i) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        cr_assert_lt(*i, n, "varint runs past its message");
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) return v;
    }
    cr_assert_fail("varint longer than 10 bytes");
    return 0;
}

static void decode_value(const uint8_t *p, size_t n, event *e) {
    cr_assert_lt(e->n, 8);
    int seen = 0;
    for (size_t i = 0; i < n;) {
        uint64_t key = varint(p, n, &i);
        if (key == (1 << 3 | 2)) {   // tag
            uint64_t len = varint(p, n, &i);
            cr_assert(len < 32 && i + len <= n);
            memcpy(e->tags[e->n], p + i, len);
            e->tags[e->n][len] = 0;
            i += len;
            seen |= 1;
        } else if (key == (2 << 3 | 5)) {   // simple_value
            cr_assert_leq(i + 4, n);
            uint32_t bits = (uint32_t)le(p + i, 4);
            memcpy(&e->values[e->n], &bits, 4);
            i += 4;
            seen |= 2;
        } else {
            cr_assert_fail("Summary.Value: unexpected key %llu", (unsigned long long)key);
        }
    }
    cr_assert_eq(seen, 3, "a value without its tag or simple_value");
    e->n++;
}

static void decode_event(const uint8_t *p, size_t n, event *e) {
    memset(e, 0, sizeof *e);
    for (size_t i = 0; i < n;) {
        uint64_t key = varint(p, n, &i);
        if (key == (1 << 3 | 1)) {   // wall_time
            cr_assert_leq(i + 8, n);
            uint64_t bits = le(p + i, 8);
            memcpy(&e->wall, &bits, 8);
            i += 8;
        } else if (key == (2 << 3 | 0)) {   // step
            e->step = (long long)varint(p, n, &i);
        } else if (key == (3 << 3 | 2)) {   // file_version
            uint64_t len = varint(p, n, &i);
            cr_assert(len < 32 && i + len <= n);
            memcpy(e->file_version, p + i, len);
            i += len;
        } else if (key == (7 << 3 | 2)) {   // session_log
            uint64_t len = varint(p, n, &i), end = i + len;
            cr_assert_leq(end, n);
            while (i < end) {
                cr_assert_eq(varint(p, n, &i), 1 << 3 | 0, "SessionLog: only status expected");
                e->start = varint(p, n, &i) == 1;
            }
        } else if (key == (5 << 3 | 2)) {   // summary
            uint64_t len = varint(p, n, &i), end = i + len;
            cr_assert_leq(end, n);
            while (i < end) {
                cr_assert_eq(varint(p, n, &i), 1 << 3 | 2, "Summary: only values expected");
                uint64_t vl = varint(p, n, &i);
                cr_assert_leq(i + vl, end);
                decode_value(p + i, vl, e);
                i += vl;
            }
        } else {
            cr_assert_fail("Event: unexpected key %llu", (unsigned long long)key);
        }
    }
}

/* Every record of path, each checked against the reference CRC and decoded; the
 * file must end at a record's end. Returns the count. */
static int read_events(const char *path, event *evs, int max) {
    size_t n;
    char *buf = read_path(path, &n);
    const uint8_t *p = (const uint8_t *)buf;
    int count = 0;
    for (size_t i = 0; i < n; count++) {
        cr_assert_leq(i + 12, n, "%s: a torn header at byte %zu", path, i);
        uint64_t len = le(p + i, 8);
        cr_assert_eq(le(p + i + 8, 4), ref_masked(p + i, 8), "%s: header CRC at byte %zu", path, i);
        cr_assert_leq(i + 16 + len, n, "%s: a torn record at byte %zu", path, i);
        cr_assert_eq(le(p + i + 12 + len, 4), ref_masked(p + i + 12, len), "%s: data CRC at byte %zu", path, i);
        cr_assert_lt(count, max);
        decode_event(p + i + 12, len, &evs[count]);
        i += 16 + len;
    }
    free(buf);
    return count;
}

/* The event files of tmpdir/sub, sorted by name; returns how many. */
static int event_files(const char *sub, char names[][256], int max) {
    char dir[256];
    tmp_path(dir, sizeof dir, sub);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, "events.out.tfevents.", 20) && n < max) snprintf(names[n++], 256, "%s", e->d_name);
    closedir(d);
    qsort(names, (size_t)n, 256, (int (*)(const void *, const void *))strcmp);
    return n;
}

/* ---------------------------------------------------------------- CRC and bytes */

Test(events, crc32c_test_vectors) {
    uint8_t zeros[32] = {0}, ones[32], up[32], down[32];
    for (int i = 0; i < 32; i++) ones[i] = 0xFF, up[i] = (uint8_t)i, down[i] = (uint8_t)(31 - i);
    cr_expect_eq(mlm_crc32c("123456789", 9), 0xE3069283u);
    cr_expect_eq(mlm_crc32c("", 0), 0u);
    // RFC 3720, B.4
    cr_expect_eq(mlm_crc32c(zeros, 32), 0x8A9136AAu);
    cr_expect_eq(mlm_crc32c(ones, 32), 0x62A8AB43u);
    cr_expect_eq(mlm_crc32c(up, 32), 0x46DD794Eu);
    cr_expect_eq(mlm_crc32c(down, 32), 0x113FDB5Cu);
    // and the reference agrees with the vectors, then with the table on odd lengths
    cr_expect_eq(ref_crc("123456789", 9), 0xE3069283u);
    uint8_t buf[1000];
    srand(7);
    for (int i = 0; i < 1000; i++) buf[i] = (uint8_t)rand();
    for (size_t n = 0; n < 1000; n += 37) {
        cr_expect_eq(mlm_crc32c(buf, n), ref_crc(buf, n), "length %zu", n);
        cr_expect_eq(mlm_crc32c_masked(buf, n), ref_masked(buf, n), "length %zu", n);
    }
    // the mask by hand: crc32c("123456789") = 0xE3069283 rotated right by 15, plus the constant
    cr_expect_eq(mlm_crc32c_masked("123456789", 9), ((0xE3069283u >> 15) | (0xE3069283u << 17)) + 0xA282EAD8u);
}

Test(events, tfrecord_framing) {
    uint8_t rec[5 + 16];
    cr_assert_eq(mlm_tfrecord_frame("hello", 5, rec), 21);
    const uint8_t len[8] = {5, 0, 0, 0, 0, 0, 0, 0};
    cr_expect_eq(memcmp(rec, len, 8), 0, "length: little-endian uint64");
    cr_expect_eq(le(rec + 8, 4), ref_masked(len, 8));
    cr_expect_eq(memcmp(rec + 12, "hello", 5), 0);
    cr_expect_eq(le(rec + 17, 4), ref_masked("hello", 5));
}

Test(events, event_encoding_byte_by_byte) {
    uint8_t b[256];
    // wall 1.5 (0x3FF8000000000000), step 7, file_version "v"
    const uint8_t head[] = {0x09, 0, 0, 0, 0, 0, 0, 0xF8, 0x3F, 0x10, 0x07, 0x1A, 0x01, 'v'};
    cr_assert_eq(mlm_event_encode(b, sizeof b, 1.5, 7, "v", 0, NULL, NULL, 0), sizeof head);
    cr_expect_eq(memcmp(b, head, sizeof head), 0);
    // step 300 (varint AC 02), SessionLog START, summary {value {tag "a" simple_value 0.25 (0x3E800000)}}
    const char *tags[2] = {"a", "bc"};
    const float vals[2] = {0.25f, -2.0f};
    const uint8_t ev[] = {0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0xAC, 0x02, 0x3A, 0x02, 0x08, 0x01,
                          0x2A, 0x15,                                        // Summary, 21 bytes
                          0x0A, 0x08, 0x0A, 0x01, 'a', 0x15, 0, 0, 0x80, 0x3E,   // Value "a" 0.25
                          0x0A, 0x09, 0x0A, 0x02, 'b', 'c', 0x15, 0, 0, 0, 0xC0};   // Value "bc" -2
    size_t n = mlm_event_encode(b, sizeof b, 0.0, 300, NULL, 1, tags, vals, 2);
    cr_assert_eq(n, sizeof ev, "%zu bytes", n);
    for (size_t i = 0; i < n; i++) cr_expect_eq(b[i], ev[i], "byte %zu: %02x, expected %02x", i, b[i], ev[i]);
    // too small a buffer: nothing
    cr_expect_eq(mlm_event_encode(b, n - 1, 0.0, 300, NULL, 1, tags, vals, 2), 0);
    event e;
    decode_event(b, n, &e);
    cr_expect(e.step == 300 && e.start && e.n == 2 && !strcmp(e.tags[1], "bc") && e.values[1] == -2.0f);
}

/* ---------------------------------------------------------------- the writer */

Test(events, writer_round_trip) {
    char err[1024], host[256] = "";
    time_t t0 = time(NULL);
    mlm_events *ev = mlm_events_open(tmpdir, 1, err, sizeof err);
    cr_assert_not_null(ev, "%s", err);
    const char *tags[3] = {"train/loss", "train/acc", "train/lr"};
    const double v1[3] = {10.25, 0.5, 1e-4}, v2[3] = {7.125, 0.625, 2e-4};
    cr_assert_eq(mlm_events_scalars(ev, 10, tags, v1, 3, err, sizeof err), 0, "%s", err);
    cr_assert_eq(mlm_events_scalars(ev, 20, tags, v2, 2, err, sizeof err), 0, "%s", err);
    char path[1024];
    snprintf(path, sizeof path, "%s", mlm_events_path(ev));
    cr_assert_eq(mlm_events_close(ev, err, sizeof err), 0, "%s", err);
    // events.out.tfevents.<seconds>.<host>.<pid>
    char names[4][256];
    cr_assert_eq(event_files(".", names, 4), 1);
    long long secs = 0;
    long pid = 0;
    cr_assert_eq(sscanf(names[0], "events.out.tfevents.%lld.%255[^ ]", &secs, host), 2, "%s", names[0]);
    cr_expect(secs >= t0 - 1 && secs <= time(NULL) + 1, "%lld seconds, now %lld", secs, (long long)time(NULL));
    char *dot = strrchr(host, '.');
    cr_assert_not_null(dot);
    pid = atol(dot + 1);
    cr_expect_eq(pid, (long)getpid());
    cr_expect(strstr(path, names[0]), "%s", path);

    event e[8];
    int n = read_events(path, e, 8);
    cr_assert_eq(n, 4, "records: %d", n);
    cr_expect_str_eq(e[0].file_version, "brain.Event:2");
    cr_expect(e[0].step == 0 && e[0].n == 0 && !e[0].start);
    cr_expect(e[1].start && e[1].step == 1 && e[1].n == 0, "a SessionLog START at the first step");
    cr_expect(fabs(e[0].wall - (double)t0) < 5, "wall time %f", e[0].wall);
    cr_expect_eq(e[2].step, 10);
    cr_assert_eq(e[2].n, 3);
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(e[2].tags[i], tags[i]);
        cr_expect_eq(e[2].values[i], (float)v1[i]);
    }
    cr_expect(e[3].step == 20 && e[3].n == 2 && e[3].values[1] == 0.625f && e[3].wall >= e[2].wall);
}

/* A resumed run adds a file that sorts after the others (same second or not) and
 * starts with a SessionLog START at its first step; a fresh start deletes them. */
Test(events, resume_adds_a_later_file_fresh_start_clears) {
    char err[1024];
    mlm_events *a = mlm_events_open(tmpdir, 1, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    mlm_events_close(a, err, sizeof err);
    mlm_events *b = mlm_events_open(tmpdir, 41, err, sizeof err);
    cr_assert_not_null(b, "%s", err);
    char bpath[1024];
    snprintf(bpath, sizeof bpath, "%s", mlm_events_path(b));
    mlm_events_close(b, err, sizeof err);
    char names[4][256];
    cr_assert_eq(event_files(".", names, 4), 2);
    cr_expect(strstr(bpath, names[1]), "the resumed file %s does not sort last (%s, %s)", bpath, names[0], names[1]);
    event e[4];
    cr_assert_eq(read_events(bpath, e, 4), 2);
    cr_expect(e[1].start && e[1].step == 41);
    write_file("other.txt", "kept");
    mlm_events *c = mlm_events_open(tmpdir, 1, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    mlm_events_close(c, err, sizeof err);
    cr_expect_eq(event_files(".", names, 4), 1, "a fresh start leaves only its own file");
    char other[256];
    tmp_path(other, sizeof other, "other.txt");
    cr_expect_eq(access(other, F_OK), 0, "other files stay");
}

/* A write that fails (here a file-size limit, as a full disk would) cuts the file
 * back to its last whole record and says so; later records are whole again. */
Test(events, failed_write_cuts_back_to_whole_records) {
    char err[1024];
    signal(SIGXFSZ, SIG_IGN);
    mlm_events *ev = mlm_events_open(tmpdir, 1, err, sizeof err);
    cr_assert_not_null(ev, "%s", err);
    const char *path = mlm_events_path(ev);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    off_t whole = st.st_size;
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)whole + 20;   // the next record gets 20 of its bytes
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0, "%s", strerror(errno));
    const char *tags[2] = {"train/loss", "train/grad_norm"};
    const double v[2] = {3.5, 0.75};
    cr_expect_neq(mlm_events_scalars(ev, 5, tags, v, 2, err, sizeof err), 0);
    cr_expect(strstr(err, path) && strstr(err, "write failed") && strstr(err, "its last whole record"), "%s", err);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_expect_eq(st.st_size, whole, "the file is %lld bytes, its whole records %lld", (long long)st.st_size,
                 (long long)whole);
    cr_expect_eq(mlm_events_scalars(ev, 6, tags, v, 2, err, sizeof err), 0, "%s", err);
    char p[1024];
    snprintf(p, sizeof p, "%s", path);
    mlm_events_close(ev, err, sizeof err);
    event e[8];
    cr_assert_eq(read_events(p, e, 8), 3);
    cr_expect(e[2].step == 6 && e[2].values[0] == 3.5f);
}

/* ---------------------------------------------------------------- a training run */

static const char *TINY =
    "[model]\nhidden_size = 32\nnum_layers = 1\nnum_heads = 2\nintermediate_size = 64\n"
    "[data]\ntrain = " SAMPLE "/train.shard\nval = " SAMPLE "/val.shard\nvocab = " SAMPLE "/vocab.txt\n"
    "[train]\nmicro_batch = 4\nbatch = 4\nsteps = 6\nlog_every = 1\neval_every = 3\neval_steps = 1\n"
    "checkpoint_every = 3\nthreads = 2\nout_dir = run\n"
    "[optim]\nlr = 1e-3\nwarmup_steps = 2\n";

/* Trains 6 steps, then again from the checkpoint of step 3 (so steps 4 to 6 are
 * written twice, as after a crash past a checkpoint). */
static void train_and_resume(void) {
    write_file("tiny.ini", TINY);
    int rc = run_mlmgpu("", "train --config tiny.ini --device cpu", out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    rc = run_mlmgpu("", "train --config tiny.ini --device cpu --resume run/checkpoints/step_0000003", out,
                    sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
}

/* The value of "key": in a metrics line, or NAN. */
static double field(const char *line, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(line, k);
    return p ? atof(p + strlen(k)) : NAN;
}

static void expect_close(double got, double want, double rel, const char *what, long long step) {
    cr_expect(fabs(got - want) <= rel * fabs(want) + 1e-6, "%s at step %lld: %g in the event, %g in metrics.jsonl",
              what, step, got, want);
}

Test(events, training_writes_metrics_as_events_and_resume_appends) {
    train_and_resume();
    char names[4][256], path[512], mpath[256];
    cr_assert_eq(event_files("run", names, 4), 2, "one file per process");
    // the metrics lines of each process, in order
    tmp_path(mpath, sizeof mpath, "run/metrics.jsonl");
    FILE *m = fopen(mpath, "r");
    cr_assert_not_null(m);
    char lines[32][1024];
    int nl = 0;
    while (nl < 32 && fgets(lines[nl], sizeof lines[0], m)) nl++;
    fclose(m);
    cr_assert_eq(nl, 8 + 4, "6 train + 2 val lines, then 3 + 1 after the resume: %d", nl);
    int li = 0;
    for (int f = 0; f < 2; f++) {
        snprintf(path, sizeof path, "%s/run/%s", tmpdir, names[f]);
        event e[32];
        int n = read_events(path, e, 32);
        cr_assert_eq(n, 2 + (f == 0 ? 8 : 4), "%s: %d records", names[f], n);
        cr_expect(e[1].start && e[1].step == (f == 0 ? 1 : 4), "%s: START at step %lld", names[f], e[1].step);
        for (int i = 2; i < n; i++, li++) {
            const char *l = lines[li];
            long long step = (long long)field(l, "step");
            cr_assert_eq(e[i].step, step, "%s record %d: step %lld, metrics line %d: %s", names[f], i, e[i].step,
                         li + 1, l);
            int train = strstr(l, "\"split\":\"train\"") != NULL;
            // a validation line with a "baseline" carries it as val/unigram_baseline
            static const char *tk[] = {"loss", "acc", "lr", "grad_norm", "tokens_per_s"},
                              *vk[] = {"loss", "acc", "ppl", "baseline"};
            int has_base = !train && strstr(l, "\"baseline\":") != NULL;
            cr_assert_eq(e[i].n, train ? 5 : 3 + has_base);
            for (int k = 0; k < e[i].n; k++) {
                char tag[64];
                snprintf(tag, sizeof tag, "%s/%s", train ? "train" : "val",
                         train ? tk[k] : k == 3 ? "unigram_baseline" : vk[k]);
                cr_expect_str_eq(e[i].tags[k], tag);
                expect_close(e[i].values[k], field(l, train ? tk[k] : vk[k]), k == 4 ? 1e-3 : 1e-5, tag, step);
            }
        }
    }
    char svg[256];
    tmp_path(svg, sizeof svg, "run/loss.svg");
    cr_expect_eq(access(svg, F_OK), 0, "the trainer draws loss.svg at the end");
}

/* TensorBoard's reader: every record's CRCs, file_version first, and the scalars
 * it shows: each step once (the resumed run's values), the steps of metrics.jsonl. */
Test(events, tensorboard_reads_the_run_back) {
    if (run_shell("python3 -c 'import tensorboard'", out, sizeof out) != 0)
        cr_skip_test("the tensorboard Python package is not installed: pip install tensorboard");
    train_and_resume();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s/tests/reference/read_events.py %s/run", MLM_SOURCE_ROOT, tmpdir);
    int rc = run_shell(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    int files = 0, points = 0;
    char tag[64], last_tag[64] = "";
    long long step, last = -1;
    double v;
    for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n")) {
        if (!strncmp(l, "file ", 5)) files++;
        if (sscanf(l, "scalar %63s %lld %lf", tag, &step, &v) != 3) continue;
        points++;
        if (strcmp(tag, last_tag) != 0) last = -1, snprintf(last_tag, sizeof last_tag, "%s", tag);
        cr_expect_gt(step, last, "%s: step %lld after %lld: a step shown twice", tag, step, last);
        last = step;
    }
    cr_expect_eq(files, 2);
    // 5 train tags x steps 1..6, 4 val tags (the unigram baseline too) x steps 3 and 6
    cr_expect_eq(points, 5 * 6 + 4 * 2, "%d points:\n%s", points, out);
}
