/*
 * What ops cost, added up per (op, shape): the profiler's measured times (profile.h)
 * and the performance model's predictions (predict.h) keep it alike
 * (src/host/op_table.c).
 */
#ifndef MLM_OP_TABLE_H
#define MLM_OP_TABLE_H

typedef struct {
    long calls, launches;
    double flops, bytes, seconds;
    double flops_bound_s;   // of seconds: launches bound by their FLOPs (the model's)
} mlm_op_cost;

typedef struct {
    const char *op;         // the wrapper's string literal (backend_ops.c)
    char shape[128];
    mlm_op_cost c;
} mlm_op_entry;

enum { MLM_OP_TABLE_MAX = 512 };
typedef struct {
    mlm_op_entry e[MLM_OP_TABLE_MAX];
    int n;
} mlm_op_table;

/* The entry of (op, shape), a new one the first time; dies when the table is full. */
mlm_op_entry *mlm_op_table_entry(mlm_op_table *t, const char *op, const char *shape);
/* The sum over the entries of op (every op when NULL) and shape (every shape when NULL). */
mlm_op_cost mlm_op_table_sum(const mlm_op_table *t, const char *op, const char *shape);
/* A copy of the entries, the most seconds first (caller frees). */
mlm_op_entry *mlm_op_table_sorted(const mlm_op_table *t);

#endif
