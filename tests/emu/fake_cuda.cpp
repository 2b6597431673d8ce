/*
 * The CUDA runtime, cuBLASLt and CUB shims of fake_cuda.h (the model is described
 * there). One host thread drives the device, as in the backend.
 */
#include "fake_cuda.h"

#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>

namespace {

constexpr size_t TOTAL_BYTES = (size_t)80 << 30;   // an H100's 80 GiB
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t RED = 0;   // AddressSanitizer's own red zones (and exact sizes) instead
#else
constexpr size_t RED = 256;                         // red zone bytes on each side
#endif
constexpr unsigned char CANARY = 0xcd;
constexpr size_t SMEM_DEFAULT = 48 << 10, SMEM_OPTIN = 227 << 10;

struct allocation {
    size_t bytes;        // as asked
    size_t span;         // the whole block: red zone, bytes rounded up to 256, red zone
    unsigned char *raw;  // the block
    bool device;         // cudaMalloc, else cudaMallocHost
};

struct op {
    const char *what;
    std::function<void()> fn;
    std::vector<emu_range> uses;
};

}  // namespace

struct emu_stream {
    unsigned flags;
    bool capturing = false, invalidated = false;
    cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
    std::vector<op> rec;
};
struct emu_event {
    emu_stream *captured_in = nullptr;   // recorded in this stream's capture
    bool recorded = false;               // outside a capture: at time t (every op before it has run)
    std::chrono::steady_clock::time_point t;
};
struct emu_graph {
    std::vector<op> ops;
};
struct emu_graph_exec {
    std::vector<op> ops;
};

namespace {

std::map<uintptr_t, allocation> allocs;   // by the pointer handed out
size_t device_bytes;
cudaError_t last_error = cudaSuccess;
std::map<const void *, int> max_dynamic_smem;   // cudaFuncSetAttribute
std::set<emu_stream *> streams;
std::set<emu_event *> events;
std::set<emu_graph *> graphs;
std::set<emu_graph_exec *> execs;
emu_stream *capture;   // the stream capturing on this thread, if any
long graph_launches;

cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
}

/* An API call that waits for the device or allocates, during a capture that
 * forbids it: the capture is invalidated and the call fails. */
bool capture_forbids(void) {
    if (!capture || capture->mode == cudaStreamCaptureModeRelaxed) return false;
    capture->invalidated = true;
    return true;
}

/* The allocation holding [p, p + bytes), or null. */
const allocation *find(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin()) return nullptr;
    --it;
    if (a < it->first || a + bytes > it->first + it->second.bytes || a + bytes < a) return nullptr;
    return &it->second;
}

/* Aborts when something wrote into a red zone; restores nothing. */
void check_red_zones(const char *what) {
    for (auto &[user, al] : allocs) {
        const unsigned char *lo = al.raw, *hi = (const unsigned char *)user + al.bytes, *end = al.raw + al.span;
        for (const unsigned char *p = lo; p < (const unsigned char *)user; p++)
            EMU_CHECK(*p == CANARY, "%s wrote %zu bytes before the start of a %s allocation of %zu bytes", what,
                      (size_t)((const unsigned char *)user - p), al.device ? "device" : "pinned host", al.bytes);
        for (const unsigned char *p = hi; p < end; p++)
            EMU_CHECK(*p == CANARY, "%s wrote at byte %zu of a %s allocation of %zu bytes (past its end)", what,
                      (size_t)(p - (const unsigned char *)user), al.device ? "device" : "pinned host", al.bytes);
    }
}

/* EMU_PROFILE=1: seconds and calls per operation, printed at exit. */
struct profile {
    std::map<std::string, std::pair<double, long>> ops;
    double red_zones = 0;
    ~profile() {
        if (ops.empty()) return;
        std::vector<std::pair<double, std::string>> by_time;
        for (auto &[name, v] : ops) by_time.push_back({v.first, name});
        std::sort(by_time.rbegin(), by_time.rend());
        fprintf(stderr, "emulated device profile (pid %d): red zone checks %.3f s\n", (int)getpid(), red_zones);
        for (auto &[t, name] : by_time) fprintf(stderr, "  %9.3f s %8ld  %s\n", t, ops[name].second, name.c_str());
    }
};
profile *prof = getenv("EMU_PROFILE") ? new profile : nullptr;
struct profile_at_exit {
    ~profile_at_exit() { delete prof; }
} profile_at_exit_;

