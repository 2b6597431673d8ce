/*
 * What the CPU backend's files share (src/kernels/common.cuh is the CUDA twin): the
 * backend state, the helpers of several op families (scratch arena, threaded matmul,
 * deterministic column sums, Philox dropout, LayerNorm rows, the linear gradients),
 * and the declarations of the ops backend.c puts into the table, one cpu_OP per op
 * of include/mlm/backend_ops.def. act and wgt buffers are plain float arrays here.
 * Each op family has one file, named like its CUDA twin in src/kernels/.
 */
#ifndef MLM_CPU_COMMON_H
#define MLM_CPU_COMMON_H

#include <cblas.h>
#undef I   // complex.h's imaginary unit, pulled in by cblas.h; I is a width here
#include <stddef.h>
#include <stdint.h>

#include "mlm/backend.h"

typedef struct {
    float *scratch;       // grown on demand, reused by ops that need temporaries
    size_t scratch_n;     // floats in scratch
} cpu_state;

/* A scratch buffer of at least n floats, valid until the next call (backend.c). */
float *cpu_scratch(mlm_backend *be, size_t n);

/* C = alpha op(A) op(B) + beta C, row-major, as cblas_sgemm (matmul.c). The larger of
 * C's row and column ranges is split over the OpenMP team, one single-threaded sgemm
 * per block, so OpenBLAS never runs its thread pool beside ours (the two pools
 * spinning against each other cost ~40% of a layer's time on 2 cores). */
void cpu_gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* acc[c] += sum over rows r of x[r, c] for x (M, n) with rows ld apart; columns split
 * over threads, rows summed in order, so the result does not depend on the thread
 * count (reduce.c). */
void cpu_colsum_add(float *acc, const float *x, int M, int n, size_t ld);

static inline int cpu_dropout_on(const mlm_dropout *drop) { return drop && drop->threshold; }
/* x[k] *= keep(e0 + k) ? scale : 0 for k < n: the mask of sequence b, elements e0..
 * (dropout.c). */
void cpu_dropout_apply(const mlm_dropout *drop, int b, uint32_t e0, float *x, int n);

/* ---- LayerNorm rows (layernorm.c), for the embeddings too ---- */
/* One row: y = (x - mean) * rstd * w + b. y may alias x. */
void cpu_ln_row_fwd(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int d,
                    float eps);
/* One row: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w. dx may alias dy. */
void cpu_ln_row_bwd(float *dx, const float *dy, const float *x, float mean, float rstd, const float *w, int d);
/* dln_w[c] += sum_r dy[r,c] * xhat[r,c]; dln_b[c] += sum_r dy[r,c]. dy, x: (M, d). */
void cpu_ln_param_grads(float *dln_w, float *dln_b, const float *dy, const float *x, const float *mean,
                        const float *rstd, int M, int d);

/* y (N, O), rows ldy apart, = in (N, I) W^T (O, I) + b (linear.c; the decoder's
 * forward too). */
void cpu_affine(float *y, int ldy, const float *in, const float *W, const float *b, int N, int I, int O);

/* dW += dout^T in; db += column sums of dout; din = (or +=) dout W, dout (N, O) with
 * rows ldo apart (linear.c; the decoder's backward too). */
void cpu_linear_grads(float *din, float *dW, float *db, const float *dout, int ldo, const float *in, const float *W,
                      int N, int I, int O, int din_accumulate);

/* ---- the ops of include/mlm/backend_ops.def, cpu_OP each: memory in backend.c, the
 * rest in the file of their family ---- */
#define MLM_OP(ret, op, flags, params, ...) ret cpu_##op params;
#include "mlm/backend_ops.def"

#endif
