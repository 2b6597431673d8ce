/*
 * The CPU backend (twin: src/kernels/backend.cu): fp32 everywhere (act_size =
 * wgt_size = 4), matmuls through OpenBLAS cblas_sgemm, row loops through OpenMP. It
 * is the oracle every CUDA op is tested against. This file holds host memory, thread
 * setup, the scratch arena and the op table; each op family has its own file
 * (embedding.c, layernorm.c, linear.c, attention.c, mlm_head.c, reduce.c, adamw.c),
 * named like its CUDA twin, over the helpers of matmul.c, reduce.c and dropout.c,
 * all declared in common.h.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlm/log.h"
#include "common.h"

/* ---- memory: host buffers, 64-byte aligned for the vector loops ---- */

void *cpu_alloc(mlm_backend *be, size_t bytes, const char *what) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) mlm_die(MLM_EXIT_RUNTIME, "cpu backend: out of host memory allocating %zu bytes for %s",
                    bytes, what);
    return p;
}

void cpu_free(mlm_backend *be, void *p) { free(p); }

void cpu_upload(mlm_backend *be, void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

void cpu_download(mlm_backend *be, void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

void cpu_zero(mlm_backend *be, void *p, size_t bytes) { memset(p, 0, bytes); }

void cpu_sync(mlm_backend *be) {}

size_t cpu_mem_free(mlm_backend *be) {
    long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (size_t)pages * (size_t)size : 0;
}

void cpu_upload_f32_as_act(mlm_backend *be, void *dst, const float *src, size_t n) {
    if (dst != src) memcpy(dst, src, n * sizeof(float));
}

void cpu_download_act_as_f32(mlm_backend *be, float *dst, const void *src, size_t n) {
    if (dst != src) memcpy(dst, src, n * sizeof(float));
}

/* The master weights are the compute copy here: nothing to do when they are one buffer. */
void cpu_copy_master_to_wgt(mlm_backend *be, void *dst, const float *master, size_t n) {
    if (dst != master) memcpy(dst, master, n * sizeof(float));
}

/* Nothing runs behind the host here: the copy is done at once. */
void cpu_download_start(mlm_backend *be, void *host_dst, const void *src, size_t bytes) {
    memcpy(host_dst, src, bytes);
}

void cpu_download_finish(mlm_backend *be) {}

float *cpu_scratch(mlm_backend *be, size_t n) {
    cpu_state *st = be->impl;
    if (n > st->scratch_n) {
        free(st->scratch);
        st->scratch = cpu_alloc(be, n * sizeof(float), "cpu backend scratch");
        st->scratch_n = n;
    }
    return st->scratch;
}

/* ---- the table ---- */

static void cpu_destroy(mlm_backend *be) {
    cpu_state *st = be->impl;
    free(st->scratch);
    free(st);
    free(be);
}

static void cpu_set_threads(int threads) {
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    omp_set_num_threads(threads > 0 ? threads : 1);
    openblas_set_num_threads(1);   // all parallelism is ours: see cpu_gemm
}

mlm_backend *mlm_backend_cpu(int threads) {
    mlm_backend *be = mlm_xcalloc(1, sizeof *be, "cpu backend");
    cpu_state *st = mlm_xcalloc(1, sizeof *st, "cpu backend state");
    cpu_set_threads(threads);
    *be = (mlm_backend){
        .name = "cpu", .act_size = sizeof(float), .wgt_size = sizeof(float), .impl = st,
#define MLM_OP(ret, op, ...) .op = cpu_##op,
#include "mlm/backend_ops.def"
        .replay = NULL, .rows_align = 1, .logits_align = 1,   // calls cost nothing to repeat here
        .destroy = cpu_destroy,
    };
    mlm_backend_check(be);
    return be;
}