void run(const char *what, const std::function<void()> &fn) {
    if (!prof) {
        fn();
        check_red_zones(what);
        return;
    }
    auto t0 = std::chrono::steady_clock::now();
    fn();
    auto t1 = std::chrono::steady_clock::now();
    check_red_zones(what);
    auto t2 = std::chrono::steady_clock::now();
    auto &e = prof->ops[what];
    e.first += std::chrono::duration<double>(t1 - t0).count();
    e.second++;
    prof->red_zones += std::chrono::duration<double>(t2 - t1).count();
}

bool valid_stream(cudaStream_t s) { return !s || streams.count(s); }

cudaError_t allocate(void **p, size_t bytes, bool device) {
    if (!p) return fail(cudaErrorInvalidValue);
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    *p = nullptr;
    if (!bytes) return cudaSuccess;
    if (device && (bytes > TOTAL_BYTES || device_bytes + bytes > TOTAL_BYTES)) return fail(cudaErrorMemoryAllocation);
    size_t body = RED ? (bytes + 255) / 256 * 256 : bytes, span = RED + body + RED;
    void *block = nullptr;
    if (posix_memalign(&block, 256, span)) return fail(cudaErrorMemoryAllocation);
    unsigned char *raw = (unsigned char *)block;
    memset(raw, CANARY, span);
    memset(raw + RED, 0xff, bytes);   // garbage: NaN in bf16 and fp32
    allocs[(uintptr_t)(raw + RED)] = {bytes, span, raw, device};
    if (device) device_bytes += bytes;
    *p = raw + RED;
    return cudaSuccess;
}

cudaError_t release(void *p, bool device) {
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    if (!p) return cudaSuccess;
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end() || it->second.device != device) return fail(cudaErrorInvalidValue);
    check_red_zones(device ? "cudaFree" : "cudaFreeHost");
    if (device) device_bytes -= it->second.bytes;
    free(it->second.raw);
    allocs.erase(it);
    return cudaSuccess;
}

}  // namespace

bool emu_is_device(const void *p, size_t bytes) {
    const allocation *a = find(p, bytes);
    return a && a->device;
}

void emu_require_device(const void *p, size_t bytes, const char *what) {
    EMU_CHECK(emu_is_device(p, bytes), "%s: [%p, +%zu bytes) is not inside one device allocation (illegal address)",
              what, p, bytes);
}

/* ---- device, errors ---- */

/* One device, or EMU_DEVICE_COUNT of them (a node of GPUs for data-parallel runs:
 * each process emulates the one it picks; they share nothing). */
static int device_count(void) {
    const char *n = getenv("EMU_DEVICE_COUNT");
    int k = n ? atoi(n) : 1;
    return k >= 1 && k <= 64 ? k : 1;
}
static int current_device;

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return fail(cudaErrorInvalidValue);
    *count = device_count();
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!prop) return fail(cudaErrorInvalidValue);
    if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "emulated H100 (tests/emu, on the CPU)");
    prop->totalGlobalMem = TOTAL_BYTES;
    prop->sharedMemPerBlock = SMEM_DEFAULT;
    prop->sharedMemPerBlockOptin = SMEM_OPTIN;
    prop->sharedMemPerMultiprocessor = 228 << 10;
    prop->regsPerBlock = 65536;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 2147483647;
    prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 132;
    prop->l2CacheSize = 50 << 20;
    prop->maxThreadsPerMultiProcessor = 2048;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (!device) return fail(cudaErrorInvalidValue);
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
#define NAME(x) \
    case x: return #x;
        NAME(cudaSuccess) NAME(cudaErrorInvalidValue) NAME(cudaErrorMemoryAllocation)
        NAME(cudaErrorInitializationError) NAME(cudaErrorInvalidConfiguration) NAME(cudaErrorInvalidDevice)
        NAME(cudaErrorNoKernelImageForDevice) NAME(cudaErrorInvalidResourceHandle) NAME(cudaErrorIllegalState)
        NAME(cudaErrorNotReady) NAME(cudaErrorIllegalAddress) NAME(cudaErrorLaunchOutOfResources)
        NAME(cudaErrorLaunchFailure) NAME(cudaErrorStreamCaptureUnsupported) NAME(cudaErrorStreamCaptureInvalidated)
        NAME(cudaErrorStreamCaptureMerge) NAME(cudaErrorStreamCaptureUnmatched) NAME(cudaErrorStreamCaptureUnjoined)
        NAME(cudaErrorStreamCaptureIsolation) NAME(cudaErrorStreamCaptureImplicit) NAME(cudaErrorCapturedEvent)
        NAME(cudaErrorStreamCaptureWrongThread)
