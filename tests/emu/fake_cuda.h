/*
 * The CUDA runtime, cuBLASLt and CUB as the CUDA backend's sources (src/kernels)
 * use them, on the CPU, over the emulated device of emu.h. tests/emu/include holds
 * cuda_runtime.h, cublasLt.h, cub/device/device_radix_sort.cuh and flash_ptx.cuh,
 * which include this instead; cu2cpp.py turns kernel launches into emu_launch.
 *
 * The model (fake_cuda.cpp has the details):
 *  - Device memory is host memory from cudaMalloc, poisoned with 0xff bytes (NaN in
 *    bf16 and fp32, -1 in int32), with 256-byte red zones on both sides that are
 *    checked after every operation: a write past either end of an allocation aborts
 *    naming the operation (built with AddressSanitizer, allocations are exact-size
 *    and ASan's red zones catch reads too). Copies, memsets, cuBLASLt operands and
 *    CUB buffers must lie inside one allocation (the host side of a copy outside).
 *  - Work runs at once, in order, on the calling thread: synchronization is a no-op
 *    outside capture and events are complete when recorded.
 *  - Stream capture records launches, copies, memsets, cuBLASLt and CUB calls as
 *    closures over their arguments (by value); a graph launch replays them. During
 *    a capture (thread-local or global mode) the calls that would wait or allocate
 *    (cudaMalloc, cudaMallocHost, cudaFree, cudaFreeHost, cudaMemcpy, cudaMemset,
 *    cudaDeviceSynchronize, cudaStreamSynchronize or cudaStreamQuery of the
 *    capturing stream) fail with cudaErrorStreamCaptureUnsupported and invalidate
 *    the capture, so that cudaStreamEndCapture then fails with
 *    cudaErrorStreamCaptureInvalidated; waiting for an event recorded in the
 *    capture fails with cudaErrorCapturedEvent.
 *  - Launches are checked as the runtime does (block and grid limits, dynamic
 *    shared memory over 48 KiB only after cudaFuncSetAttribute raised the kernel's
 *    limit, 227 KiB at most); a bad one sets the error cudaGetLastError returns.
 *  - A kernel's pointer arguments must point into device allocations (a host
 *    pointer aborts; pointers inside struct arguments are not seen), and the
 *    memory every recorded operation uses must still be allocated at each graph
 *    launch that replays it.
 *  - EMU_PROFILE=1 prints the time spent in each kind of operation at exit.
 *  - cuBLASLt computes D = alpha op(A) op(B) + beta C (+ bias[i] on row i of D)
 *    column-major in fp32 for bf16 A, B and bf16 or fp32 C = D, strided batches;
 *    C is not read when beta == 0. Layout and type mismatches fail as cuBLASLt
 *    does; an algorithm from the heuristic remembers the alignments of its
 *    preference, and a matmul whose pointers are less aligned fails.
 */
#ifndef MLM_TESTS_FAKE_CUDA_H
#define MLM_TESTS_FAKE_CUDA_H

#include <functional>
#include <type_traits>
#include <utility>

#include "emu.h"

/* ---- runtime ---- */

enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoKernelImageForDevice = 209,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureMerge = 902,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorStreamCaptureUnjoined = 904,
    cudaErrorStreamCaptureIsolation = 905,
    cudaErrorStreamCaptureImplicit = 906,
    cudaErrorCapturedEvent = 907,
    cudaErrorStreamCaptureWrongThread = 908,
};
typedef cudaError cudaError_t;

typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
typedef struct emu_graph *cudaGraph_t;
typedef struct emu_graph_exec *cudaGraphExec_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};
enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
enum cudaDataType_t {
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16F = 2,
    CUDA_R_8I = 3,
    CUDA_R_32I = 10,
    CUDA_R_16BF = 14,
};

#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock;
    int regsPerBlock, warpSize;
    int maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3];
    int major, minor, multiProcessorCount;
    size_t sharedMemPerBlockOptin, sharedMemPerMultiprocessor;
    int l2CacheSize, maxThreadsPerMultiProcessor;
};

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);

