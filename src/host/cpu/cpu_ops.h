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

/* ---- ops (cpu_norm.c) ---- */
void cpu_embed_fwd(mlm_backend *be, void *out, void *sum, float *mean, float *rstd,
                   const int32_t *ids, const int32_t *types, const void *wte, const void *wpe,
                   const void *wtt, const void *ln_w, const void *ln_b,
                   int B, int S, int d, float eps, const mlm_dropout *drop);
void cpu_embed_bwd(mlm_backend *be, float *dwte, float *dwpe, float *dwtt, float *dln_w,
                   float *dln_b, const void *dout, const void *sum, const float *mean,
                   const float *rstd, const int32_t *ids, const int32_t *types, const void *ln_w,
                   int B, int S, int d, const mlm_dropout *drop);
void cpu_residual_ln_fwd(mlm_backend *be, void *out, void *s, float *mean, float *rstd,
                         const void *x, const void *res, const void *ln_w, const void *ln_b,
                         int B, int S, int d, float eps, const mlm_dropout *drop);
void cpu_residual_ln_bwd(mlm_backend *be, void *dx, void *dres, float *dln_w, float *dln_b,
                         const void *dout, const void *s, const float *mean, const float *rstd,
                         const void *ln_w, int B, int S, int d, const mlm_dropout *drop);
void cpu_layernorm_fwd(mlm_backend *be, void *out, float *mean, float *rstd, const void *x,
                       const void *ln_w, const void *ln_b, int M, int d, float eps);
void cpu_layernorm_bwd(mlm_backend *be, void *dx, float *dln_w, float *dln_b, const void *dout,
                       const void *x, const float *mean, const float *rstd, const void *ln_w,
                       int M, int d);

/* ---- ops (cpu_linear.c) ---- */
void cpu_linear_fwd(mlm_backend *be, void *out, void *pre, const void *in, const void *W,
                    const void *b, int N, int I, int O, mlm_act act);
void cpu_linear_bwd(mlm_backend *be, void *din, float *dW, float *db, void *dout,
                    const void *in, const void *W, const void *pre, int N, int I, int O,
                    mlm_act act, int din_accumulate);
void cpu_gather_rows(mlm_backend *be, void *out, const void *in, const int32_t *rows, int M, int d);
void cpu_scatter_rows(mlm_backend *be, void *dfull, const void *drows, const int32_t *rows,
                      int M, int N, int d);
void cpu_decoder_fwd(mlm_backend *be, float *logits, const void *in, const void *W,
                     const void *b, int M, int d, int V);
void cpu_decoder_bwd(mlm_backend *be, void *din, float *dW, float *db, const float *dlogits,
                     const void *in, const void *W, int M, int d, int V);

/* ---- ops (cpu_attention.c) ---- */
size_t cpu_attention_saved_bytes(mlm_backend *be, int B, int S, int H);
void cpu_attention_fwd(mlm_backend *be, void *out, void *saved, const void *qkv,
                       const int32_t *lengths, int B, int S, int H, int dh,
                       const mlm_dropout *drop);
void cpu_attention_bwd(mlm_backend *be, void *dqkv, const void *dout, const void *qkv,
                       const void *out, const void *saved, const int32_t *lengths,
                       int B, int S, int H, int dh, const mlm_dropout *drop);

/* ---- ops (cpu_loss_optim.c) ---- */
void cpu_cross_entropy(mlm_backend *be, float *logits, const int32_t *labels, int M, int V,
                       float scale, const mlm_live *live, float *stats);
void cpu_sum_squares(mlm_backend *be, float *out, const float *g, size_t n);
void cpu_adamw(mlm_backend *be, float *master, void *wgt, const float *g, float *m, float *v,
               size_t n, const mlm_adamw_args *a, const float *gnorm_sq);

#endif