#undef NAME
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
        return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    default: return cudaGetErrorName(e);
    }
}

/* ---- memory ---- */

cudaError_t cudaMalloc(void **p, size_t bytes) { return allocate(p, bytes, true); }
cudaError_t cudaFree(void *p) { return release(p, true); }
cudaError_t cudaMallocHost(void **p, size_t bytes) { return allocate(p, bytes, false); }
cudaError_t cudaFreeHost(void *p) { return release(p, false); }

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
    *total_bytes = TOTAL_BYTES;
    *free_bytes = TOTAL_BYTES - device_bytes;
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
    if (!bytes) return cudaSuccess;
    if (!dst || !src || kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return fail(cudaErrorInvalidValue);
    if (kind == cudaMemcpyDefault)
        kind = (cudaMemcpyKind)((emu_is_device(src, 1) ? 2 : 0) + (emu_is_device(dst, 1) ? 1 : 0));
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    std::vector<emu_range> uses;
    if (dst_dev) uses.push_back({dst, bytes});
    else EMU_CHECK(!find(dst, 1) || !find(dst, 1)->device, "cudaMemcpyAsync: a device destination with kind %d", kind);
    if (src_dev) uses.push_back({src, bytes});
    else EMU_CHECK(!find(src, 1) || !find(src, 1)->device, "cudaMemcpyAsync: a device source with kind %d", kind);
    emu_submit(stream, "cudaMemcpyAsync", [=]() { memmove(dst, src, bytes); }, std::move(uses));
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    return cudaMemcpyAsync(dst, src, bytes, kind, 0);
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream) {
    if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
    if (!bytes) return cudaSuccess;
    emu_submit(stream, "cudaMemsetAsync", [=]() { memset(p, value, bytes); }, {{p, bytes}});
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    if (capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
    return cudaMemsetAsync(p, value, bytes, 0);
}

/* ---- streams and events ---- */

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    if (!s) return fail(cudaErrorInvalidValue);
    *s = new emu_stream{flags};
    streams.insert(*s);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s || !streams.count(s)) return fail(cudaErrorInvalidResourceHandle);
    if (s->capturing) return fail(cudaErrorIllegalState);
    streams.erase(s);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
    if (s && s->capturing) {
        capture_forbids();
        s->invalidated = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
    if (!valid_stream(s) || !events.count(e)) return fail(cudaErrorInvalidResourceHandle);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) {
    if (!e) return fail(cudaErrorInvalidValue);
    *e = new emu_event;
    events.insert(*e);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    if (!events.count(e)) return fail(cudaErrorInvalidResourceHandle);
    events.erase(e);
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!events.count(e) || !valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
    e->captured_in = s && s->capturing ? s : nullptr;
    if (!e->captured_in) e->recorded = true, e->t = std::chrono::steady_clock::now();   // ops run at submission
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!ms) return fail(cudaErrorInvalidValue);
    if (!events.count(start) || !events.count(end)) return fail(cudaErrorInvalidResourceHandle);
    if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
    *ms = std::chrono::duration<float, std::milli>(end->t - start->t).count();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!events.count(e)) return fail(cudaErrorInvalidResourceHandle);
    if (e->captured_in && e->captured_in->capturing) return fail(cudaErrorCapturedEvent);
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

