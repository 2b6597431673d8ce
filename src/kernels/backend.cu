/*
 * The CUDA backend (twin: src/host/cpu/backend.c): device selection, the backend
 * state (one stream, the cuBLASLt handle and workspace, scratch buffers grown on
 * demand), memory ops, f32 <-> bf16 conversions, CUDA graphs and the op table. The
 * ops live in one file per family, named like its CPU twin in src/host/cpu/:
 * embedding.cu, layernorm.cu, linear.cu (over matmul.cu's cuBLASLt GEMM),
 * attention.cu (flash_attention.cu up to FLASH_MAX_S positions, cuBLAS beyond),
 * mlm_head.cu, reduce.cu and adamw.cu.
 *
 * Everything is queued on the backend's stream in call order; only download and
 * sync wait for the device. act and wgt buffers are bf16 (act_size = wgt_size = 2).
 * A training micro-batch's ops are replayed as a CUDA graph (cuda_replay).
 */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "mlm/backend_cuda.h"

enum { CONVERT_THREADS = 256, SCRATCH_ALIGN = 256 };

/* ---- memory ---- */

void *cuda_alloc(mlm_backend *be, size_t bytes, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();   // clear it, then ask what is left
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        mlm_die(MLM_EXIT_RUNTIME,
                "cuda backend: cannot allocate %zu bytes (%.2f GiB) for %s: %s; %.2f of %.2f GiB free "
                "on the device; lower train.micro_batch or the sequence length",
                bytes, bytes / 1073741824.0, what, cudaGetErrorString(e), free_b / 1073741824.0,
                total_b / 1073741824.0);
    }
    return p;
}

static void graphs_drop(cuda_state *st);

/* Graphs may hold p: they are forgotten first (training frees nothing until the
 * model goes). */
void cuda_free(mlm_backend *be, void *p) {
    if (!p) return;
    cuda_graphs_reset(cuda_st(be));
    cudaCheck(cudaFree(p));
}

void cuda_upload(mlm_backend *be, void *dst, const void *host_src, size_t bytes) {
    cuda_state *st = cuda_st(be);
    if (bytes == 0) return;
    if (bytes > UPLOAD_SLOT_BYTES || st->capturing) {   // pageable: the driver stages it, the host waits
        cudaCheck(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, st->stream));
        return;
    }
    unsigned slot = st->next_slot++ % UPLOAD_SLOTS;
    char *staged = (char *)st->slots + (size_t)slot * UPLOAD_SLOT_BYTES;
    cudaCheck(cudaEventSynchronize(st->slot_done[slot]));   // its previous copy has left it
    memcpy(staged, host_src, bytes);
    cudaCheck(cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, st->stream));
    cudaCheck(cudaEventRecord(st->slot_done[slot], st->stream));
}

void cuda_download(mlm_backend *be, void *host_dst, const void *src, size_t bytes) {
    cuda_state *st = cuda_st(be);
    cudaCheck(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, st->stream));
    cudaCheck(cudaStreamSynchronize(st->stream));
}

/* D2H into pageable memory would wait for the stream, so the copy goes to pinned
 * memory behind an event; finish waits for the event alone. */
void cuda_download_start(mlm_backend *be, void *host_dst, const void *src, size_t bytes) {
    cuda_state *st = cuda_st(be);
    if (st->pending_dst || bytes > PINNED_BYTES)
        mlm_die(MLM_EXIT_RUNTIME, "cuda backend: download_start of %zu bytes with %s pending (one, at most %d bytes)",
                bytes, st->pending_dst ? "one" : "none", PINNED_BYTES);
    cudaCheck(cudaMemcpyAsync(st->pinned, src, bytes, cudaMemcpyDeviceToHost, st->stream));
    cudaCheck(cudaEventRecord(st->copied, st->stream));
    st->pending_dst = host_dst;
    st->pending_bytes = bytes;
}

void cuda_download_finish(mlm_backend *be) {
    cuda_state *st = cuda_st(be);
    if (!st->pending_dst) return;
    cudaCheck(cudaEventSynchronize(st->copied));
    memcpy(st->pending_dst, st->pinned, st->pending_bytes);
    st->pending_dst = NULL;
}

void cuda_zero(mlm_backend *be, void *p, size_t bytes) {
    cudaCheck(cudaMemsetAsync(p, 0, bytes, cuda_st(be)->stream));
}

