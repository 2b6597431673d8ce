/*
 * The GEMM every CUDA op uses (twin: src/host/cpu/matmul.c): cuda_gemm, row-major
 * C = op(A) op(B) through cuBLASLt (bf16 operands, fp32 accumulation), declared in
 * common.cuh. Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so
 * cuBLASLt sees B as its first operand. The algorithm for each problem (shapes,
 * types, epilogue, pointer alignments) is chosen once by cuBLASLt's heuristic and
 * cached: the same problem always runs the same kernel, which keeps results bitwise
 * reproducible and keeps the heuristic off the hot path. The bias rides in
 * cuBLASLt's BIAS epilogue, a bias gradient in its BGRADB epilogue (fp32, as C)
 * where the heuristic offers one: a problem it has no algorithm for (or whose
 * algorithm cublasLtMatmul then refuses) is remembered too, and cuda_gemm_try says
 * no at once the next time. With MLM_GEMM_TUNE=1 a problem's first call times
 * several of cuBLASLt's algorithms and keeps the fastest: faster where the
 * heuristic misjudges, but the choice follows timings, so two runs may differ in
 * bf16 rounding.
 */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

enum { GEMM_CACHE_SIZE = 256, TUNE_ALGOS = 8, TUNE_RUNS = 3 };

/* ---- cuBLASLt algorithm cache ---- */

struct gemm_key {               // everything the heuristic sees but the pointer values
    int M, N, K, lda, ldb, ldc, batch, ta, tb, ctype, epilogue;
    long long sa, sb, sc;
    uint32_t align_a, align_b, align_c, align_bias;
};

struct gemm_cache {
    int n;                      // entries used; replaced round-robin once full
    gemm_key key[GEMM_CACHE_SIZE];
    cublasLtMatmulAlgo_t algo[GEMM_CACHE_SIZE];
    bool found[GEMM_CACHE_SIZE];   // false: the heuristic had no algorithm
    int tuned, changed;            // MLM_GEMM_TUNE: problems timed, and those not on the heuristic's first
    double first_ms, best_ms;      // one call each, on the heuristic's first and on the fastest
};

gemm_cache *gemm_cache_new(void) {
    return (gemm_cache *)mlm_xcalloc(1, sizeof(gemm_cache), "cuBLASLt algorithm cache");
}

void gemm_cache_free(gemm_cache *c) { free(c); }

/* Largest power of two up to 256 dividing the address of every matrix of a batch. */
static uint32_t alignment(const void *p, long long stride, size_t elem) {
    uintptr_t bits = (uintptr_t)p | (uintptr_t)(stride * (long long)elem);
    uint32_t a = 256;
    while (a > 1 && (bits & (a - 1))) a >>= 1;
    return a;
}

static size_t type_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

static cublasLtEpilogue_t epilogue_of(const gemm_args &g) {
    return g.bgrad ? CUBLASLT_EPILOGUE_BGRADB : g.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

static gemm_key key_of(const gemm_args &g) {
    gemm_key k;
    memset(&k, 0, sizeof k);    // padding too: keys compare with memcmp
    k.M = g.M, k.N = g.N, k.K = g.K, k.lda = g.lda, k.ldb = g.ldb, k.ldc = g.ldc;
    k.batch = g.batch, k.ta = g.ta, k.tb = g.tb, k.ctype = (int)g.ctype, k.epilogue = (int)epilogue_of(g);
    k.sa = g.sa, k.sb = g.sb, k.sc = g.sc;
    k.align_a = alignment(g.A, g.sa, 2);
    k.align_b = alignment(g.B, g.sb, 2);
    k.align_c = alignment(g.C, g.sc, type_size(g.ctype));
    k.align_bias = g.bias ? alignment(g.bias, 0, 1) : g.bgrad ? alignment(g.bgrad, 0, 1) : 0;
    return k;
}

/* Column-major rows x cols matrix of type t, batch of them stride elements apart. */
static cublasLtMatrixLayout_t layout(cudaDataType_t t, int rows, int cols, int ld, int batch,
                                     long long stride) {
    cublasLtMatrixLayout_t l;
    cublasCheck(cublasLtMatrixLayoutCreate(&l, t, rows, cols, ld));
    if (batch > 1) {
        int32_t count = batch;
        int64_t offset = stride;
        cublasCheck(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
        cublasCheck(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offset,
                                                     sizeof offset));
    }
    return l;
}

/* Up to want of cuBLASLt's algorithms for the problem, best first by its heuristic,
 * into res: how many (0 when it has none). */
static int heuristic(cuda_state *st, const gemm_key &k, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la,
                     cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc, cublasLtMatmulHeuristicResult_t *res,
                     int want) {
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = LT_WORKSPACE_BYTES;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    // cuBLASLt's A is our B and its B our A
    const struct { cublasLtMatmulPreferenceAttributes_t attr; uint32_t bytes; } aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, k.align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, k.align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, k.align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, k.align_c},
    };
    for (const auto &a : aligns)
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, a.attr, &a.bytes, sizeof a.bytes));
    memset(res, 0, want * sizeof *res);
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(st->lt, desc, la, lb, lc, lc, pref, want, res, &found);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED) found = 0;   // no heuristic for this configuration: no algorithm
    else cublasCheck(s);
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    return found;
}