/* ---- capture and graphs ---- */

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    if (!s) return fail(cudaErrorStreamCaptureUnsupported);   // the legacy stream cannot capture
    if (!streams.count(s)) return fail(cudaErrorInvalidResourceHandle);
    if (s->capturing || capture) return fail(cudaErrorIllegalState);
    s->capturing = true;
    s->invalidated = false;
    s->mode = mode;
    s->rec.clear();
    capture = s;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    if (!s || !streams.count(s) || !graph) return fail(cudaErrorInvalidValue);
    if (!s->capturing) return fail(cudaErrorIllegalState);
    s->capturing = false;
    capture = nullptr;
    *graph = nullptr;
    if (s->invalidated) {
        s->rec.clear();
        return fail(cudaErrorStreamCaptureInvalidated);
    }
    *graph = new emu_graph{std::move(s->rec)};
    graphs.insert(*graph);
    s->rec.clear();
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long) {
    if (!exec || !graphs.count(graph)) return fail(cudaErrorInvalidValue);
    *exec = new emu_graph_exec{graph->ops};
    execs.insert(*exec);
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!execs.count(exec) || !valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
    graph_launches++;
    for (const op &o : exec->ops) emu_submit(s, o.what, o.fn, o.uses);
    return cudaSuccess;
}

extern "C" long emu_graph_launches(void) { return graph_launches; }

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    if (!execs.count(exec)) return fail(cudaErrorInvalidValue);
    execs.erase(exec);
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    if (!graphs.count(graph)) return fail(cudaErrorInvalidValue);
    graphs.erase(graph);
    delete graph;
    return cudaSuccess;
}

/* ---- launches ---- */

cudaError_t emu_func_set_attribute(const void *func, cudaFuncAttribute attr, int value) {
    if (!func) return fail(cudaErrorInvalidValue);   // cudaErrorInvalidDeviceFunction really
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > SMEM_OPTIN) return fail(cudaErrorInvalidValue);
        max_dynamic_smem[func] = value;
    }
    return cudaSuccess;
}

