/*
 * The performance model of the CUDA backend (src/host/predict.c), for a machine
 * without a GPU: a backend with the CUDA backend's dtypes and memory behaviour that
 * runs nothing. Each op call is broken into the kernel launches, GEMMs and copies
 * that src/kernels makes for it, and each of those costs
 *     max(FLOPs / ceiling, bytes / bandwidth) (+ launch overhead without CUDA graphs)
 * with FLOPs the tensor-core work (GEMMs and attention) and bytes what the kernel
 * reads and writes in device memory. Behind the wrapping backend (backend_wrap.h)
 * the costs add up per (op, shape), as the profiler's times do; bench_step
 * --predict walks a training step through it and prints the table.
 *
 * Bytes are each kernel's inputs and outputs once: what a kernel reads again (a
 * head's k and v for each query tile, a GEMM's tiles) is taken to come from the
 * cache. What it leaves out: element-wise arithmetic (the kernels it concerns are
 * memory-bound), overlap of kernels, the minimum time of a small kernel, tail
 * effects and occupancy (register spills included); attention is costed for
 * full-length sequences. CUB's radix-sort passes and temporary storage are
 * estimates.
 */
#ifndef MLM_PREDICT_H
#define MLM_PREDICT_H

#include <stddef.h>
#include <stdio.h>

#include "mlm/backend.h"
#include "mlm/op_table.h"

/* The machine the model predicts for. */
typedef struct {
    double gemm_flops;    // bf16 tensor-core GEMM, FLOP/s
    double attn_flops;    // flash attention's tensor-core work, FLOP/s
    double device_bw;     // device memory, bytes/s (read + write)
    double host_bw;       // host <-> device copies from pageable memory, bytes/s
    double copy_s;        // fixed cost of a host <-> device copy, s
    double launch_s;      // cost of a kernel launch when CUDA graphs are off, s
    double device_bytes;  // device memory
} mlm_ceilings;

/* The H100 of docs/PERF.md: GEMM 427 TFLOP/s (cuBLAS, 32768x768x3072), attention at
 * half of 787 TFLOP/s, 3.0 TB/s, 80 GiB; pageable copies at 25 GB/s and 10 us, a
 * launch 2 us (assumptions, not measurements). */
mlm_ceilings mlm_ceilings_h100(void);

typedef struct mlm_predict mlm_predict;

/* The model backend behind a wrapper; *out receives the counts, which outlive the
 * backend until mlm_predict_free. graphs: launches cost nothing extra (CUDA graphs),
 * else launch_s each. */
mlm_backend *mlm_predict_backend(const mlm_ceilings *c, int graphs, mlm_predict **out);
void mlm_predict_free(mlm_predict *p);
/* Forgets the counts so far (the memory high-water mark stays). */
void mlm_predict_reset(mlm_predict *p);

/* The predicted cost of one (op, shape), or the sum over all shapes of op when shape
 * is NULL, or over everything when op is NULL too. */
mlm_op_cost mlm_predict_get(const mlm_predict *p, const char *op, const char *shape);

/* Peak device memory: the allocations, the scratch buffers the ops grew, the
 * cuBLASLt workspace. */
size_t mlm_predict_peak_bytes(const mlm_predict *p);

/* The table, slowest first, per unit (e.g. per step): op, shape, calls, GFLOP, MB,
 * predicted ms and share. */
void mlm_predict_print(const mlm_predict *p, FILE *f, int units, int max_rows);
/* The same as one JSON object per line, beside the profiler's (profile.h):
 * {"predict_op":..,"shape":..,"calls":..,"gflop":..,"mb":..,"ms":..,"share":..}. */
void mlm_predict_json(const mlm_predict *p, FILE *f, int units);

#endif
