/*
 * NCCL glue for the comm layer (src/host/train/dist.c), implemented in
 * src/kernels/dist_nccl.cu. Built with CUDA, MPI and NCCL (MLM_HAVE_NCCL). One
 * communicator per process, a communication stream beside the backend's compute
 * stream, and two events: the compute work a launch must follow, and the end of the
 * last queued communication. Calls return 0, or -1 with the reason in err.
 */
#ifndef MLM_DIST_NCCL_H
#define MLM_DIST_NCCL_H

#include <stddef.h>

#include "mlm/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MLM_NCCL_ID_BYTES 128   // sizeof(ncclUniqueId)

typedef struct mlm_nccl mlm_nccl;

int mlm_nccl_unique_id(void *id, char *err, size_t err_len);
/* Non-blocking communicator init on be's device; waits for the peers up to timeout_s. */
mlm_nccl *mlm_nccl_create(mlm_backend *be, const void *id, int rank, int world, double timeout_s, char *err,
                          size_t err_len);
/* Queues n in-place collectives over bufs[i][0 .. counts[i]) fp32 on the communication
 * stream, after the work queued so far on the backend's stream: op 0 sums over ranks,
 * op 1 broadcasts rank 0's values. One NCCL group. */
int mlm_nccl_launch(mlm_nccl *c, int op, float *const *bufs, const size_t *counts, int n, double timeout_s,
                    char *err, size_t err_len);
/* The backend's stream waits for all communication queued so far. */
int mlm_nccl_order_compute(mlm_nccl *c, char *err, size_t err_len);
/* 1: all queued communication finished; 0: still running; -1: NCCL or CUDA failed. */
int mlm_nccl_poll(mlm_nccl *c, char *err, size_t err_len);
/* Aborts the communicator: pending NCCL kernels end, the peers see an error. */
void mlm_nccl_abort(mlm_nccl *c);
void mlm_nccl_destroy(mlm_nccl *c);

#ifdef __cplusplus
}
#endif

#endif