cudaError_t emu_launch_check(const void *kaddr, const char *name, dim3 g, dim3 b, size_t smem) {
    (void)name;
    if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z || b.x > 1024 || b.y > 1024 || b.z > 64 ||
        (size_t)b.x * b.y * b.z > 1024 || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
        return fail(cudaErrorInvalidConfiguration);
    if (smem > SMEM_DEFAULT) {
        auto it = max_dynamic_smem.find(kaddr);
        if (!kaddr || it == max_dynamic_smem.end() || (size_t)it->second < smem) return fail(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

void emu_submit(cudaStream_t s, const char *what, std::function<void()> fn, std::vector<emu_range> uses) {
    EMU_CHECK(valid_stream(s), "%s on a stream that does not exist", what);
    for (const emu_range &u : uses) {
        if (u.bytes) {
            emu_require_device(u.p, u.bytes, what);
            continue;
        }
        auto it = allocs.upper_bound((uintptr_t)u.p);   // inside an allocation, or just past its end
        bool ok = it != allocs.begin() && (--it, (uintptr_t)u.p <= it->first + it->second.bytes && it->second.device);
        EMU_CHECK(ok, "%s: pointer argument %p is not device memory (a host pointer, or freed)", what, u.p);
    }
    if (s && s->capturing) {
        s->rec.push_back({what, std::move(fn), std::move(uses)});
        return;
    }
    if (!s && capture && !(capture->flags & cudaStreamNonBlocking) && capture->mode != cudaStreamCaptureModeRelaxed) {
        capture->invalidated = true;   // the legacy stream would wait for the capturing blocking stream
        fail(cudaErrorStreamCaptureImplicit);
        return;
    }
    run(what, fn);
}

/* ---- cuBLASLt ---- */

struct emu_lt {
    int unused;
};
struct emu_lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
};
struct emu_lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch = 1;
    int64_t stride = 0;
};
struct emu_lt_pref {
    uint64_t max_workspace = 0;
    uint32_t align[4] = {256, 256, 256, 256};   // A, B, C, D: cuBLASLt's defaults
};

namespace {

std::set<emu_lt *> lt_handles;
constexpr uint64_t ALGO_MAGIC = 0x656d752d616c676full;
constexpr int EMU_LT_ALGOS = 3;   // algorithms the heuristic offers at most (data[5]: which)

/* EMU_LT_SLOW_ALGO=k: algorithm k of the heuristic's list takes 2 ms more per call,
 * so that choosing by timing (MLM_GEMM_TUNE) has something to avoid. */
bool slow_algo(const cublasLtMatmulAlgo_t *algo) {
    const char *e = getenv("EMU_LT_SLOW_ALGO");
    return algo && e && *e && algo->data[5] == strtoull(e, nullptr, 10);
}

size_t elem_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

/* The matrix problem of desc and the layouts: m, n, k, or a cuBLASLt status. */
cublasStatus_t problem(const emu_lt_desc *d, const emu_lt_layout *a, const emu_lt_layout *b, const emu_lt_layout *c,
                       const emu_lt_layout *dl, uint64_t *m, uint64_t *n, uint64_t *k) {
    if (!d || !a || !b || !c || !dl) return CUBLAS_STATUS_INVALID_VALUE;
    if (d->compute != CUBLAS_COMPUTE_32F || d->scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (a->type != CUDA_R_16BF || b->type != CUDA_R_16BF || c->type != dl->type ||
        (dl->type != CUDA_R_16BF && dl->type != CUDA_R_32F))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if ((d->transa != CUBLAS_OP_N && d->transa != CUBLAS_OP_T) || (d->transb != CUBLAS_OP_N && d->transb != CUBLAS_OP_T))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && d->epilogue != CUBLASLT_EPILOGUE_BIAS &&
        d->epilogue != CUBLASLT_EPILOGUE_BGRADB)
        return CUBLAS_STATUS_NOT_SUPPORTED;   // not emulated
    if (d->epilogue == CUBLASLT_EPILOGUE_BGRADB && b->batch != 1) return CUBLAS_STATUS_NOT_SUPPORTED;
    *m = dl->rows;
    *n = dl->cols;
    *k = d->transa == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t am = d->transa == CUBLAS_OP_N ? a->rows : a->cols;
    uint64_t bk = d->transb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->transb == CUBLAS_OP_N ? b->cols : b->rows;
    if (am != *m || bk != *k || bn != *n || c->rows != *m || c->cols != *n) return CUBLAS_STATUS_INVALID_VALUE;
    for (const emu_lt_layout *l : {a, b, c, dl})
        if (l->ld < (int64_t)std::max<uint64_t>(1, l->rows) || l->batch < 1) return CUBLAS_STATUS_INVALID_VALUE;
    if (a->batch != dl->batch || b->batch != dl->batch || c->batch != dl->batch) return CUBLAS_STATUS_INVALID_VALUE;
    if (c->ld != dl->ld || c->stride != dl->stride) return CUBLAS_STATUS_INVALID_VALUE;   // C and D share a layout here
    return CUBLAS_STATUS_SUCCESS;
}

/* Bytes from the first to past the last element of the batch of matrices l. */
size_t extent(const emu_lt_layout *l) {
    if (!l->rows || !l->cols) return 0;
    return ((size_t)(l->batch - 1) * l->stride + (l->cols - 1) * l->ld + l->rows) * elem_size(l->type);
}

/* Largest power of two up to 256 dividing the address of every matrix of the batch. */
uint32_t alignment(const void *p, const emu_lt_layout *l) {
    uintptr_t bits = (uintptr_t)p | (l->batch > 1 ? (uintptr_t)(l->stride * (int64_t)elem_size(l->type)) : 0);
    uint32_t a = 256;
    while (a > 1 && (bits & (a - 1))) a >>= 1;
    return a;
}

float load(const void *p, cudaDataType_t t, size_t i) {
    return t == CUDA_R_32F ? ((const float *)p)[i] : __bfloat162float(((const bf16 *)p)[i]);
}

/* EMU_LT_NO_BGRAD=heuristic: the heuristic has no algorithm with a bias-gradient
 * epilogue, as cuBLASLt may answer for some problems; =matmul: it offers one and
 * cublasLtMatmul refuses it. The callers must do without. */
bool bgrad_refused(const emu_lt_desc *d, const char *where) {
    const char *e = getenv("EMU_LT_NO_BGRAD");
    return d->epilogue == CUBLASLT_EPILOGUE_BGRADB && e && !strcmp(e, where);
}

}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    *h = new emu_lt{0};
    lt_handles.insert(*h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    if (!lt_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    lt_handles.erase(h);
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasLtGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    if (!d) return CUBLAS_STATUS_INVALID_VALUE;
    *d = new emu_lt_desc{compute, scale};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t bytes) {
    if (!d || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
        if (bytes != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(attr == CUBLASLT_MATMUL_DESC_TRANSA ? &d->transa : &d->transb, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (bytes != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->epilogue, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (bytes != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->bias, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;

    default: return CUBLAS_STATUS_INVALID_VALUE;   // not emulated
    }
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    if (!l) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_lt_layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t bytes) {
    if (!l || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
        if (bytes != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&l->batch, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
        if (bytes != sizeof(int64_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&l->stride, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    default: return CUBLAS_STATUS_INVALID_VALUE;   // not emulated
    }
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    if (!p) return CUBLAS_STATUS_INVALID_VALUE;
    *p = new emu_lt_pref;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t bytes) {
    if (!p || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        if (bytes != sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&p->max_workspace, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
        if (bytes != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t *results, int *found) {
    if (!lt_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!pref || requested < 1 || !results || !found) return CUBLAS_STATUS_INVALID_VALUE;
    *found = 0;
    uint64_t m, n, k;
    cublasStatus_t s = problem(d, a, b, c, dl, &m, &n, &k);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (bgrad_refused(d, "heuristic")) return CUBLAS_STATUS_NOT_SUPPORTED;
    *found = std::min(requested, EMU_LT_ALGOS);   // variants of one emulation: the same results
    for (int r = 0; r < *found; r++) {
        memset(&results[r], 0, sizeof results[r]);
        results[r].algo.data[0] = ALGO_MAGIC;
        for (int i = 0; i < 4; i++) results[r].algo.data[1 + i] = pref->align[i];
        results[r].algo.data[5] = (uint64_t)r;
        results[r].workspaceSize = 0;
        results[r].state = CUBLAS_STATUS_SUCCESS;
        results[r].wavesCount = 1.0f;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha_p, const void *A,
                              cublasLtMatrixLayout_t adesc, const void *B, cublasLtMatrixLayout_t bdesc,
                              const void *beta_p, const void *C, cublasLtMatrixLayout_t cdesc, void *D,
                              cublasLtMatrixLayout_t ddesc, const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
    if (!lt_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha_p || !beta_p || !valid_stream(stream)) return CUBLAS_STATUS_INVALID_VALUE;
    uint64_t m, n, k;
    cublasStatus_t s = problem(desc, adesc, bdesc, cdesc, ddesc, &m, &n, &k);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    const emu_lt_desc dd = *desc;
    const emu_lt_layout la = *adesc, lb = *bdesc, lc = *cdesc, ld = *ddesc;
    float alpha = *(const float *)alpha_p, beta = *(const float *)beta_p;   // host pointer mode: read now
    if (dd.epilogue != CUBLASLT_EPILOGUE_DEFAULT && !dd.bias) return CUBLAS_STATUS_INVALID_VALUE;
    if (bgrad_refused(&dd, "matmul")) return CUBLAS_STATUS_NOT_SUPPORTED;
    const cudaDataType_t vt = ld.type;   // the bias (gradient) vector's type: D's
    if (algo) {   // the kernel it names may need the alignments its preference promised
        if (algo->data[0] != ALGO_MAGIC) return CUBLAS_STATUS_INVALID_VALUE;
        const void *ptr[4] = {A, B, C, D};
        const emu_lt_layout *lay[4] = {&la, &lb, &lc, &ld};
        for (int i = 0; i < 4; i++)
            if (alignment(ptr[i], lay[i]) < std::min<uint64_t>(algo->data[1 + i], 16)) return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (!m || !n) return CUBLAS_STATUS_SUCCESS;
    std::vector<emu_range> uses = {{D, extent(&ld)}};   // operands outside their allocations: an illegal address
    if (k) uses.push_back({A, extent(&la)}), uses.push_back({B, extent(&lb)});
    if (beta != 0.0f) uses.push_back({C, extent(&lc)});
    if (dd.epilogue == CUBLASLT_EPILOGUE_BIAS) uses.push_back({dd.bias, m * elem_size(vt)});
    if (dd.epilogue == CUBLASLT_EPILOGUE_BGRADB) uses.push_back({dd.bias, n * elem_size(vt)});
    if (workspace_bytes) uses.push_back({workspace, workspace_bytes});
    const bool slow = slow_algo(algo);
    emu_submit(stream, "cublasLtMatmul", [=]() {
        if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        std::vector<float> af(m * k), bf(n * k);   // op(A) by rows, op(B) by columns: both k-contiguous
        const size_t ea = elem_size(la.type), ec = elem_size(ld.type);
        for (int32_t bt = 0; bt < ld.batch; bt++) {
            const char *a = (const char *)A + (size_t)bt * la.stride * ea, *b = (const char *)B + (size_t)bt * lb.stride * ea;
            const char *c = (const char *)C + (size_t)bt * lc.stride * ec;
            char *d = (char *)D + (size_t)bt * ld.stride * ec;
            for (uint64_t i = 0; i < m; i++)
                for (uint64_t p = 0; p < k; p++)
                    af[i * k + p] = load(a, la.type, dd.transa == CUBLAS_OP_N ? i + p * la.ld : p + i * la.ld);
            for (uint64_t j = 0; j < n; j++)
                for (uint64_t p = 0; p < k; p++)
                    bf[j * k + p] = load(b, lb.type, dd.transb == CUBLAS_OP_N ? p + j * lb.ld : j + p * lb.ld);
            for (uint64_t j = 0; j < n; j++)
                for (uint64_t i = 0; i < m; i++) {
                    const float *x = &af[i * k], *y = &bf[j * k];
                    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    uint64_t p = 0;
                    for (; p + 8 <= k; p += 8)
                        for (int q = 0; q < 8; q++) acc[q] += x[p + q] * y[p + q];
                    for (; p < k; p++) acc[p & 7] += x[p] * y[p];
                    float v = alpha * (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
                    size_t at = i + j * ld.ld;
                    if (beta != 0.0f) v += beta * load(c, lc.type, i + j * lc.ld);
                    if (dd.epilogue == CUBLASLT_EPILOGUE_BIAS) v += load(dd.bias, vt, i);
                    if (ld.type == CUDA_R_32F) ((float *)d)[at] = v;
                    else ((bf16 *)d)[at] = __float2bfloat16(v);
                }
            if (dd.epilogue == CUBLASLT_EPILOGUE_BGRADB)   // op(B)'s column sums over k (one matrix)
                for (uint64_t j = 0; j < n; j++) {
                    float v = 0;
                    for (uint64_t p = 0; p < k; p++) v += bf[j * k + p];
                    if (vt == CUDA_R_32F) ((float *)dd.bias)[j] = v;
                    else ((bf16 *)dd.bias)[j] = __float2bfloat16(v);
                }
        }
    }, std::move(uses));
    return CUBLAS_STATUS_SUCCESS;
}
