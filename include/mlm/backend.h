/*
 * The backend op table: the operations a training step is made of, at the
 * granularity the fastest backend fuses them. model.c calls these in straight
 * lines; the CPU backend (fp32, OpenBLAS, threads) is the oracle and the CUDA
 * backend must match it.
 *
 * Buffers are backend memory (host memory on CPU, device memory on CUDA) of four
 * kinds, named in the comments:
 *   act   activations, act_size bytes per element (fp32 on CPU, bf16 on CUDA)
 *   wgt   compute copy of parameters, wgt_size bytes per element (fp32 / bf16)
 *   f32   always fp32: gradients, master weights, moments, LayerNorm statistics,
 *         logits, losses
 *   i32   int32 ids, positions, labels, lengths
 * The ops themselves, their arguments and shapes are listed once, in
 * include/mlm/backend_ops.def.
 */
#ifndef MLM_BACKEND_H
#define MLM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MLM_ACT_NONE = 0, MLM_ACT_GELU = 1 } mlm_act;

/* The values that change from one training micro-batch to the next while the
 * shapes stay: the model writes them to backend memory before each micro-batch,
 * and the ops read them from there when given this pointer. Then a micro-batch's
 * op sequence has the same arguments every time, so a backend may record it once
 * and replay it (CUDA graphs, `replay` below). */
typedef struct {
    uint32_t step;        // optimizer step, keys dropout
    uint32_t seq_base;    // global index of the micro-batch's first sequence
    float loss_scale;     // cross_entropy's scale
    uint32_t unused;
} mlm_live;

/* Dropout by counter-based Philox: element e of sequence g at step t, site s is
 * kept when philox(ctr = {e/4, site, g, step}, key = seed)[e%4] >= threshold,
 * then scaled by scale = 1/(1-p). p == 0 (threshold == 0) disables it.
 * Sequence b of the micro-batch has global index seq_base + b. When live is set
 * (backend memory), step and seq_base are read from it instead. */
typedef struct {
    uint32_t threshold;   // (uint32)(p * 2^32), 0 = off
    float scale;          // 1 / (1 - p)
    uint64_t seed;
    uint32_t step;
    uint32_t site;        // see MLM_SITE_* in model.h
    uint32_t seq_base;
    const mlm_live *live; // or NULL
} mlm_dropout;

/* Arguments of one AdamW update (decoupled weight decay, bias-corrected). */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int step;             // 1-based, for bias correction
    float grad_clip;      // clip the global norm to this; 0 = off
} mlm_adamw_args;

/* What an op of backend_ops.def does besides its work, as flags. */
enum {
    MLM_OP_WAITS = 1,     // waits for the device or allocates: never inside a replay
    MLM_OP_UNTIMED = 2,   // no work of a training step (a size, memory): not profiled
};

typedef struct mlm_backend mlm_backend;
struct mlm_backend {
    const char *name;     // "cpu" or "cuda"
    size_t act_size;
    size_t wgt_size;
    void *impl;           // backend private state

    /* The ops of include/mlm/backend_ops.def, one member each. */
#define MLM_OP(ret, op, flags, params, ...) ret(*op) params;
#include "mlm/backend_ops.def"

    /* ---- replay ----
     * Runs fn(ctx). fn must queue ops only (no download or sync), with arguments
     * that depend on key alone; what changes between calls is in backend memory
     * (inputs, mlm_live). A backend may record the ops the first times it sees key
     * and afterwards replay the record instead of calling fn (CUDA graphs). NULL:
     * the caller just calls fn. */
    void (*replay)(mlm_backend *be, uint64_t key, void (*fn)(void *ctx), void *ctx);
    /* Padding rows (label -1) make the masked-row count of a micro-batch a multiple
     * of this, so that few keys cover every micro-batch; 1 = no padding. */
    int rows_align;
    /* The model pads every logits row to a multiple of this many columns (the
     * decoder GEMMs' leading dimensions stay aligned); 1 = no padding. */
    int logits_align;

    void (*destroy)(mlm_backend *be);
};

/* The first op of backend_ops.def whose slot in be is empty, or NULL when every op
 * is there. */
const char *mlm_backend_missing_op(const mlm_backend *be);
/* Dies naming the backend and the op when a slot is empty: every backend
 * constructor calls it before handing the table out. */
void mlm_backend_check(const mlm_backend *be);

/* CPU backend; threads <= 0 means all cores. */
mlm_backend *mlm_backend_cpu(int threads);

/* OpenBLAS kernels (src/host/cpu/blas_core.c). mlm_cpu_blas_reexec, first in a main():
 * where OpenBLAS took the CPU for a pre-AVX2 core (a model newer than the library) and
 * the CPU has AVX2 or AVX-512, runs the program again with OPENBLAS_CORETYPE naming
 * those kernels (never when the user set it); returns where it does not. */
void mlm_cpu_blas_reexec(char **argv);
/* The kernel set to ask for when OpenBLAS detected `detected`, or NULL to keep it. */
const char *mlm_cpu_blas_core_choice(const char *detected);
/* "N threads, OpenBLAS NAME kernels" (and who chose them) into buf, for the log. */
const char *mlm_cpu_describe(char *buf, size_t n);

#endif
