/*
 * TensorBoard event files (include/mlm/events.h). The few protobuf fields an
 * Event with scalar summaries needs are encoded here by hand: varint keys and
 * lengths, a fixed64 double, fixed32 floats, length-delimited strings and nested
 * messages. Field numbers are those of tensorboard/compat/proto/event.proto and
 * summary.proto (Event: wall_time 1, step 2, file_version 3, summary 5; Summary:
 * value 1; Summary.Value: tag 1, simple_value 2; SessionLog: status 1, START = 1),
 * as in the tensorboard package's compiled descriptors (event_pb2, summary_pb2).
 */
#include "mlm/events.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mlm/config.h"
#include "mlm/fileio.h"
#include "mlm/log.h"

/* ---------------------------------------------------------------- CRC-32C */

/* The byte-at-a-time table of the reflected polynomial, built on first use (a
 * few hundred records a run: no need for the SSE4.2 instruction). */
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_table[i] = c;
    }
}

uint32_t mlm_crc32c(const void *data, size_t n) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, crc_init);
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t mlm_crc32c_masked(const void *data, size_t n) {
    uint32_t c = mlm_crc32c(data, n);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

static void put_le(uint8_t *out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) out[i] = (uint8_t)(v >> (8 * i));
}

size_t mlm_tfrecord_frame(const void *data, size_t n, uint8_t *out) {
    put_le(out, n, 8);
    put_le(out + 8, mlm_crc32c_masked(out, 8), 4);
    memcpy(out + 12, data, n);
    put_le(out + 12 + n, mlm_crc32c_masked(data, n), 4);
    return n + 16;
}

/* ---------------------------------------------------------------- protobuf */

/* An output cursor; ok drops to 0 once a write would pass the end. */
typedef struct { uint8_t *p, *end; int ok; } pb_out;

static void pb_bytes(pb_out *o, const void *b, size_t n) {
    if (!o->ok || (size_t)(o->end - o->p) < n) {
        o->ok = 0;
        return;
    }
    memcpy(o->p, b, n);
    o->p += n;
}

static void pb_varint(pb_out *o, uint64_t v) {
    uint8_t b[10];
    int n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (v) b[n] |= 0x80;
        n++;
    } while (v);
    pb_bytes(o, b, (size_t)n);
}

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 };

static void pb_key(pb_out *o, int field, int wire) { pb_varint(o, (uint64_t)field << 3 | (uint64_t)wire); }

static void pb_string(pb_out *o, int field, const char *s) {
    size_t n = strlen(s);
    pb_key(o, field, PB_LEN);
    pb_varint(o, n);
    pb_bytes(o, s, n);
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >>= 7) n++;
    return n;
}

/* One Summary.Value: tag (1) and simple_value (2). */
static size_t value_len(const char *tag) {
    size_t t = strlen(tag);
    return 1 + varint_len(t) + t + 1 + 4;
}

size_t mlm_event_encode(uint8_t *out, size_t cap, double wall_time, int64_t step, const char *file_version,
                        int session_start, const char *const *tags, const float *values, int nvalues) {
    pb_out o = {out, out + cap, 1};
    uint8_t b[8];
    uint64_t bits;
    memcpy(&bits, &wall_time, 8);
    pb_key(&o, 1, PB_FIXED64);
    put_le(b, bits, 8);
    pb_bytes(&o, b, 8);
    pb_key(&o, 2, PB_VARINT);
    pb_varint(&o, (uint64_t)step);   // int64: two's complement, as protobuf encodes it
    if (file_version) pb_string(&o, 3, file_version);
    if (session_start) {   // SessionLog{status: START}
        pb_key(&o, 7, PB_LEN);
        pb_varint(&o, 2);
        pb_key(&o, 1, PB_VARINT);
        pb_varint(&o, 1);
    }
    if (nvalues > 0) {
        size_t summary = 0;   // a nested message is preceded by its length: sum the values first
        for (int i = 0; i < nvalues; i++) summary += 1 + varint_len(value_len(tags[i])) + value_len(tags[i]);
        pb_key(&o, 5, PB_LEN);
        pb_varint(&o, summary);
        for (int i = 0; i < nvalues; i++) {
            pb_key(&o, 1, PB_LEN);
            pb_varint(&o, value_len(tags[i]));
            pb_string(&o, 1, tags[i]);
            uint32_t f;
            memcpy(&f, &values[i], 4);
            pb_key(&o, 2, PB_FIXED32);
            put_le(b, f, 4);
            pb_bytes(&o, b, 4);
        }
    }
    return o.ok ? (size_t)(o.p - out) : 0;
}

