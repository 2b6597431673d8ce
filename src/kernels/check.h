/*
 * Check macros for the CUDA backend: a failing CUDA runtime or cuBLASLt call
 * prints file:line, the call, the library's own error and a hint at the likely
 * cause, then exits through mlm_die (exit code 1). launchCheck() goes after every
 * kernel launch: it reports bad launch configurations at once, and errors of
 * earlier asynchronous work at the latest at the next checked call.
 */
#ifndef MLM_KERNELS_CHECK_H
#define MLM_KERNELS_CHECK_H

#include <cublasLt.h>
#include <cuda_runtime.h>

/* log.h is C11: _Noreturn is spelled [[noreturn]] in C++. */
#define _Noreturn [[noreturn]]
extern "C" {
#include "mlm/log.h"
}
#undef _Noreturn

static inline const char *cuda_hint(cudaError_t e) {
    switch (e) {
    case cudaErrorMemoryAllocation: return "; lower train.micro_batch or the sequence length";
    case cudaErrorNoKernelImageForDevice: return "; this build has sm_90 code only (Hopper)";
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure: return "; an earlier kernel failed: rerun under compute-sanitizer";
    case cudaErrorInvalidConfiguration: return "; a launch got a bad grid or block size for these shapes";
    case cudaErrorStreamCaptureUnsupported:
    case cudaErrorStreamCaptureInvalidated:
    case cudaErrorStreamCaptureImplicit:
    case cudaErrorCapturedEvent:
    case cudaErrorStreamCaptureWrongThread: return "; recording a CUDA graph failed: MLM_CUDA_GRAPHS=0 runs without graphs";
    default: return "";
    }
}

static inline void cuda_check(cudaError_t e, const char *call, const char *file, int line) {
    if (e != cudaSuccess)
        mlm_die(MLM_EXIT_RUNTIME, "%s:%d: %s: %s (%s)%s", file, line, call, cudaGetErrorString(e),
                cudaGetErrorName(e), cuda_hint(e));
}

static inline const char *cublas_hint(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_NOT_SUPPORTED: return "; no cuBLASLt kernel for these types, shapes or epilogue";
    case CUBLAS_STATUS_INVALID_VALUE: return "; a matrix layout, leading dimension or pointer alignment is off";
    case CUBLAS_STATUS_ALLOC_FAILED: return "; out of device memory";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "; an earlier kernel failed: rerun under compute-sanitizer";
    default: return "";
    }
}

static inline void cublas_check(cublasStatus_t s, const char *call, const char *file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS)
        mlm_die(MLM_EXIT_RUNTIME, "%s:%d: %s: %s%s", file, line, call, cublasLtGetStatusString(s),
                cublas_hint(s));
}

#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)
#define cublasCheck(call) cublas_check((call), #call, __FILE__, __LINE__)
#define launchCheck() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

#endif
