/*
 * Data-parallel training over ranks: the process's place in the job, collectives
 * with a watchdog, and the bucketed gradient all-reduce.
 *
 * Launch: `mpirun -np N [--hostfile H] mlmgpu train ...`. Without an MPI launcher in
 * the environment the process is the only rank and no MPI call is made. Rank, world
 * size and local rank (the rank among the processes of this node, from
 * MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)) come from MPI; on CUDA each rank uses
 * device = local rank, and the gradients travel over one NCCL communicator that rank
 * 0 bootstraps (ncclGetUniqueId, MPI_Bcast). On the CPU backend the same calls are
 * MPI collectives on host memory.
 *
 * Every collective is called by every rank in the same order. Each waits at most
 * [dist] timeout_s: a rank that died or hangs makes the others abort the job (MPI_Abort,
 * ncclCommAbort) with a message naming the step, the collective and, on rank 0, the
 * ranks that never reached it. With one rank all of them return at once (unless
 * MLM_DIST_FORCE, below).
 *
 * Replicated data parallelism: every rank holds all weights and AdamW moments, reads
 * a disjoint slice of each global batch, and the gradients are SUMMED over ranks (each
 * rank scales its loss by 1 / masked tokens of the whole global batch), so every rank
 * applies the same update and a step equals the single-rank step on the whole batch.
 */
#ifndef MLM_DIST_H
#define MLM_DIST_H

#include <stddef.h>

#include "mlm/backend.h"
#include "mlm/model.h"

/* ---------------------------------------------------------------- the job */

/* Joins the MPI job when an MPI launcher started this process (OMPI_COMM_WORLD_SIZE,
 * PMI_SIZE or PMIX_RANK in the environment); otherwise stays a single rank. A build
 * without MPI that is launched as one of several ranks exits 2 saying so. */
void mlm_dist_init(int *argc, char ***argv);
/* Releases NCCL and MPI; call once, at the end. */
void mlm_dist_finalize(void);

int mlm_dist_rank(void);        // 0 .. world-1
int mlm_dist_world(void);       // ranks in the job
int mlm_dist_local_rank(void);  // rank among the ranks of this node: the CUDA device
int mlm_dist_local_size(void);  // ranks on this node
/* Collectives really run (MPI, NCCL): world > 1, or a single rank started by mpirun
 * with MLM_DIST_FORCE=1, which takes the multi-rank code path on one process (to
 * check NCCL on a one-GPU host). Otherwise every collective returns at once. */
int mlm_dist_active(void);
int mlm_dist_have_mpi(void);    // this build has MPI

/* CPU threads per rank: the configured number, or with 0 (all cores) the node's
 * cores divided among its ranks. */
int mlm_dist_cpu_threads(int configured);

/* Seconds any collective may wait for the other ranks (default 300). */
void mlm_dist_set_timeout(double seconds);
/* The training step, for messages. */
void mlm_dist_set_step(int step);

/* Rank 0's last act when a collective fails or times out, before the job is aborted:
 * fn(ctx, missing) with the ranks that never reached it ("1, 3"; "" when not known).
 * The trainer writes the last completed step there (a checkpoint marked as written on
 * failure). Meanwhile the other ranks wait for it (at most [dist] timeout_s more);
 * then, as on every abort, MPI_Abort runs under an alarm that ends the process after
 * a few seconds should the launcher not. NULL: none. */
typedef void (*mlm_dist_failure_fn)(void *ctx, const char *missing);
void mlm_dist_set_failure_hook(mlm_dist_failure_fn fn, void *ctx);

/* For the trainer's SIGINT/SIGTERM handler (async-signal-safe). mpirun signals the
 * ranks when it loses a host, and kills them 1 s later: rank 0, waiting in a
 * collective for ranks that have not reached it 0.5 s after a signal, takes them as
 * lost and fails the collective (the failure hook writes the checkpoint) at once. */
