/*
 * What the CUDA backend's files share (twin: src/host/cpu/common.h): the backend
 * state (stream, cuBLASLt handle and workspace, scratch buffers, pinned upload
 * slots), the row-major GEMM interface over cuBLASLt (matmul.cu), 16-byte bf16/fp32
 * vector loads and stores and block sums (device.cuh), and the declarations of the
 * ops backend.cu puts into the table, one cuda_OP per op of
 * include/mlm/backend_ops.def. act and wgt buffers are bf16 here; f32 buffers are
 * fp32. Each op family has one file, named like its CPU twin in src/host/cpu/.
 */
#ifndef MLM_KERNELS_COMMON_CUH
#define MLM_KERNELS_COMMON_CUH

#include <stddef.h>
#include <stdint.h>

#include "check.h"
#include "device.cuh"
extern "C" {
#include "mlm/backend.h"
}

struct gemm_cache;   // matmul.cu: cuBLASLt algorithms by problem

/* A recorded micro-batch (backend.h replay): seen once eagerly, then captured. */
struct cuda_graph {
    uint64_t key;
    int seen;
    cudaGraphExec_t exec;       // NULL until captured
    uint64_t last_use;          // st->replays at the last call
};

enum { CUDA_GRAPHS_MAX = 64 };

/* Uploads up to UPLOAD_SLOT_BYTES (a micro-batch's ids, lengths, rows, labels and
 * live values) go through a ring of pinned slots: the host copies into a slot and
 * returns while the device copies from it; a slot is reused once its last copy is
 * done. Larger uploads (parameters, optimizer state) copy from pageable memory. */
enum { UPLOAD_SLOTS = 8, UPLOAD_SLOT_BYTES = 1 << 20 };

struct cuda_state {
    int device;
    cudaStream_t stream;        // every op is queued here, in order
    cublasLtHandle_t lt;
    void *lt_workspace;         // LT_WORKSPACE_BYTES for cuBLASLt
    gemm_cache *gemms;
    void *scratch;              // one op's temporaries, scratch_bytes
    size_t scratch_bytes;
    void *partials;             // reduction partials, partials_bytes
    size_t partials_bytes;
    cuda_graph graphs[CUDA_GRAPHS_MAX];   // replay's records, by key
    int ngraphs;
    int graphs_off;             // MLM_CUDA_GRAPHS=0, or a capture failed: replay just calls
    int capturing;              // inside a stream capture: nothing may wait or allocate
    int graphs_recorded;        // captures so far (logged once)
    int cublas_attention;       // mlm_cuda_use_cublas_attention: the cuBLAS path for every S
    int bgrad_colsum;           // MLM_BIAS_GRAD=colsum: bias gradients by a column-sum pass, never an epilogue
    int gemm_tune;              // MLM_GEMM_TUNE=1: each GEMM problem's algorithm chosen by timing (matmul.cu)
    uint64_t replays;           // replay calls so far
    void *pinned;               // page-locked host memory for download_start (PINNED_BYTES)
    cudaEvent_t copied;         // recorded behind download_start's copy
    void *pending_dst;          // download_start's destination, until download_finish
    size_t pending_bytes;
    void *slots;                // page-locked staging for uploads: UPLOAD_SLOTS x UPLOAD_SLOT_BYTES
    cudaEvent_t slot_done[UPLOAD_SLOTS];   // recorded behind each slot's copy
    unsigned next_slot;
};

enum { PINNED_BYTES = 256 };

enum { LT_WORKSPACE_BYTES = 32 << 20 };

static inline cuda_state *cuda_st(mlm_backend *be) { return (cuda_state *)be->impl; }

static inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

/* ---- scratch (backend.cu) ----
 * Each op takes its temporaries with one call, carved into count slices of
 * bytes[i] (256-byte aligned, 0 allowed) whose addresses go to out[i]; they stay
 * valid until the next call. The buffer grows when an op needs more (in the first
 * step): it waits for the stream, then reallocates. Reductions take their
 * partials from a second buffer the same way, so an op can call them. */