/* ---------------------------------------------------------------- the file */

struct mlm_events {
    int fd;
    off_t size;   // the end of the last whole record
    char path[];
};

static const char PREFIX[] = "events.out.tfevents.";

enum { EVENT_MAX = 4096 };   // bytes of one serialised Event: a record is 16 more

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The newest <unix seconds> among dir's event files (0: none); with fresh, the
 * files are deleted instead. */
static long long scan_event_files(const char *dir, int fresh) {
    long long newest = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, PREFIX, sizeof PREFIX - 1) != 0) continue;
        if (fresh) {
            char path[2 * MLM_PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);   // a directory of that name stays; the new file's name differs anyway
            continue;
        }
        long long t = strtoll(e->d_name + sizeof PREFIX - 1, NULL, 10);
        if (t > newest) newest = t;
    }
    closedir(d);
    return newest;
}

static int write_record(mlm_events *ev, const uint8_t *event, size_t n, char *err, size_t err_len) {
    uint8_t rec[EVENT_MAX + 16];
    if (n > EVENT_MAX) return mlm_fail(err, err_len, "%s: an event of %zu bytes is too large", ev->path, n);
    size_t len = mlm_tfrecord_frame(event, n, rec);
    if (mlm_write_all(ev->fd, rec, len) != 0) {
        int e = errno;
        int cut = ftruncate(ev->fd, ev->size) == 0;
        return mlm_fail(err, err_len, "%s: write failed: %s; %s", ev->path, strerror(e),
                        cut ? "the file ends at its last whole record" : "its last record may be torn");
    }
    ev->size += (off_t)len;
    return 0;
}

mlm_events *mlm_events_open(const char *dir, int64_t first_step, char *err, size_t err_len) {
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    for (char *c = host; *c; c++)   // a file name: no '/' or odd bytes
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
              *c == '-' || *c == '_'))
            *c = '_';
    long long newest = scan_event_files(dir, first_step <= 1);
    double wall = wall_now();
    long long secs = (long long)wall;
    if (newest >= secs) secs = newest + 1;
    size_t n = strlen(dir) + sizeof PREFIX + strlen(host) + 64;
    mlm_events *ev = malloc(sizeof *ev + n);
    if (!ev) {
        mlm_fail(err, err_len, "%s: out of memory", dir);
        return NULL;
    }
    snprintf(ev->path, n, "%s/%s%lld.%s.%ld", dir, PREFIX, secs, host, (long)getpid());
    ev->size = 0;
    ev->fd = open(ev->path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (ev->fd < 0) {
        mlm_fail(err, err_len, "%s: cannot create: %s", ev->path, strerror(errno));
        free(ev);
        return NULL;
    }
    uint8_t event[256];
    size_t len = mlm_event_encode(event, sizeof event, wall, 0, "brain.Event:2", 0, NULL, NULL, 0);
    int rc = write_record(ev, event, len, err, err_len);
    len = mlm_event_encode(event, sizeof event, wall, first_step, NULL, 1, NULL, NULL, 0);
    if (rc != 0 || write_record(ev, event, len, err, err_len) != 0) {
        close(ev->fd);
        unlink(ev->path);
        free(ev);
        return NULL;
    }
    return ev;
}

const char *mlm_events_path(const mlm_events *ev) { return ev->path; }

int mlm_events_scalars(mlm_events *ev, int64_t step, const char *const *tags, const double *values, int n,
                       char *err, size_t err_len) {
    float v[64];
    if (n > 64) return mlm_fail(err, err_len, "%s: %d scalars in one event, at most 64", ev->path, n);
    for (int i = 0; i < n; i++) v[i] = (float)values[i];
    uint8_t event[EVENT_MAX];
    size_t len = mlm_event_encode(event, sizeof event, wall_now(), step, NULL, 0, tags, v, n);
    if (len == 0)
        return mlm_fail(err, err_len, "%s: the event of step %lld does not fit %d bytes", ev->path, (long long)step,
                        EVENT_MAX);
    return write_record(ev, event, len, err, err_len);
}

int mlm_events_close(mlm_events *ev, char *err, size_t err_len) {
    if (!ev) return 0;
    int rc = 0;
    if (close(ev->fd) != 0) rc = mlm_fail(err, err_len, "%s: closing failed: %s", ev->path, strerror(errno));
    free(ev);
    return rc;
}
