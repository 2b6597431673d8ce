/*
 * AdamW on the CPU (twin: src/kernels/adamw.cu), written as torch.optim.AdamW
 * (foreach=False) computes it, with torch.nn.utils.clip_grad_norm_'s clipping folded
 * in. The caller (src/host/train/optimizer.c) passes the squared global norm. The
 * gradient is zeroed as it is read, so the step needs no separate zeroing pass.
 */
#include <math.h>

#include "common.h"

/* clip_grad_norm_: coef = max_norm / (norm + 1e-6) in fp32, clamped to 1. */
static float clip_coef(const mlm_adamw_args *a, const float *gnorm_sq) {
    if (!(a->grad_clip > 0) || !gnorm_sq) return 1.0f;
    float coef = a->grad_clip / (sqrtf(*gnorm_sq) + 1e-6f);
    return coef < 1.0f ? coef : 1.0f;
}

/* The scalar arithmetic (double, then cast to fp32) and the element order of
 * torch's _single_tensor_adamw: decay, lerp of m, addcmul of v, addcdiv. */
void cpu_adamw(mlm_backend *be, float *master, void *wgt, float *g, float *m, float *v,
               size_t n, const mlm_adamw_args *a, const float *gnorm_sq) {
    float clip = clip_coef(a, gnorm_sq);
    double bc1 = 1.0 - pow(a->beta1, a->step), bc2 = 1.0 - pow(a->beta2, a->step);
    float decay = (float)(1.0 - (double)a->lr * a->weight_decay);
    float w1 = (float)(1.0 - a->beta1), b2 = a->beta2, w2 = (float)(1.0 - a->beta2);
    float neg_step = (float)(-(a->lr / bc1)), bc2_sqrt = (float)sqrt(bc2), eps = a->eps;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * clip;
        float mi = m[i] + w1 * (gi - m[i]);                       // lerp, weight < 0.5
        float vi = v[i] * b2 + w2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        master[i] = master[i] * decay + neg_step * mi / denom;
        m[i] = mi;
        v[i] = vi;
        g[i] = 0.0f;
    }
    be->copy_master_to_wgt(be, wgt, master, n);
}