void cuda_sync(mlm_backend *be) { cudaCheck(cudaStreamSynchronize(cuda_st(be)->stream)); }

/* Free device memory, less a margin for the scratch buffers the ops grow on first use. */
size_t cuda_mem_free(mlm_backend *be) {
    size_t free_b = 0, total = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total));
    size_t margin = (size_t)512 << 20;
    return free_b > margin ? free_b - margin : 0;
}

/* *buf holds at least bytes afterwards; growing waits for the stream, whose queued
 * work may still use the old buffer, and drops the recorded graphs, which hold its
 * address. It never happens inside a capture: a key's first call runs eagerly and
 * grows what the key needs. */
static void *grow(cuda_state *st, void **buf, size_t *cap, size_t bytes, const char *what) {
    if (bytes <= *cap) return *buf;
    if (st->capturing)
        mlm_die(MLM_EXIT_RUNTIME, "cuda backend: the %s must grow inside a CUDA graph capture (a bug: the same key "
                "asked for less before); MLM_CUDA_GRAPHS=0 runs without graphs", what);
    cudaCheck(cudaStreamSynchronize(st->stream));
    graphs_drop(st);
    cudaCheck(cudaFree(*buf));
    *buf = NULL;
    *cap = 0;
    size_t rounded = (bytes + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);   // whole MiB
    cudaError_t e = cudaMalloc(buf, rounded);
    if (e != cudaSuccess)
        mlm_die(MLM_EXIT_RUNTIME, "cuda backend: cannot grow the %s to %zu bytes: %s", what, rounded,
                cudaGetErrorString(e));
    *cap = rounded;
    return *buf;
}

void cuda_scratch_slices(cuda_state *st, int count, const size_t *bytes, void **out) {
    size_t at[16], used = 0;
    if (count > 16) mlm_die(MLM_EXIT_RUNTIME, "cuda backend: %d scratch slices, at most 16", count);
    for (int i = 0; i < count; i++) {
        at[i] = used;
        used += (bytes[i] + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    }
    char *base = (char *)grow(st, &st->scratch, &st->scratch_bytes, used, "scratch buffer");
    for (int i = 0; i < count; i++) out[i] = base + at[i];
}

void *cuda_partials(cuda_state *st, size_t bytes) {
    return grow(st, &st->partials, &st->partials_bytes, bytes, "reduction partials");
}

/* ---- conversions: 8 elements per thread ---- */

template <class D, class S> __global__ void convert_kernel(D *dst, const S *src, size_t n) {
    size_t i = 8 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    int cnt = run8(i, n);
    if (!cnt) return;
    float v[8];
    load8(v, src + i, cnt);
    store8(dst + i, v, cnt);
}

static void convert_f32_to_bf16(cuda_state *st, bf16 *dst, const float *src, size_t n) {
    if (!n) return;
    convert_kernel<<<cdiv(cdiv(n, 8), CONVERT_THREADS), CONVERT_THREADS, 0, st->stream>>>(dst, src, n);
    launchCheck();
}

static void convert_bf16_to_f32(cuda_state *st, float *dst, const bf16 *src, size_t n) {
    if (!n) return;
    convert_kernel<<<cdiv(cdiv(n, 8), CONVERT_THREADS), CONVERT_THREADS, 0, st->stream>>>(dst, src, n);
    launchCheck();
}

void cuda_upload_f32_as_act(mlm_backend *be, void *dst_act, const float *src, size_t n) {
    cuda_state *st = cuda_st(be);
    size_t bytes = n * sizeof(float);
    void *staged;   // f32 (n)
    cuda_scratch_slices(st, 1, &bytes, &staged);
    cudaCheck(cudaMemcpyAsync(staged, src, bytes, cudaMemcpyHostToDevice, st->stream));
    convert_f32_to_bf16(st, (bf16 *)dst_act, (const float *)staged, n);
}

void cuda_download_act_as_f32(mlm_backend *be, float *dst, const void *src_act, size_t n) {
    cuda_state *st = cuda_st(be);
    size_t bytes = n * sizeof(float);
    void *staged;   // f32 (n)
    cuda_scratch_slices(st, 1, &bytes, &staged);
    convert_bf16_to_f32(st, (float *)staged, (const bf16 *)src_act, n);
    cuda_download(be, dst, staged, bytes);
}

void cuda_copy_master_to_wgt(mlm_backend *be, void *dst_wgt, const float *master, size_t n) {
    convert_f32_to_bf16(cuda_st(be), (bf16 *)dst_wgt, master, n);
}

/* ---- replay: CUDA graphs ----
 * A key's first call runs fn eagerly, which grows the scratch buffers and picks
 * the cuBLASLt plans it needs; the second is captured into a graph (its ops are
 * recorded, not run) and the graph launched; later calls only launch it. The
 * arguments depend on the key alone (backend.h), and the values that change live
 * in device memory, so a replay equals an eager run. A capture that fails turns
 * graphs off for the run with a warning: the ops then run eagerly, as before. */

static void graphs_drop(cuda_state *st) {
    for (int i = 0; i < st->ngraphs; i++)
        if (st->graphs[i].exec) {
            cudaCheck(cudaGraphExecDestroy(st->graphs[i].exec));   // one in flight is freed when it ends
            st->graphs[i].exec = NULL;
        }
}

/* Forgets every key: the graphs hold pointers to memory about to be freed, or ops
 * about to change (the attention path). */
void cuda_graphs_reset(cuda_state *st) {
    if (!st->ngraphs) return;
    cudaCheck(cudaStreamSynchronize(st->stream));
    graphs_drop(st);
    st->ngraphs = 0;
}

static void graphs_fail(cuda_state *st, const char *what, cudaError_t e) {
    cudaGetLastError();   // clear it
    mlm_log("warning: cuda backend: %s: %s; running without CUDA graphs", what, cudaGetErrorString(e));
    graphs_drop(st);
    st->graphs_off = 1;
}

/* Records fn into e->exec; 0, or -1 with graphs turned off (nothing was run). */
static int capture(cuda_state *st, cuda_graph *e, void (*fn)(void *), void *ctx) {
    cudaGraph_t g = NULL;
    cudaError_t err = cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal);
    if (err != cudaSuccess) {
        graphs_fail(st, "cannot begin a stream capture", err);
        return -1;
    }
    st->capturing = 1;
    fn(ctx);
    st->capturing = 0;
    err = cudaStreamEndCapture(st->stream, &g);
    if (err == cudaSuccess) err = cudaGraphInstantiate(&e->exec, g, 0);
    if (g) cudaCheck(cudaGraphDestroy(g));
    if (err != cudaSuccess) {
        e->exec = NULL;
        graphs_fail(st, "cannot record a micro-batch as a CUDA graph", err);
        return -1;
    }
    if (st->graphs_recorded++ == 0)
        mlm_log("cuda backend: training micro-batches replay as CUDA graphs (MLM_CUDA_GRAPHS=0: launch each op)");
    return 0;
}