void cuda_scratch_slices(cuda_state *st, int count, const size_t *bytes, void **out);
void *cuda_partials(cuda_state *st, size_t bytes);

/* ---- GEMM (matmul.cu) ----
 * Row-major C (M, N) = alpha op(A) op(B) + beta C (+ bias broadcast over rows),
 * batch times with element strides sa, sb, sc. A and B are bf16: op(A) is (M, K),
 * stored (M, K) or, with ta, (K, M); op(B) is (K, N), stored (K, N) or, with tb,
 * (N, K). C is bf16 or fp32 (ctype), bias (N) has C's type. fp32 accumulation.
 * bgrad (M floats), for an unbatched GEMM with ta and fp32 C, gets the sums of op(A)'s rows
 * over K, written, not added (cuBLASLt's BGRADB epilogue): cuda_gemm_try returns
 * false, having done nothing, when cuBLASLt has no algorithm with that epilogue for
 * the problem; cuda_gemm dies then. */
struct gemm_args {
    int M, N, K;
    const void *A;
    int lda;
    bool ta = false;
    const void *B;
    int ldb;
    bool tb = false;
    void *C;
    int ldc;
    cudaDataType_t ctype = CUDA_R_16BF;
    float alpha = 1.0f, beta = 0.0f;
    const void *bias = nullptr;
    float *bgrad = nullptr;
    int batch = 1;
    long long sa = 0, sb = 0, sc = 0;
};
void cuda_gemm(cuda_state *st, const gemm_args &g);
bool cuda_gemm_try(cuda_state *st, const gemm_args &g);

/* The weight gradient of a linear map (linear.cu): dW (O, I) += g^T (O, N) in (N, I),
 * fp32, and with db, db (O) += the column sums of g (N, O, rows ldg apart), from
 * the GEMM's bias-gradient epilogue or, where cuBLASLt has none for the problem
 * (or MLM_BIAS_GRAD=colsum), a column-sum pass (reduce.cuh). */
void cuda_weight_grads(cuda_state *st, float *dW, float *db, const void *g, int ldg, const void *in, int N, int I,
                       int O);
gemm_cache *gemm_cache_new(void);
void gemm_cache_free(gemm_cache *c);
void gemm_tune_report(const cuda_state *st);   // MLM_GEMM_TUNE's tally, logged

/* ---- the ops of include/mlm/backend_ops.def, cuda_OP each: memory in backend.cu,
 * the rest in the file of their family ---- */
#define MLM_OP(ret, op, flags, params, ...) ret cuda_##op params;
#include "mlm/backend_ops.def"

/* The recorded graphs are forgotten (after the stream is drained): they hold
 * pointers to memory about to be freed, or ops about to change (backend.cu). */
void cuda_graphs_reset(cuda_state *st);

/* ---- flash_attention.cu, the flash path (saved: log-sum-exp, (B, H, S) fp32) ----
 * The attention ops' contract for S <= FLASH_MAX_S and head size dh <= FLASH_MAX_DH;
 * out and dq rows of query tiles with no valid row are zeros (the file's comment).
 * The table's attention ops (attention.cu) take this path whenever S <= FLASH_MAX_S:
 * attention_saved_bytes cannot see dh, so the choice may depend on S alone. */
enum { FLASH_MAX_S = 512, FLASH_MAX_DH = 128 };
size_t flash_attention_saved_bytes(mlm_backend *be, int B, int S, int H);
void flash_attention_fwd(mlm_backend *be, void *out, void *saved, const void *qkv,
                         const int32_t *lengths, int B, int S, int H, int dh,
                         const mlm_dropout *drop);
void flash_attention_bwd(mlm_backend *be, void *dqkv, const void *dout, const void *qkv,
                         const void *out, const void *saved, const int32_t *lengths,
                         int B, int S, int H, int dh, const mlm_dropout *drop);

#endif
