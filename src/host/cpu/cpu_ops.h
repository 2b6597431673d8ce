/*
 * Internals of the CPU backend (fp32, OpenBLAS, OpenMP): its private state, the
 * helpers every op family shares (scratch arena, threaded matmul, Philox dropout,
 * deterministic column sums), and the op functions that backend_cpu.c puts into the table.
 * act and wgt buffers are plain float arrays here.
 */
#ifndef MLM_CPU_OPS_H
#define MLM_CPU_OPS_H

#include <cblas.h>
#undef I   // complex.h's imaginary unit, pulled in by cblas.h; I is a width here
#include <stddef.h>
#include <stdint.h>

#include "mlm/backend.h"

typedef struct {
    float *scratch;       // grown on demand, reused by ops that need temporaries
    size_t scratch_n;     // floats in scratch
} cpu_state;

/* A scratch buffer of at least n floats, valid until the next call. */
float *cpu_scratch(mlm_backend *be, size_t n);

/* C = alpha op(A) op(B) + beta C, row-major, as cblas_sgemm. The larger of C's row
 * and column ranges is split over the OpenMP team, one single-threaded sgemm per
 * block, so OpenBLAS never runs its thread pool beside ours (the two pools spinning
 * against each other cost ~40% of a layer's time on 2 cores). */
void cpu_gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

static inline int cpu_dropout_on(const mlm_dropout *drop) { return drop && drop->threshold; }
/* x[k] *= keep(e0 + k) ? scale : 0 for k < n: the mask of sequence b, elements e0..
 * (cpu_dropout.c). */
void cpu_dropout_apply(const mlm_dropout *drop, int b, uint32_t e0, float *x, int n);

/* acc[c] += sum over rows r of x[r, c] for x (M, n); columns split over threads,
 * rows summed in order, so the result does not depend on the thread count. */
void cpu_colsum_add(float *acc, const float *x, int M, int n);

/* ---- the ops of include/mlm/backend_ops.def, cpu_OP each: memory in backend_cpu.c,
 * the rest in the file of their family ---- */
#define MLM_OP(ret, op, params, ...) ret cpu_##op params;
#include "mlm/backend_ops.def"

#endif