/* The entry of key; a new one in a free slot, else in place of the least recently
 * used (its graph is destroyed). */
static cuda_graph *graph_entry(cuda_state *st, uint64_t key) {
    cuda_graph *lru = NULL;
    for (int i = 0; i < st->ngraphs; i++) {
        cuda_graph *e = &st->graphs[i];
        if (e->key == key) return e;
        if (!lru || e->last_use < lru->last_use) lru = e;
    }
    cuda_graph *e = st->ngraphs < CUDA_GRAPHS_MAX ? &st->graphs[st->ngraphs++] : lru;
    if (e->exec) cudaCheck(cudaGraphExecDestroy(e->exec));   // the evicted key's; a fresh slot has none
    *e = (cuda_graph){key, 0, NULL, 0};
    return e;
}

static void cuda_replay(mlm_backend *be, uint64_t key, void (*fn)(void *), void *ctx) {
    cuda_state *st = cuda_st(be);
    if (st->graphs_off) {
        fn(ctx);
        return;
    }
    cuda_graph *e = graph_entry(st, key);
    e->last_use = ++st->replays;
    if (!e->seen) {   // the key's eager first call
        e->seen = 1;
        fn(ctx);
        return;
    }
    if (!e->exec && capture(st, e, fn, ctx) != 0) {
        fn(ctx);   // the capture ran nothing
        return;
    }
    cudaCheck(cudaGraphLaunch(e->exec, st->stream));
}

extern "C" void mlm_cuda_use_graphs(mlm_backend *be, int on) {
    cuda_state *st = cuda_st(be);
    cuda_graphs_reset(st);
    st->graphs_off = !on;
}

/* ---- lifetime ---- */

