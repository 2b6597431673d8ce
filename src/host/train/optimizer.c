/*
 * Schedules and the optimizer step (include/mlm/optimizer.h; the trainer calls it):
 * global grad norm, clipping and AdamW through the backend's sum_squares and adamw
 * ops (src/host/cpu/adamw.c, src/kernels/adamw.cu). Everything stays on the backend:
 * the grad norm is reduced into m->stats[2] and AdamW reads the clip factor from
 * there, so a step needs no host round trip. Two passes over the gradients, the least
 * the clipping allows (the norm must see every gradient before the first update):
 * the sum of squares, then AdamW, which also zeroes each gradient it has read. The
 * segments cover the whole gradient buffer, so nothing is left for a zeroing pass.
 */
#include "mlm/optimizer.h"

#include <math.h>

float mlm_lr_at(const mlm_optim_config *o, int step, int steps) {
    if (o->warmup_steps > 0 && step <= o->warmup_steps) return o->lr * (float)step / (float)o->warmup_steps;
    if (o->schedule == MLM_SCHED_CONSTANT || steps <= o->warmup_steps) return o->lr;
    double progress = (double)(step - o->warmup_steps) / (double)(steps - o->warmup_steps);
    if (progress > 1) progress = 1;
    double shape = o->schedule == MLM_SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * progress)) : 1.0 - progress;
    return (float)(o->min_lr + (o->lr - o->min_lr) * shape);
}

/* AdamW over the parameter segments (model.h), one call per run of neighbouring
 * segments alike in weight decay: two calls, since the decayed tensors come first.
 * An optimizer that needs per-tensor norms (LAMB) takes the segments one by one. */
void mlm_optim_step(mlm_model *m, const mlm_optim_config *o, int step, float lr) {
    mlm_backend *be = m->be;
    size_t n = m->lay.num_params;
    float *gnorm_sq = m->stats + 2;
    be->sum_squares(be, gnorm_sq, m->grads, n);
    char *wgt = m->params;
    for (int i = 0, end; i < m->nsegs; i = end) {
        size_t at = m->segs[i].offset, count = 0;
        for (end = i; end < m->nsegs && m->segs[end].decay == m->segs[i].decay; end++) count += m->segs[end].count;
        mlm_adamw_args a = {lr, o->beta1, o->beta2, o->eps, m->segs[i].decay ? o->weight_decay : 0.0f, step,
                            o->grad_clip};
        be->adamw(be, m->master + at, wgt + at * be->wgt_size, m->grads + at, m->m + at, m->v + at, count, &a,
                  gnorm_sq);
    }
}