/* The cache slot of this problem: the algorithm chosen for it, or found false when
 * cuBLASLt had none (remembered as well). *fresh: the heuristic was asked now. */
static int find_algo(cuda_state *st, const gemm_key &k, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la,
                     cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc, bool *fresh) {
    gemm_cache *c = st->gemms;
    int used = c->n < GEMM_CACHE_SIZE ? c->n : GEMM_CACHE_SIZE;
    *fresh = false;
    for (int i = 0; i < used; i++)
        if (!memcmp(&c->key[i], &k, sizeof k)) return i;
    cublasLtMatmulHeuristicResult_t res;
    int found = heuristic(st, k, desc, la, lb, lc, &res, 1);
    int slot = c->n++ % GEMM_CACHE_SIZE;
    c->key[slot] = k;
    c->algo[slot] = res.algo;
    c->found[slot] = found > 0;
    *fresh = true;
    return slot;
}

/* Bytes from C's first element to past its last, over the batch. */
static size_t c_extent(const gemm_args &g) {
    size_t elems = (size_t)(g.batch - 1) * (size_t)g.sc + (size_t)(g.M - 1) * g.ldc + g.N;
    return elems * type_size(g.ctype);
}

/* MLM_GEMM_TUNE=1, a problem's first call, not while a graph is recorded: times up
 * to TUNE_ALGOS of cuBLASLt's algorithms (TUNE_RUNS calls each, after one untimed)
 * on the real operands, writing into a temporary D (and bias gradient), and puts
 * the fastest in the cache slot; ties keep the heuristic's order. Without the
 * memory for the temporary, the heuristic's choice stands. */
static void tune(cuda_state *st, const gemm_args &g, const gemm_key &k, cublasLtMatmulDesc_t desc,
                 cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc, int slot) {
    cublasLtMatmulHeuristicResult_t res[TUNE_ALGOS];
    int n = heuristic(st, k, desc, la, lb, lc, res, TUNE_ALGOS);
    if (n < 2) return;
    size_t d_bytes = (c_extent(g) + 255) / 256 * 256, v_bytes = g.bgrad ? (size_t)g.M * sizeof(float) : 0;
    void *tmp = nullptr;
    if (cudaMalloc(&tmp, d_bytes + v_bytes) != cudaSuccess) {
        cudaGetLastError();   // out of memory: not an error of the run
        return;
    }
    if (g.bgrad) {
        void *vec = (char *)tmp + d_bytes;
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof vec));
    }
    cudaEvent_t t0, t1;
    cudaCheck(cudaEventCreate(&t0));
    cudaCheck(cudaEventCreate(&t1));
    float best = 0, first = -1;
    int pick = -1;
    for (int i = 0; i < n; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > LT_WORKSPACE_BYTES) continue;
        bool ok = true;
        for (int r = 0; r <= TUNE_RUNS && ok; r++) {
            if (r == 1) cudaCheck(cudaEventRecord(t0, st->stream));
            cublasStatus_t s = cublasLtMatmul(st->lt, desc, &g.alpha, g.B, la, g.A, lb, &g.beta, g.C, lc, tmp, lc,
                                              &res[i].algo, st->lt_workspace, LT_WORKSPACE_BYTES, st->stream);
            if (s == CUBLAS_STATUS_NOT_SUPPORTED) ok = false;   // offered, then refused: not a candidate
            else cublasCheck(s);
        }
        if (!ok) continue;
        cudaCheck(cudaEventRecord(t1, st->stream));
        cudaCheck(cudaEventSynchronize(t1));
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, t0, t1));
        if (i == 0) first = ms;
        if (pick < 0 || ms < best) best = ms, pick = i;
    }
    cudaCheck(cudaEventDestroy(t0));
    cudaCheck(cudaEventDestroy(t1));
    cudaCheck(cudaFree(tmp));
    if (g.bgrad)
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bgrad, sizeof g.bgrad));
    if (pick < 0) return;
    gemm_cache *c = st->gemms;
    c->algo[slot] = res[pick].algo;
    c->tuned++;
    c->changed += pick != 0;
    c->first_ms += (first >= 0 ? first : best) / (double)TUNE_RUNS;
    c->best_ms += best / (double)TUNE_RUNS;
}

