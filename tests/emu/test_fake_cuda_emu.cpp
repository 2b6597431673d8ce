/*
 * The emulated device itself (fake_cuda.h, emu.h): stream capture records and
 * graphs replay, with the arguments of each call taken at the call; the calls
 * CUDA refuses during a capture fail and invalidate it; launches are checked;
 * cuBLASLt against a plain triple loop (transposes, strided batches, beta, the
 * BIAS epilogue on the rows of D, alignment); CUB's stable sort on a bit range;
 * and the faults the emulator turns into aborts: a write past an allocation, a
 * barrier some threads never reach, threads of a warp at different shuffles, a
 * host pointer passed to a kernel, a graph replayed after its memory was freed.
 * Kernels are launched with emu_launch, as cu2cpp.py writes launches. The aborts
 * are expected: their messages are swallowed (cr_redirect_stderr).
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <signal.h>

#include "fake_cuda.h"

#define LAUNCH(k, grid, block, smem, stream, ...) \
    emu_launch([](auto... a_) { k(a_...); }, (const void *)&k, #k, grid, block, smem, stream, __VA_ARGS__)

__global__ void add_kernel(float *x, int n, float v) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += v;
}

Test(fake_cuda, capture_records_and_graphs_replay) {
    cudaStream_t s;
    cr_assert_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    float *x, host[100];
    cr_assert_eq(cudaMalloc(&x, 100 * sizeof(float)), cudaSuccess);
    cr_assert_eq(cudaMemsetAsync(x, 0, 100 * sizeof(float), s), cudaSuccess);
    cr_assert_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    float v = 1.0f;
    LAUNCH(add_kernel, dim3(4), dim3(32), 0, s, x, 100, v);
    v = 100.0f;   // taken at the launch: the graph adds 1
    cr_assert_eq(cudaGetLastError(), cudaSuccess);
    cr_assert_eq(cudaMemcpyAsync(host, x, sizeof host, cudaMemcpyDeviceToHost, s), cudaSuccess);
    cudaGraph_t g;
    cudaGraphExec_t e;
    cr_assert_eq(cudaStreamEndCapture(s, &g), cudaSuccess);
    cr_assert_eq(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
    cr_assert_eq(cudaGraphDestroy(g), cudaSuccess);
    float now[100];
    cr_assert_eq(cudaMemcpy(now, x, sizeof now, cudaMemcpyDeviceToHost), cudaSuccess);
    cr_expect_eq(now[7], 0.0f, "the capture ran the kernel");
    for (int k = 1; k <= 3; k++) {
        cr_assert_eq(cudaGraphLaunch(e, s), cudaSuccess);
        cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
        cr_expect(host[0] == k && host[99] == k, "launch %d: %g %g", k, host[0], host[99]);
    }
    cr_assert_eq(cudaGraphExecDestroy(e), cudaSuccess);
    cr_expect_eq(cudaGraphLaunch(e, s), cudaErrorInvalidResourceHandle);
    cudaFree(x);
    cudaStreamDestroy(s);
}

static void expect_refused(const char *what, cudaError_t (*call)(cudaStream_t, void *), cudaError_t want) {
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    void *p;
    cudaMalloc(&p, 64);
    cr_assert_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    cr_expect_eq(call(s, p), want, "%s during a capture", what);
    cr_expect_eq(cudaGetLastError(), want, "%s: the last error", what);
    cudaGraph_t g = (cudaGraph_t)&g;
    cr_expect_eq(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated, "%s: capture not invalidated", what);
    cr_expect_null(g);
    cr_expect_eq(cudaStreamSynchronize(s), cudaSuccess, "%s: the stream still captures", what);
    cudaGetLastError();
    cudaFree(p);
    cudaStreamDestroy(s);
}

Test(fake_cuda, waiting_or_allocating_during_a_capture_fails) {
    expect_refused("cudaStreamSynchronize", [](cudaStream_t s, void *) { return cudaStreamSynchronize(s); },
                   cudaErrorStreamCaptureUnsupported);
    expect_refused("cudaMalloc", [](cudaStream_t, void *) { void *q; return cudaMalloc(&q, 16); },
                   cudaErrorStreamCaptureUnsupported);
    expect_refused("cudaFree", [](cudaStream_t, void *p) { return cudaFree(p); }, cudaErrorStreamCaptureUnsupported);
    expect_refused("cudaDeviceSynchronize", [](cudaStream_t, void *) { return cudaDeviceSynchronize(); },
                   cudaErrorStreamCaptureUnsupported);
    expect_refused("cudaMemcpy", [](cudaStream_t, void *p) { char h[8]; return cudaMemcpy(h, p, 8, cudaMemcpyDeviceToHost); },
                   cudaErrorStreamCaptureUnsupported);
}

Test(fake_cuda, launches_are_checked) {
    float *x;
    cudaMalloc(&x, 4096);
    LAUNCH(add_kernel, dim3(1), dim3(2048), 0, nullptr, x, 1, 1.0f);
    cr_expect_eq(cudaGetLastError(), cudaErrorInvalidConfiguration);
    LAUNCH(add_kernel, dim3(0), dim3(32), 0, nullptr, x, 1, 1.0f);
    cr_expect_eq(cudaGetLastError(), cudaErrorInvalidConfiguration);
    LAUNCH(add_kernel, dim3(1), dim3(32), 64 << 10, nullptr, x, 1, 1.0f);
    cr_expect_eq(cudaGetLastError(), cudaErrorInvalidValue, "64 KiB of dynamic shared memory without the attribute");
    cr_expect_eq(cudaFuncSetAttribute(add_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10), cudaSuccess);
    LAUNCH(add_kernel, dim3(1), dim3(32), 64 << 10, nullptr, x, 1, 1.0f);
    cr_expect_eq(cudaGetLastError(), cudaSuccess);
    cr_expect_eq(cudaFuncSetAttribute(add_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 << 10),
                 cudaErrorInvalidValue);
    cudaFree(x);
}

static float bf(float x) { return __bfloat162float(__float2bfloat16(x)); }

Test(fake_cuda, cublaslt_matches_a_plain_product) {
    // column-major D (m, n) = alpha op(A) op(B) + beta C + bias[i], batch 2, bf16 D
    const int m = 5, n = 3, k = 7, batch = 2, ld = 9, sa = 80, sb = 80, sd = 40;
    cublasLtHandle_t h;
    cr_assert_eq(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
    bf16 *A, *B, *D, *bias;
    cudaMalloc(&A, 2 * sa * batch);
    cudaMalloc(&B, 2 * sb * batch);
    cudaMalloc(&D, 2 * sd * batch);
    cudaMalloc(&bias, 2 * m);
    float a[2][80], b[2][80], d0[2][40], bi[m];
    for (int t = 0; t < batch; t++) {
        for (int i = 0; i < 80; i++) a[t][i] = bf(((i * 7 + t) % 13) / 8.0f - 0.7f), b[t][i] = bf(((i * 5 + t) % 11) / 8.0f - 0.6f);
        for (int i = 0; i < 40; i++) d0[t][i] = bf((i % 9) / 4.0f - 1.0f);
        for (int i = 0; i < 80; i++) A[t * sa + i] = __float2bfloat16(a[t][i]), B[t * sb + i] = __float2bfloat16(b[t][i]);
        for (int i = 0; i < 40; i++) D[t * sd + i] = __float2bfloat16(d0[t][i]);
    }
    for (int i = 0; i < m; i++) bi[i] = bf(0.25f * i), bias[i] = __float2bfloat16(bi[i]);
    cublasLtMatmulDesc_t desc;
    cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;   // op(A) = A^T: A stored (k, m)
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const void *bp = bias;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, m, ld);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, ld);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, m, n, ld);
    int32_t count = batch;
    int64_t strides[3] = {sa, sb, sd};
    cublasLtMatrixLayout_t ls[3] = {la, lb, lc};
    for (int i = 0; i < 3; i++) {
        cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count);
        cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i], sizeof strides[i]);
    }
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    uint32_t al = 16;
    for (int i = 0; i < 4; i++)
        cublasLtMatmulPreferenceSetAttribute(pref, (cublasLtMatmulPreferenceAttributes_t)(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES + i),
                                             &al, sizeof al);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cr_assert_eq(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, lc, lc, pref, 1, &res, &found), CUBLAS_STATUS_SUCCESS);
    cr_assert_eq(found, 1);
    float alpha = 0.5f, beta = 2.0f;
    cr_assert_eq(cublasLtMatmul(h, desc, &alpha, A, la, B, lb, &beta, D, lc, D, lc, &res.algo, nullptr, 0, nullptr),
                 CUBLAS_STATUS_SUCCESS);
    for (int t = 0; t < batch; t++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int p = 0; p < k; p++) s += (double)a[t][p + i * ld] * b[t][p + j * ld];
                double want = alpha * s + beta * d0[t][i + j * ld] + bi[i];
                float got = __bfloat162float(D[t * sd + i + j * ld]);
                cr_expect(fabs(got - want) <= 1e-2 * (1 + fabs(want)), "batch %d D(%d, %d) = %g, want %g", t, i, j, got, want);
            }
    // the same problem 2 bytes off the alignment the algorithm was chosen for
    cr_expect_eq(cublasLtMatmul(h, desc, &alpha, A + 1, la, B, lb, &beta, D, lc, D, lc, &res.algo, nullptr, 0, nullptr),
                 CUBLAS_STATUS_NOT_SUPPORTED);
    // k of op(A) and op(B) disagree
    cublasLtMatrixLayout_t bad;
    cublasLtMatrixLayoutCreate(&bad, CUDA_R_16BF, k - 1, n, ld);
    cr_expect_eq(cublasLtMatmul(h, desc, &alpha, A, la, B, bad, &beta, D, lc, D, lc, nullptr, nullptr, 0, nullptr),
                 CUBLAS_STATUS_INVALID_VALUE);
    for (auto l : {la, lb, lc, bad}) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(h);
    for (void *p : {(void *)A, (void *)B, (void *)D, (void *)bias}) cudaFree(p);
}

Test(fake_cuda, radix_sort_is_stable_on_its_bits) {
    const int n = 9;
    uint32_t kin[n] = {0x35, 0x14, 0x25, 0x14, 0x03, 0x35, 0x104, 0x00, 0x25}, *dk, *dko;
    int32_t vin[n], *dv, *dvo;
    for (int i = 0; i < n; i++) vin[i] = i;
    cudaMalloc(&dk, sizeof kin);
    cudaMalloc(&dko, sizeof kin);
    cudaMalloc(&dv, sizeof vin);
    cudaMalloc(&dvo, sizeof vin);
    cudaMemcpy(dk, kin, sizeof kin, cudaMemcpyHostToDevice);
    cudaMemcpy(dv, vin, sizeof vin, cudaMemcpyHostToDevice);
    size_t bytes = 0;
    cr_assert_eq(cub::DeviceRadixSort::SortPairs(nullptr, bytes, dk, dko, dv, dvo, n, 4, 8), cudaSuccess);
    void *tmp;
    cudaMalloc(&tmp, bytes);
    cr_assert_eq(cub::DeviceRadixSort::SortPairs(tmp, bytes, dk, dko, dv, dvo, n, 4, 8), cudaSuccess);
    // bits 4..7: 0x03 0x00 0x104 (0) | 0x14 0x14 (1) | 0x25 0x25 (2) | 0x35 0x35 (3), input order within each
    const int32_t want[n] = {4, 6, 7, 1, 3, 2, 8, 0, 5};
    for (int i = 0; i < n; i++) cr_expect_eq(dvo[i], want[i], "position %d: row %d, want %d", i, dvo[i], want[i]);
    for (int i = 0; i < n; i++) cr_expect_eq(dko[i], kin[want[i]]);
    for (void *p : {(void *)dk, (void *)dko, (void *)dv, (void *)dvo, tmp}) cudaFree(p);
}

__global__ void write_one_past(float *x, int n) {
    if (threadIdx.x == 0) x[n] = 1.0f;
}

Test(fake_cuda, a_write_past_an_allocation_aborts, .signal = SIGABRT, .init = cr_redirect_stderr) {
    float *x;
    cudaMalloc(&x, 10 * sizeof(float));
    LAUNCH(write_one_past, dim3(1), dim3(32), 0, nullptr, x, 10);
}

__global__ void early_return(float *x) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    x[threadIdx.x] = 0.0f;
}

Test(fake_cuda, a_barrier_some_threads_never_reach_aborts, .signal = SIGABRT, .init = cr_redirect_stderr) {
    float *x;
    cudaMalloc(&x, 64 * sizeof(float));
    LAUNCH(early_return, dim3(1), dim3(64), 0, nullptr, x);
}

__global__ void divergent_shuffle(float *x) {
    float v = x[threadIdx.x];
    if (threadIdx.x & 1) v = __shfl_xor_sync(0xffffffffu, v, 1);
    else v = __shfl_xor_sync(0xffffffffu, v, 1);
    x[threadIdx.x] = v;
}

Test(fake_cuda, shuffles_in_divergent_code_abort, .signal = SIGABRT, .init = cr_redirect_stderr) {
    float *x;
    cudaMalloc(&x, 32 * sizeof(float));
    cudaMemset(x, 0, 32 * sizeof(float));
    LAUNCH(divergent_shuffle, dim3(1), dim3(32), 0, nullptr, x);
}

Test(fake_cuda, a_host_pointer_passed_to_a_kernel_aborts, .signal = SIGABRT, .init = cr_redirect_stderr) {
    static float host[32];
    LAUNCH(add_kernel, dim3(1), dim3(32), 0, nullptr, host, 32, 1.0f);
}

Test(fake_cuda, a_graph_replayed_after_its_memory_was_freed_aborts, .signal = SIGABRT, .init = cr_redirect_stderr) {
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    float *x;
    cudaMalloc(&x, 32 * sizeof(float));
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    LAUNCH(add_kernel, dim3(1), dim3(32), 0, s, x, 32, 1.0f);
    cudaGraph_t g;
    cudaGraphExec_t e;
    cr_assert_eq(cudaStreamEndCapture(s, &g), cudaSuccess);
    cr_assert_eq(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
    cr_assert_eq(cudaGraphLaunch(e, s), cudaSuccess);
    cudaFree(x);
    cudaGraphLaunch(e, s);
}
