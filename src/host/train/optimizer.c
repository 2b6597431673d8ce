/*
 * Schedules and the optimizer step. Everything stays on the backend: the grad norm
 * is reduced into m->stats[2] and AdamW reads the clip factor from there, so a step
 * needs no host round trip.
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

void mlm_optim_step(mlm_model *m, const mlm_optim_config *o, int step, float lr) {
    mlm_backend *be = m->be;
    size_t n = m->lay.num_params, nd = m->lay.num_decay;
    float *gnorm_sq = m->stats + 2;
    be->sum_squares(be, gnorm_sq, m->grads, n);
    mlm_adamw_args a = {lr, o->beta1, o->beta2, o->eps, o->weight_decay, step, o->grad_clip};
    char *wgt = m->params;
    be->adamw(be, m->master, wgt, m->grads, m->m, m->v, nd, &a, gnorm_sq);
    a.weight_decay = 0;
    be->adamw(be, m->master + nd, wgt + nd * be->wgt_size, m->grads + nd, m->m + nd, m->v + nd, n - nd, &a,
              gnorm_sq);
    be->zero(be, m->grads, n * sizeof(float));
}
