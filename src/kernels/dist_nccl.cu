/*
 * NCCL glue of the comm layer (include/mlm/dist_nccl.h; its caller is
 * src/host/train/dist.c): one non-blocking communicator, so no NCCL call can block
 * the host forever; a communication stream beside the backend's compute stream;
 * collectives queued there after an event recorded on the compute stream, so the
 * gradients of a layer travel while the backward of the next layer runs; a `done`
 * event after the last of them that the optimizer (compute stream) and the host's
 * watchdog wait on.
 *
 * Non-blocking communicators may answer ncclInProgress to any call; settle() then
 * polls ncclCommGetAsyncError until the call has taken effect, within the timeout.
 */
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.cuh"
#include "mlm/dist_nccl.h"

struct mlm_nccl {
    ncclComm_t comm;
    cudaStream_t comm_stream;   // collectives, in launch order
    cudaStream_t compute;       // the backend's stream
    cudaEvent_t ready;          // compute work a launch follows
    cudaEvent_t done;           // after the last queued collective
    int device;
};

static int nccl_fail(ncclComm_t comm, ncclResult_t r, const char *call, char *err, size_t len) {
    const char *detail = comm ? ncclGetLastError(comm) : "";
    return mlm_fail(err, len, "%s: %s%s%s", call, ncclGetErrorString(r), detail && detail[0] ? ": " : "",
                    detail ? detail : "");
}

static int cuda_fail(cudaError_t e, const char *call, char *err, size_t len) {
    return mlm_fail(err, len, "%s: %s (%s)", call, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* Waits until the communicator is done with the call that returned r. */
static int settle(ncclComm_t comm, ncclResult_t r, const char *call, double timeout_s, char *err, size_t len) {
    double deadline = mlm_now_s() + timeout_s;
    while (r == ncclInProgress) {
        if (mlm_now_s() > deadline)
            return mlm_fail(err, len, "%s: still in progress after %g s (a peer is not answering)", call, timeout_s);
        struct timespec nap = {0, 100000};
        nanosleep(&nap, NULL);
        ncclResult_t q = ncclCommGetAsyncError(comm, &r);
        if (q != ncclSuccess) return nccl_fail(comm, q, "ncclCommGetAsyncError", err, len);
    }
    return r == ncclSuccess ? 0 : nccl_fail(comm, r, call, err, len);
}

#define CUDA_TRY(call)                                            \
    do {                                                          \
        cudaError_t e_ = (call);                                  \
        if (e_ != cudaSuccess) return cuda_fail(e_, #call, err, err_len); \
    } while (0)

extern "C" int mlm_nccl_unique_id(void *id, char *err, size_t err_len) {
    static_assert(sizeof(ncclUniqueId) == MLM_NCCL_ID_BYTES, "ncclUniqueId size");
    ncclResult_t r = ncclGetUniqueId((ncclUniqueId *)id);
    return r == ncclSuccess ? 0 : nccl_fail(NULL, r, "ncclGetUniqueId", err, err_len);
}

extern "C" mlm_nccl *mlm_nccl_create(mlm_backend *be, const void *id, int rank, int world, double timeout_s,
                                     char *err, size_t err_len) {
    cuda_state *st = cuda_st(be);
    mlm_nccl *c = (mlm_nccl *)mlm_xcalloc(1, sizeof *c, "NCCL state");
    c->device = st->device;
    c->compute = st->stream;
    cudaError_t e = cudaSetDevice(st->device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->comm_stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        cuda_fail(e, "NCCL streams and events", err, err_len);
        free(c);
        return NULL;
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclUniqueId uid;
    memcpy(&uid, id, sizeof uid);
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, world, uid, rank, &config);
    if (settle(c->comm, r, "ncclCommInitRankConfig", timeout_s, err, err_len) != 0) {
        if (c->comm) ncclCommAbort(c->comm);
        free(c);
        return NULL;
    }
    // `done` starts completed, so a poll before the first launch says finished
    if (cudaEventRecord(c->done, c->comm_stream) != cudaSuccess) {
        cuda_fail(cudaGetLastError(), "cudaEventRecord", err, err_len);
        ncclCommAbort(c->comm);
        free(c);
        return NULL;
    }
    return c;
}

extern "C" int mlm_nccl_launch(mlm_nccl *c, int op, float *const *bufs, const size_t *counts, int n,
                               double timeout_s, char *err, size_t err_len) {
    CUDA_TRY(cudaEventRecord(c->ready, c->compute));
    CUDA_TRY(cudaStreamWaitEvent(c->comm_stream, c->ready, 0));
    ncclResult_t r = ncclGroupStart();
    for (int i = 0; i < n && r == ncclSuccess; i++) {
        if (op == 0) r = ncclAllReduce(bufs[i], bufs[i], counts[i], ncclFloat32, ncclSum, c->comm, c->comm_stream);
        else r = ncclBroadcast(bufs[i], bufs[i], counts[i], ncclFloat32, 0, c->comm, c->comm_stream);
        if (r == ncclInProgress) r = ncclSuccess;   // settled with the group
    }
    ncclResult_t g = ncclGroupEnd();
    if (r != ncclSuccess) return nccl_fail(c->comm, r, op == 0 ? "ncclAllReduce" : "ncclBroadcast", err, err_len);
    if (settle(c->comm, g, "ncclGroupEnd", timeout_s, err, err_len) != 0) return -1;
    CUDA_TRY(cudaEventRecord(c->done, c->comm_stream));
    return 0;
}

extern "C" int mlm_nccl_order_compute(mlm_nccl *c, char *err, size_t err_len) {
    CUDA_TRY(cudaStreamWaitEvent(c->compute, c->done, 0));
    return 0;
}

extern "C" int mlm_nccl_poll(mlm_nccl *c, char *err, size_t err_len) {
    cudaError_t e = cudaEventQuery(c->done);
    if (e == cudaSuccess) return 1;
    if (e != cudaErrorNotReady) return cuda_fail(e, "cudaEventQuery (NCCL stream)", err, err_len);
    ncclResult_t state;
    ncclResult_t q = ncclCommGetAsyncError(c->comm, &state);
    if (q != ncclSuccess) return nccl_fail(c->comm, q, "ncclCommGetAsyncError", err, err_len);
    if (state != ncclSuccess && state != ncclInProgress)
        return nccl_fail(c->comm, state, "NCCL communicator", err, err_len);
    return 0;
}

extern "C" void mlm_nccl_abort(mlm_nccl *c) {
    if (c && c->comm) ncclCommAbort(c->comm);
    if (c) c->comm = NULL;
}

extern "C" void mlm_nccl_destroy(mlm_nccl *c) {
    if (!c) return;
    if (c->comm) {
        char err[256];
        // finish what is queued, then release; a destroy on a failed comm is an abort
        if (cudaStreamSynchronize(c->comm_stream) != cudaSuccess ||
            settle(c->comm, ncclCommFinalize(c->comm), "ncclCommFinalize", 60.0, err, sizeof err) != 0) {
            ncclCommAbort(c->comm);
        } else {
            ncclCommDestroy(c->comm);
        }
    }
    cudaEventDestroy(c->ready);
    cudaEventDestroy(c->done);
    cudaStreamDestroy(c->comm_stream);
    free(c);
}