extern "C" void mlm_cuda_gemm_tuning(mlm_backend *be, int *tuned, int *changed) {
    const gemm_cache *c = cuda_st(be)->gemms;
    *tuned = c->tuned;
    *changed = c->changed;
}

void gemm_tune_report(const cuda_state *st) {
    const gemm_cache *c = st->gemms;
    if (!c->tuned) {
        mlm_log("cuda backend: MLM_GEMM_TUNE: no GEMM problem had more than one algorithm to time");
        return;
    }
    mlm_log("cuda backend: MLM_GEMM_TUNE: %d GEMM problems timed (up to %d algorithms each), %d run an "
            "algorithm other than cuBLASLt's first choice: one call of each %.3f ms, against %.3f ms (%+.1f%%)",
            c->tuned, TUNE_ALGOS, c->changed, c->best_ms, c->first_ms,
            c->first_ms > 0 ? (c->best_ms / c->first_ms - 1) * 100 : 0.0);
}

static const char *epilogue_name(int e) {
    return e == CUBLASLT_EPILOGUE_BGRADB ? ", bias-gradient epilogue" : e == CUBLASLT_EPILOGUE_BIAS ? ", bias epilogue" : "";
}

/* cuda_gemm_try, or with must, cuda_gemm. */
static bool gemm_run(cuda_state *st, const gemm_args &g, bool must) {
    if (g.bgrad && (g.batch != 1 || !g.ta || g.bias || g.ctype != CUDA_R_32F))
        mlm_die(MLM_EXIT_RUNTIME, "cuda_gemm: a bias gradient needs one GEMM with op(A) transposed, fp32 C and no bias");
    if (g.bgrad && (g.M == 0 || g.N == 0 || g.K == 0)) {   // nothing for cuBLASLt to sum
        if (must) mlm_die(MLM_EXIT_RUNTIME, "cuda_gemm: a bias gradient of an empty product");
        return false;
    }
    if (g.M == 0 || g.N == 0 || (g.K == 0 && g.beta == 1.0f && !g.bias)) return true;
    cublasLtMatmulDesc_t desc;
    cublasCheck(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t op_a = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    cublasLtEpilogue_t epi = epilogue_of(g);
    if (epi != CUBLASLT_EPILOGUE_DEFAULT) {
        const void *vec = g.bgrad ? (const void *)g.bgrad : g.bias;
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof vec));
    }
    // column-major: C^T (N, M) = op(B)^T (N, K) op(A)^T (K, M)
    cublasLtMatrixLayout_t la = layout(CUDA_R_16BF, g.tb ? g.K : g.N, g.tb ? g.N : g.K, g.ldb, g.batch, g.sb);
    cublasLtMatrixLayout_t lb = layout(CUDA_R_16BF, g.ta ? g.M : g.K, g.ta ? g.K : g.M, g.lda, g.batch, g.sa);
    cublasLtMatrixLayout_t lc = layout(g.ctype, g.N, g.M, g.ldc, g.batch, g.sc);
    gemm_key k = key_of(g);
    gemm_cache *c = st->gemms;
    bool fresh;
    int slot = find_algo(st, k, desc, la, lb, lc, &fresh);
    if (!c->found[slot] && must)
        mlm_die(MLM_EXIT_RUNTIME,
                "cuBLASLt has no algorithm for C (%d, %d) = op(A) op(B), K = %d, batch %d, ta %d, tb %d, C %s%s", k.M,
                k.N, k.K, k.batch, k.ta, k.tb, k.ctype == CUDA_R_32F ? "fp32" : "bf16", epilogue_name(k.epilogue));
    bool found = c->found[slot];
    if (found && fresh && st->gemm_tune && !st->capturing) tune(st, g, k, desc, la, lb, lc, slot);
    if (found) {
        cublasStatus_t s = cublasLtMatmul(st->lt, desc, &g.alpha, g.B, la, g.A, lb, &g.beta, g.C, lc, g.C, lc,
                                          &c->algo[slot], st->lt_workspace, LT_WORKSPACE_BYTES, st->stream);
        if (s == CUBLAS_STATUS_NOT_SUPPORTED && !must) {   // the heuristic's algorithm refused after all: remembered
            c->found[slot] = found = false;
        } else {
            cublasCheck(s);
        }
    }
    cublasCheck(cublasLtMatrixLayoutDestroy(la));
    cublasCheck(cublasLtMatrixLayoutDestroy(lb));
    cublasCheck(cublasLtMatrixLayoutDestroy(lc));
    cublasCheck(cublasLtMatmulDescDestroy(desc));
    return found;
}

void cuda_gemm(cuda_state *st, const gemm_args &g) { gemm_run(st, g, true); }

bool cuda_gemm_try(cuda_state *st, const gemm_args &g) { return gemm_run(st, g, false); }