cudaError_t cudaMalloc(void **p, size_t bytes);
template <class T> inline cudaError_t cudaMalloc(T **p, size_t bytes) { return cudaMalloc((void **)p, bytes); }
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
template <class T> inline cudaError_t cudaMallocHost(T **p, size_t bytes) { return cudaMallocHost((void **)p, bytes); }
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaMemset(void *p, int value, size_t bytes);

cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventQuery(cudaEvent_t e);

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);

cudaError_t emu_func_set_attribute(const void *func, cudaFuncAttribute attr, int value);
template <class T> inline cudaError_t cudaFuncSetAttribute(T *func, cudaFuncAttribute attr, int value) {
    return emu_func_set_attribute((const void *)func, attr, value);
}

/* ---- the emulator's side ---- */

/* Device memory an operation uses: [p, p + bytes), or with bytes 0 a kernel's
 * pointer argument, which must point into an allocation or just past its end. */
struct emu_range {
    const void *p;
    size_t bytes;
};
/* Queues op on stream s: runs it now, or records it while s is capturing. what
 * names it in error messages. The memory in uses must be allocated when it runs
 * (checked at the call and again at every graph launch that replays it). */
void emu_submit(cudaStream_t s, const char *what, std::function<void()> op, std::vector<emu_range> uses = {});
/* cudaSuccess, or the error of a launch the runtime would refuse (also set as the
 * last error). */
cudaError_t emu_launch_check(const void *kaddr, const char *name, dim3 grid, dim3 block, size_t smem);
/* Whether [p, p + bytes) lies inside one device allocation. */
bool emu_is_device(const void *p, size_t bytes);
/* Aborts unless [p, p + bytes) lies inside one device allocation. */
void emu_require_device(const void *p, size_t bytes, const char *what);

/* A kernel launch, as cu2cpp.py writes it: kern(args...) run by every thread of the
 * grid, each with its own copy of the arguments, which are taken at the launch. */
template <class T> inline void emu_note_pointer(std::vector<emu_range> &uses, const T &arg) {
    if constexpr (std::is_pointer_v<T> && !std::is_function_v<std::remove_pointer_t<T>>)
        if (arg) uses.push_back({(const void *)arg, 0});
}

template <class K, class... A>
void emu_launch(K kern, const void *kaddr, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                A... args) {
    if (emu_launch_check(kaddr, name, grid, block, smem) != cudaSuccess) return;
    std::vector<emu_range> uses;   // pointer arguments must be device memory (pointers inside structs are not seen)
    (emu_note_pointer(uses, args), ...);
    auto body = [kern, args...]() { kern(args...); };
    emu_submit(
        stream, name,
        [body, name, grid, block, smem]() {
            emu_run_grid(name, grid, block, smem, [](void *b) { (*(const decltype(body) *)b)(); }, (void *)&body);
        },
        std::move(uses));
}

/* ---- cuBLASLt ---- */

enum cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum cublasComputeType_t { CUBLAS_COMPUTE_16F = 64, CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 };
enum cublasLtMatmulDescAttributes_t {
    CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0,
    CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,
    CUBLASLT_MATMUL_DESC_POINTER_MODE = 2,
    CUBLASLT_MATMUL_DESC_TRANSA = 3,
    CUBLASLT_MATMUL_DESC_TRANSB = 4,
    CUBLASLT_MATMUL_DESC_TRANSC = 5,
    CUBLASLT_MATMUL_DESC_FILL_MODE = 6,
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
};
enum cublasLtEpilogue_t {
    CUBLASLT_EPILOGUE_DEFAULT = 1,
    CUBLASLT_EPILOGUE_RELU = 2,
    CUBLASLT_EPILOGUE_BIAS = 4,
    CUBLASLT_EPILOGUE_RELU_BIAS = 6,
    CUBLASLT_EPILOGUE_GELU = 32,
    CUBLASLT_EPILOGUE_GELU_BIAS = 36,
    CUBLASLT_EPILOGUE_BGRADB = 512,
};
enum cublasLtMatrixLayoutAttribute_t {
    CUBLASLT_MATRIX_LAYOUT_TYPE = 0,
    CUBLASLT_MATRIX_LAYOUT_ORDER = 1,
    CUBLASLT_MATRIX_LAYOUT_ROWS = 2,
    CUBLASLT_MATRIX_LAYOUT_COLS = 3,
    CUBLASLT_MATRIX_LAYOUT_LD = 4,
    CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5,
    CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6,
};
enum cublasLtMatmulPreferenceAttributes_t {
    CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0,
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 9,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 10,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 11,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 12,
};