static void cuda_destroy(mlm_backend *be) {
    cuda_state *st = cuda_st(be);
    cudaCheck(cudaStreamSynchronize(st->stream));
    graphs_drop(st);
    cudaCheck(cudaEventDestroy(st->copied));
    cudaCheck(cudaFreeHost(st->pinned));
    for (int i = 0; i < UPLOAD_SLOTS; i++) cudaCheck(cudaEventDestroy(st->slot_done[i]));
    cudaCheck(cudaFreeHost(st->slots));
    cudaCheck(cudaFree(st->scratch));
    cudaCheck(cudaFree(st->partials));
    cudaCheck(cudaFree(st->lt_workspace));
    if (st->gemm_tune) gemm_tune_report(st);
    gemm_cache_free(st->gemms);
    cublasCheck(cublasLtDestroy(st->lt));
    cudaCheck(cudaStreamDestroy(st->stream));
    free(st);
    free(be);
}

/* 0 when device can run this build, else -1 with the reason in err. */
static int check_device(int device, char *err, size_t err_len) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return mlm_fail(err, err_len, "cuda backend: %s", cudaGetErrorString(e));
    }
    if (count == 0) return mlm_fail(err, err_len, "cuda backend: no CUDA device");
    if (device < 0 || device >= count)
        return mlm_fail(err, err_len, "cuda backend: device %d does not exist (%d device%s)", device,
                        count, count == 1 ? "" : "s");
    cudaDeviceProp prop;
    e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) return mlm_fail(err, err_len, "cuda backend: device %d: %s", device, cudaGetErrorString(e));
    if (prop.major < 9)
        return mlm_fail(err, err_len,
                        "cuda backend: device %d (%s) has compute capability %d.%d; this build needs 9.0 "
                        "(Hopper) or newer",
                        device, prop.name, prop.major, prop.minor);
    return 0;
}

extern "C" mlm_backend *mlm_backend_cuda(int device, char *err, size_t err_len) {
    if (check_device(device, err, err_len)) return NULL;
    // the switches, checked before anything is allocated: MLM_CUDA_GRAPHS=0 launches every op;
    // MLM_BIAS_GRAD=colsum sums bias gradients in passes of their own, not GEMM epilogues;
    // MLM_GEMM_TUNE=1 chooses each GEMM's algorithm by timing (matmul.cu)
    static const char *const graphs[] = {"1", "0", NULL}, *const bgrad[] = {"epilogue", "colsum", NULL},
                             *const tune[] = {"0", "1", NULL};
    int graphs_off = mlm_env_choice("MLM_CUDA_GRAPHS", graphs) == 1;
    int bgrad_colsum = mlm_env_choice("MLM_BIAS_GRAD", bgrad) == 1;
    int gemm_tune = mlm_env_choice("MLM_GEMM_TUNE", tune) == 1;
    cudaCheck(cudaSetDevice(device));
    cuda_state *st = (cuda_state *)mlm_xcalloc(1, sizeof *st, "cuda backend state");
    st->device = device;
    st->graphs_off = graphs_off;
    st->bgrad_colsum = bgrad_colsum;
    st->gemm_tune = gemm_tune;
    cudaCheck(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
    cublasCheck(cublasLtCreate(&st->lt));
    cudaCheck(cudaMalloc(&st->lt_workspace, LT_WORKSPACE_BYTES));
    cudaCheck(cudaMallocHost(&st->pinned, PINNED_BYTES));
    cudaCheck(cudaEventCreateWithFlags(&st->copied, cudaEventDisableTiming));
    cudaCheck(cudaMallocHost(&st->slots, (size_t)UPLOAD_SLOTS * UPLOAD_SLOT_BYTES));
    for (int i = 0; i < UPLOAD_SLOTS; i++)
        cudaCheck(cudaEventCreateWithFlags(&st->slot_done[i], cudaEventDisableTiming));
    st->gemms = gemm_cache_new();
    mlm_backend *be = (mlm_backend *)mlm_xcalloc(1, sizeof *be, "cuda backend");
    be->name = "cuda";
    be->act_size = sizeof(bf16);
    be->wgt_size = sizeof(bf16);
    be->impl = st;
#define MLM_OP(ret, op, ...) be->op = cuda_##op;
#include "mlm/backend_ops.def"
    be->replay = cuda_replay;
    be->rows_align = 64;   // a few graphs cover every masked-row count, at most 63 rows of padding
    be->logits_align = 128;   // bf16 logits rows 256-byte aligned: the decoder GEMMs' fast kernels
    be->destroy = cuda_destroy;
    mlm_backend_check(be);
    return be;
}
