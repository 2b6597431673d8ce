/*
 * tests/emu: NCCL for the emulated device, over MPI. The emulated device runs work
 * as it is queued, so a collective here runs at once, as the blocking MPI call on
 * the communicator's duplicate of MPI_COMM_WORLD: the gradient buckets, broadcasts
 * and the comm layer's bookkeeping of src/kernels/dist_nccl.cu and src/host/train/dist.c
 * run for real. Not modelled: NCCL's asynchrony (a dead or hung peer blocks here
 * rather than showing as an async error), and anything but fp32 sums and broadcasts.
 */
#ifndef MLM_TESTS_EMU_NCCL_H
#define MLM_TESTS_EMU_NCCL_H

#define OMPI_SKIP_MPICXX 1   // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fake_cuda.h"

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
} ncclResult_t;
typedef enum { ncclFloat32 = 7, ncclFloat = 7 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef struct { int blocking; } ncclConfig_t;
#define NCCL_CONFIG_INITIALIZER {1}

struct emu_nccl_comm {
    MPI_Comm comm;
    int rank, world;
    char last[256];
};
typedef emu_nccl_comm *ncclComm_t;

inline const char *ncclGetErrorString(ncclResult_t r) {
    static const char *const names[] = {"no error", "unhandled cuda error", "unhandled system error",
                                        "internal error", "invalid argument", "invalid usage", "remote error",
                                        "operation in progress"};
    return r >= 0 && r <= ncclInProgress ? names[r] : "unknown result";
}
inline const char *ncclGetLastError(ncclComm_t c) { return c ? c->last : ""; }

inline ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "emulated-nccl-%d", rand());
    return ncclSuccess;
}

inline ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int world, ncclUniqueId, int rank, ncclConfig_t *) {
    int mpi_rank = -1, mpi_world = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpi_world);
    if (mpi_rank != rank || mpi_world != world) return ncclInvalidArgument;
    ncclComm_t c = (ncclComm_t)calloc(1, sizeof *c);
    c->rank = rank;
    c->world = world;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &c->comm) != MPI_SUCCESS) {
        free(c);
        return ncclSystemError;
    }
    *out = c;
    return ncclSuccess;
}

inline ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t *state) {
    *state = ncclSuccess;
    return ncclSuccess;
}

inline ncclResult_t ncclGroupStart() { return ncclSuccess; }
inline ncclResult_t ncclGroupEnd() { return ncclSuccess; }

/* In place only, as dist_nccl.cu calls them; buffers are emulated device memory. */
inline ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                  ncclComm_t c, cudaStream_t) {
    if (send != recv || type != ncclFloat32 || op != ncclSum || count > (size_t)0x7fffffff) {
        snprintf(c->last, sizeof c->last, "emulated NCCL: only in-place fp32 sums of < 2^31 elements");
        return ncclInvalidUsage;
    }
    return MPI_Allreduce(MPI_IN_PLACE, recv, (int)count, MPI_FLOAT, MPI_SUM, c->comm) == MPI_SUCCESS ? ncclSuccess
                                                                                                 : ncclRemoteError;
}

inline ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type, int root,
                                  ncclComm_t c, cudaStream_t) {
    if (send != recv || type != ncclFloat32 || count > (size_t)0x7fffffff) {
        snprintf(c->last, sizeof c->last, "emulated NCCL: only in-place fp32 broadcasts of < 2^31 elements");
        return ncclInvalidUsage;
    }
    return MPI_Bcast(recv, (int)count, MPI_FLOAT, root, c->comm) == MPI_SUCCESS ? ncclSuccess : ncclRemoteError;
}

inline ncclResult_t ncclCommFinalize(ncclComm_t) { return ncclSuccess; }
inline ncclResult_t ncclCommDestroy(ncclComm_t c) {
    MPI_Comm_free(&c->comm);
    free(c);
    return ncclSuccess;
}
inline ncclResult_t ncclCommAbort(ncclComm_t c) {   // no collective: the peers may be gone
    free(c);
    return ncclSuccess;
}

#endif