typedef struct emu_lt *cublasLtHandle_t;
typedef struct emu_lt_desc *cublasLtMatmulDesc_t;
typedef struct emu_lt_layout *cublasLtMatrixLayout_t;
typedef struct emu_lt_pref *cublasLtMatmulPreference_t;
struct cublasLtMatmulAlgo_t { uint64_t data[8]; };
struct cublasLtMatmulHeuristicResult_t {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
const char *cublasLtGetStatusString(cublasStatus_t s);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t bytes);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t bytes);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t bytes);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t *results, int *found);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t adesc, const void *B, cublasLtMatrixLayout_t bdesc,
                              const void *beta, const void *C, cublasLtMatrixLayout_t cdesc, void *D,
                              cublasLtMatrixLayout_t ddesc, const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, cudaStream_t stream);

/* ---- CUB: DeviceRadixSort::SortPairs, a stable sort on bits [begin_bit, end_bit) ---- */

namespace cub {
struct DeviceRadixSort {
    template <class K, class V, class N>
    static cudaError_t SortPairs(void *d_temp_storage, size_t &temp_storage_bytes, const K *d_keys_in, K *d_keys_out,
                                 const V *d_values_in, V *d_values_out, N num_items, int begin_bit = 0,
                                 int end_bit = sizeof(K) * 8, cudaStream_t stream = 0) {
        static_assert(std::is_unsigned<K>::value, "emulated SortPairs takes unsigned keys only");
        size_t n = (size_t)num_items, need = 2 * n * (sizeof(K) + sizeof(V)) + 4096;   // double buffers and counts
        if (!d_temp_storage) {
            temp_storage_bytes = need;
            return cudaSuccess;
        }
        if (temp_storage_bytes < need || begin_bit < 0 || end_bit > (int)sizeof(K) * 8 || begin_bit > end_bit)
            return cudaErrorInvalidValue;
        if (n == 0) return cudaSuccess;
        std::vector<emu_range> uses = {{d_temp_storage, need}, {d_keys_in, n * sizeof(K)}, {d_keys_out, n * sizeof(K)},
                                       {d_values_in, n * sizeof(V)}, {d_values_out, n * sizeof(V)}};
        emu_submit(stream, "cub::DeviceRadixSort::SortPairs", [=]() {
            using U = typename std::conditional<(sizeof(K) > 4), uint64_t, uint32_t>::type;
            U mask = end_bit - begin_bit >= (int)sizeof(U) * 8 ? ~(U)0 : (((U)1 << (end_bit - begin_bit)) - 1);
            std::vector<size_t> order(n);
            for (size_t i = 0; i < n; i++) order[i] = i;
            auto digit = [&](size_t i) { return (U)((U)d_keys_in[i] >> begin_bit) & mask; };
            std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return digit(a) < digit(b); });
            std::vector<K> k(n);
            std::vector<V> v(n);
            for (size_t i = 0; i < n; i++) k[i] = d_keys_in[order[i]], v[i] = d_values_in[order[i]];
            memset(d_temp_storage, 0xa5, need);   // cub uses it as it likes
            memcpy(d_keys_out, k.data(), n * sizeof(K));
            memcpy(d_values_out, v.data(), n * sizeof(V));
        }, std::move(uses));
        return cudaSuccess;
    }
};
}  // namespace cub

#endif
