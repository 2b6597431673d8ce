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
 * no at once the next time.
 */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

enum { GEMM_CACHE_SIZE = 256 };

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

/* The cache slot of this problem: the algorithm cuBLASLt chose for it, or found
 * false when it had none (remembered as well), asked for the first time now. */
static int find_algo(cuda_state *st, const gemm_key &k, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la,
                     cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc) {
    gemm_cache *c = st->gemms;
    int used = c->n < GEMM_CACHE_SIZE ? c->n : GEMM_CACHE_SIZE;
    for (int i = 0; i < used; i++)
        if (!memcmp(&c->key[i], &k, sizeof k)) return i;
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
    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(st->lt, desc, la, lb, lc, lc, pref, 1, &res, &found);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED) found = 0;   // no heuristic for this configuration: no algorithm
    else cublasCheck(s);
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    int slot = c->n++ % GEMM_CACHE_SIZE;
    c->key[slot] = k;
    c->algo[slot] = res.algo;
    c->found[slot] = found > 0;
    return slot;
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
    int slot = find_algo(st, k, desc, la, lb, lc);
    if (!c->found[slot] && must)
        mlm_die(MLM_EXIT_RUNTIME,
                "cuBLASLt has no algorithm for C (%d, %d) = op(A) op(B), K = %d, batch %d, ta %d, tb %d, C %s%s", k.M,
                k.N, k.K, k.batch, k.ta, k.tb, k.ctype == CUDA_R_32F ? "fp32" : "bf16", epilogue_name(k.epilogue));
    bool found = c->found[slot];
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
