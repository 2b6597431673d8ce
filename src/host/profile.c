/*
 * The op profiler (include/mlm/profile.h): a wrapping backend (backend_ops.c) that
 * times every op between two device syncs; bench/bench_step --profile prints it.
 */
#include "mlm/profile.h"

#include <stdlib.h>
#include <string.h>

#include "mlm/backend_wrap.h"
#include "mlm/log.h"

enum { MAX_ENTRIES = 256 };

typedef struct {
    const char *op;       // a string literal of backend_ops.c
    char shape[128];
    long calls;
    double seconds;
} entry;

struct mlm_profile {
    mlm_backend *inner;
    entry e[MAX_ENTRIES];
    int n;
    entry *open;          // the op between before and after
    double t0;
};

static void before(void *ctx, const char *op, unsigned flags, const char *shape, const uint64_t *args, int nargs) {
    mlm_profile *p = ctx;
    p->open = NULL;
    if (flags & MLM_OP_UNTIMED) return;
    entry *e = NULL;
    for (int i = 0; i < p->n && !e; i++)
        if (p->e[i].op == op && !strcmp(p->e[i].shape, shape)) e = &p->e[i];
    if (!e && p->n < MAX_ENTRIES) {
        e = &p->e[p->n++];
        memset(e, 0, sizeof *e);
        e->op = op;
        snprintf(e->shape, sizeof e->shape, "%s", shape);
    }
    if (!e) return;
    p->inner->sync(p->inner);   // what was queued before is not this op's
    p->open = e;
    p->t0 = mlm_now_s();
}

static void after(void *ctx, const char *op) {
    mlm_profile *p = ctx;
    if (!p->open) return;
    p->inner->sync(p->inner);
    p->open->calls++;
    p->open->seconds += mlm_now_s() - p->t0;
    p->open = NULL;
}

mlm_backend *mlm_profile_wrap(mlm_backend *be, mlm_profile **out) {
    mlm_profile *p = mlm_xcalloc(1, sizeof *p, "profile");
    p->inner = be;
    *out = p;
    mlm_wrap_hooks h = {.ctx = p, .before = before, .after = after};
    return mlm_backend_wrap(be, &h);
}

void mlm_profile_reset(mlm_profile *p) { p->n = 0; }

void mlm_profile_free(mlm_profile *p) { free(p); }

void mlm_profile_op(const mlm_profile *p, const char *op, long *calls, double *seconds) {
    *calls = 0;
    *seconds = 0;
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->e[i].op, op)) {
            *calls += p->e[i].calls;
            *seconds += p->e[i].seconds;
        }
}

double mlm_profile_seconds(const mlm_profile *p) {
    double s = 0;
    for (int i = 0; i < p->n; i++) s += p->e[i].seconds;
    return s;
}

static int by_time(const void *a, const void *b) {
    double x = ((const entry *)a)->seconds, y = ((const entry *)b)->seconds;
    return (x < y) - (x > y);
}

/* The entries, largest first (caller frees). */
static entry *sorted(const mlm_profile *p) {
    entry *s = mlm_xmalloc((p->n ? p->n : 1) * sizeof *s, "profile table");
    memcpy(s, p->e, p->n * sizeof *s);
    qsort(s, p->n, sizeof *s, by_time);
    return s;
}

void mlm_profile_print(const mlm_profile *p, FILE *f, int units, int max_rows) {
    entry *s = sorted(p);
    double total = mlm_profile_seconds(p), u = units > 0 ? units : 1;
    fprintf(f, "%-20s %-34s %8s %10s %7s\n", "op", "shape", "calls", "ms", "share");
    for (int i = 0; i < p->n && i < max_rows; i++)
        fprintf(f, "%-20s %-34s %8.1f %10.3f %6.1f%%\n", s[i].op, s[i].shape, s[i].calls / u,
                s[i].seconds * 1e3 / u, total > 0 ? 100.0 * s[i].seconds / total : 0.0);
    if (p->n > max_rows) fprintf(f, "(%d more)\n", p->n - max_rows);
    fprintf(f, "%-20s %-34s %8s %10.3f %6.1f%%\n", "all", "", "", total * 1e3 / u, 100.0);
    free(s);
}

void mlm_profile_json(const mlm_profile *p, FILE *f, int units) {
    entry *s = sorted(p);
    double total = mlm_profile_seconds(p), u = units > 0 ? units : 1;
    for (int i = 0; i < p->n; i++)
        fprintf(f, "{\"profile_op\":\"%s\",\"shape\":\"%s\",\"calls\":%.2f,\"ms\":%.4f,\"share\":%.4f}\n", s[i].op,
                s[i].shape, s[i].calls / u, s[i].seconds * 1e3 / u, total > 0 ? s[i].seconds / total : 0.0);
    free(s);
}
