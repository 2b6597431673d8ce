/*
 * The training loop: data in order from the shards, masking per micro-batch,
 * gradient accumulation to the global batch, the optimizer step, periodic
 * validation, logs on stderr and metrics.jsonl in the run directory.
 */
#ifndef MLM_TRAIN_H
#define MLM_TRAIN_H

#include "mlm/backend.h"
#include "mlm/config.h"
#include "mlm/data.h"
#include "mlm/model.h"

/* Upper bound on masked tokens among n maskable ones: mean + 10 standard deviations,
 * so a micro-batch exceeds it with probability below 1e-20 (the excess is then
 * dropped, with a warning). Static, so the arena and later CUDA graphs are fixed. */
int mlm_max_masked(int n, float mask_prob);

/* Host-side micro-batch builder: reads sequences, masks them, fills an mlm_batch. */
typedef struct {
    int B, S, max_M;
    int32_t *ids, *lengths, *rows, *labels;   // (B*S) (B) (max_M) (max_M)
    mlm_batch batch;
} mlm_microbatch;

void mlm_microbatch_init(mlm_microbatch *mb, int B, int S, int max_M);
void mlm_microbatch_free(mlm_microbatch *mb);
/* Fills mb with the B sequences seq_idx[0..B) of sh, masked with (seed, step) and
 * global-batch positions seq_base + b. Dies naming the shard on a bad token id. */
void mlm_microbatch_fill(mlm_microbatch *mb, const mlm_shards *sh, const uint64_t *seq_idx,
                         const mlm_data_config *dc, const mlm_special_ids *sp, uint64_t seed, uint32_t step,
                         uint32_t seq_base);

/* Mean masked-LM loss and accuracy over n micro-batches of sh from the start, with
 * fixed masking (step 0), no dropout. In a job of several ranks (dist.h) every rank
 * must call it: each evaluates every world-th micro-batch and the sums are reduced. */
typedef struct { double loss, acc; long tokens; } mlm_eval_result;
mlm_eval_result mlm_evaluate(mlm_model *m, const mlm_shards *sh, const mlm_config *cfg,
                             const mlm_special_ids *sp, int n);

/* Runs the training described by cfg on be, from scratch or (resume = "auto" or a
 * checkpoint directory; NULL = never) from a checkpoint. Checkpoints every
 * checkpoint_every steps, at the end, and on SIGINT/SIGTERM (after finishing the
 * step). Returns a process exit code. */
int mlm_train(const mlm_config *cfg, mlm_backend *be, const char *resume);

#endif