void mlm_dist_signal_received(void);

/* Binds the comm layer to the backend the ranks train on: on CUDA with world > 1
 * creates the NCCL communicator (dies when this build has no NCCL). Checks that all
 * ranks use the same kind of backend. */
void mlm_dist_attach(mlm_backend *be);
/* Destroys the NCCL communicator; before the backend is destroyed. */
void mlm_dist_detach(void);

/* For an error every rank finds alike (a bad split, a bad resume): rank 0 prints
 * "mlmgpu: error: MSG" and exits with code; the other ranks stay quiet and wait to be
 * ended with it by the launcher, so the message appears once. */
_Noreturn void mlm_dist_die_all(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fault injection for the tests: MLM_FAULT_KILL_RANK=r MLM_FAULT_KILL_STEP=s makes
 * rank r SIGKILL itself at the start of step s; MLM_FAULT_HANG_RANK/_STEP makes it
 * stop answering (sleep forever) instead; MLM_FAULT_PAUSE_STEP=s (MLM_FAULT_PAUSE_S=t,
 * default 2) makes every rank sleep t seconds at the start of step s. */
void mlm_dist_fault_point(int step);

/* ---------------------------------------------------------------- collectives */

/* Sums n host doubles over ranks, in place; `what` names the collective in errors. */
void mlm_dist_allreduce_host(double *v, int n, const char *what);
/* Rank 0's bytes to every rank. */
void mlm_dist_bcast_host(void *buf, size_t bytes, const char *what);
/* Rank 0's copy of n fp32 values in backend memory (device memory on CUDA), in
 * place, ordered after the work already queued on the backend; returns when done. */
void mlm_dist_bcast_f32(mlm_backend *be, float *buf, size_t n, const char *what);

/* ---------------------------------------------------------------- gradient buckets */

/* A bucket: the gradients one part of the backward completes, as ranges of the
 * parameter buffer (a layer's tensors are stacked per kind, so not contiguous). */
#define MLM_BUCKET_MAX_RANGES 16
typedef struct { size_t offset, count; } mlm_range;
typedef struct {
    int nranges;
    mlm_range r[MLM_BUCKET_MAX_RANGES];
    size_t elems;
} mlm_grad_bucket;

/* The buckets in the order the backward completes them, by the part of the model
 * each tensor belongs to (model.h): 0 the MLM head (the tied word embeddings are not
 * its), 1 .. L the encoder layers L-1 .. 0, L+1 the embeddings with the word
 * embeddings (written last, by the embedding backward). They partition the buffer.
 * Returns the count (L + 2); fills at most max. */
int mlm_grad_buckets(const mlm_layout *lay, mlm_grad_bucket *out, int max);

/* The gradient all-reduce of a model, bucketed and overlapped with the backward: armed
 * before the step's last micro-batch, it sums each bucket over ranks as soon as the
 * backward has finished with it (on CUDA on a second stream after an event, on the
 * CPU with MPI_Iallreduce). NULL (every call a no-op) when the world has one rank. */
typedef struct mlm_grad_sync mlm_grad_sync;
mlm_grad_sync *mlm_grad_sync_create(mlm_model *m);
void mlm_grad_sync_destroy(mlm_grad_sync *gs);
/* The next mlm_model_step_micro launches buckets as its backward completes them. */
void mlm_grad_sync_arm(mlm_grad_sync *gs);
/* Launches the buckets the backward did not (a micro-batch with nothing masked has no
 * backward) and orders the optimizer after all of them: the CPU waits for them, CUDA
 * makes the compute stream wait for the communication stream. */
void mlm_grad_sync_finish(mlm_grad_sync *gs);
/* CUDA: the host waits (with the watchdog) until the all-reduce is done, so that no
 * later blocking call can hang on a dead peer. CPU: nothing left to wait for. */
void mlm_grad_sync_wait(mlm_grad_sync *gs);

#endif
