/* The cost table of include/mlm/op_table.h, for profile.c and predict.c. */
#include "mlm/op_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/log.h"

mlm_op_entry *mlm_op_table_entry(mlm_op_table *t, const char *op, const char *shape) {
    for (int i = 0; i < t->n; i++)
        if (t->e[i].op == op && !strcmp(t->e[i].shape, shape)) return &t->e[i];
    if (t->n == MLM_OP_TABLE_MAX)
        mlm_die(MLM_EXIT_RUNTIME, "op table: more than %d (op, shape) pairs (op %s, shape %s)", MLM_OP_TABLE_MAX, op,
                shape);
    mlm_op_entry *e = &t->e[t->n++];
    memset(e, 0, sizeof *e);
    e->op = op;
    snprintf(e->shape, sizeof e->shape, "%s", shape);
    return e;
}

mlm_op_cost mlm_op_table_sum(const mlm_op_table *t, const char *op, const char *shape) {
    mlm_op_cost s = {0};
    for (int i = 0; i < t->n; i++) {
        const mlm_op_cost *c = &t->e[i].c;
        if ((op && strcmp(t->e[i].op, op)) || (shape && strcmp(t->e[i].shape, shape))) continue;
        s.calls += c->calls, s.launches += c->launches;
        s.flops += c->flops, s.bytes += c->bytes, s.seconds += c->seconds, s.flops_bound_s += c->flops_bound_s;
    }
    return s;
}

static int by_seconds(const void *a, const void *b) {
    double x = ((const mlm_op_entry *)a)->c.seconds, y = ((const mlm_op_entry *)b)->c.seconds;
    return (x < y) - (x > y);
}

mlm_op_entry *mlm_op_table_sorted(const mlm_op_table *t) {
    mlm_op_entry *s = mlm_xmalloc((t->n ? t->n : 1) * sizeof *s, "op table");
    memcpy(s, t->e, t->n * sizeof *s);
    qsort(s, t->n, sizeof *s, by_seconds);
    return s;
}
