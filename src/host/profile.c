/*
 * The op profiler (include/mlm/profile.h): a wrapping backend (backend_ops.c) that
 * times every op between two device syncs; bench/bench_step --profile prints it.
 */
#include "mlm/profile.h"

#include <stdlib.h>
#include <string.h>

#include "mlm/backend_wrap.h"
#include "mlm/log.h"
#include "mlm/op_table.h"

struct mlm_profile {
    mlm_backend *inner;
    mlm_op_table t;
    mlm_op_entry *open;   // the op between before and after
    double t0;
};

static void before(void *ctx, const char *op, unsigned flags, const char *shape, const uint64_t *args, int nargs) {
    mlm_profile *p = ctx;
    p->open = NULL;
    if (flags & MLM_OP_UNTIMED) return;
    mlm_op_entry *e = mlm_op_table_entry(&p->t, op, shape);
    p->inner->sync(p->inner);   // what was queued before is not this op's
    p->open = e;
    p->t0 = mlm_now_s();
}

static void after(void *ctx, const char *op) {
    mlm_profile *p = ctx;
    if (!p->open) return;
    p->inner->sync(p->inner);
    p->open->c.calls++;
    p->open->c.seconds += mlm_now_s() - p->t0;
    p->open = NULL;
}

mlm_backend *mlm_profile_wrap(mlm_backend *be, mlm_profile **out) {
    mlm_profile *p = mlm_xcalloc(1, sizeof *p, "profile");
    p->inner = be;
    *out = p;
    mlm_wrap_hooks h = {.ctx = p, .before = before, .after = after};
    return mlm_backend_wrap(be, &h);
}

void mlm_profile_reset(mlm_profile *p) { p->t.n = 0; }

void mlm_profile_free(mlm_profile *p) { free(p); }

void mlm_profile_op(const mlm_profile *p, const char *op, long *calls, double *seconds) {
    mlm_op_cost c = mlm_op_table_sum(&p->t, op, NULL);
    *calls = c.calls;
    *seconds = c.seconds;
}

double mlm_profile_seconds(const mlm_profile *p) { return mlm_op_table_sum(&p->t, NULL, NULL).seconds; }

void mlm_profile_print(const mlm_profile *p, FILE *f, int units, int max_rows) {
    mlm_op_entry *s = mlm_op_table_sorted(&p->t);
    double total = mlm_profile_seconds(p), u = units > 0 ? units : 1;
    fprintf(f, "%-20s %-34s %8s %10s %7s\n", "op", "shape", "calls", "ms", "share");
    for (int i = 0; i < p->t.n && i < max_rows; i++)
        fprintf(f, "%-20s %-34s %8.1f %10.3f %6.1f%%\n", s[i].op, s[i].shape, s[i].c.calls / u,
                s[i].c.seconds * 1e3 / u, total > 0 ? 100.0 * s[i].c.seconds / total : 0.0);
    if (p->t.n > max_rows) fprintf(f, "(%d more)\n", p->t.n - max_rows);
    fprintf(f, "%-20s %-34s %8s %10.3f %6.1f%%\n", "all", "", "", total * 1e3 / u, 100.0);
    free(s);
}

void mlm_profile_json(const mlm_profile *p, FILE *f, int units) {
    mlm_op_entry *s = mlm_op_table_sorted(&p->t);
    double total = mlm_profile_seconds(p), u = units > 0 ? units : 1;
    for (int i = 0; i < p->t.n; i++)
        fprintf(f, "{\"profile_op\":\"%s\",\"shape\":\"%s\",\"calls\":%.2f,\"ms\":%.4f,\"share\":%.4f}\n", s[i].op,
                s[i].shape, s[i].c.calls / u, s[i].c.seconds * 1e3 / u, total > 0 ? s[i].c.seconds / total : 0.0);
    free(s);
}
