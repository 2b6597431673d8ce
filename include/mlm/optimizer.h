/*
 * Learning-rate schedules and the optimizer step (src/host/train/optimizer.c):
 * global grad norm, clipping and AdamW over the parameter buffer's segments.
 */
#ifndef MLM_OPTIMIZER_H
#define MLM_OPTIMIZER_H

#include "mlm/config.h"
#include "mlm/model.h"

/* Learning rate for 1-based step: linear warmup over warmup_steps, then linear or
 * cosine decay to min_lr at `steps`, or constant. */
float mlm_lr_at(const mlm_optim_config *o, int step, int steps);

/* Clips and applies AdamW for 1-based step with learning rate lr, then zeroes the
 * gradients. The squared global grad norm (before clipping) is left in
 * m->stats[2] on the backend. */
void mlm_optim_step(mlm_model *m, const mlm_optim_config *o, int step, float lr);

#endif
