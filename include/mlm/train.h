/*
 * The training loop (src/host/train/trainer.c): data in order from the shards,
 * masking per micro-batch, gradient accumulation to the global batch, the optimizer
 * step, periodic validation, logs on stderr and metrics.jsonl in the run directory.
 */
#ifndef MLM_TRAIN_H
#define MLM_TRAIN_H

#include "mlm/backend.h"
#include "mlm/config.h"

/* Runs the training described by cfg on be, from scratch or (resume = "auto" or a
 * checkpoint directory; NULL = never) from a checkpoint. Checkpoints every
 * checkpoint_every steps, at the end, and on SIGINT/SIGTERM (after finishing the
 * step). train.out_dir is locked for the run; starting from scratch in one that
 * holds a run is refused unless overwrite. Returns a process exit code: 0 when
 * every step ran, 128 + the signal number after a signal's checkpoint. */
int mlm_train(const mlm_config *cfg, mlm_backend *be, const char *resume, int overwrite);

#endif
