/*
 * AdamW on the fp32 master weights (twin: src/host/cpu/adamw.c), the arithmetic of
 * torch's _single_tensor_adamw as the CPU backend writes it (decay, lerp of m,
 * addcmul of v, addcdiv), with clip_grad_norm_'s factor min(1, clip / (sqrt(gnorm_sq)
 * + 1e-6)) read from the device, so the optimizer step needs no host sync. Each
 * thread updates 8 consecutive elements with 16-byte loads, refreshes the bf16
 * weight copy and zeroes the gradient in the same pass (the next step accumulates
 * from zero; a separate zeroing pass would write the same bytes in one more
 * launch). The _rn intrinsics keep nvcc from contracting into FMAs: the update then
 * rounds exactly as the CPU backend's.
 */
#include <math.h>

#include "common.cuh"

enum { ADAMW_THREADS = 256 };

/* The step's scalars, computed on the host in double as the CPU backend does. */
struct adamw_scalars {
    float decay;       // 1 - lr * weight_decay
    float w1;          // 1 - beta1
    float b2, w2;      // beta2, 1 - beta2
    float neg_step;    // -lr / (1 - beta1^step)
    float bc2_sqrt;    // sqrt(1 - beta2^step)
    float eps;
    float grad_clip;   // 0: off
};

__device__ __forceinline__ float clip_factor(const adamw_scalars &k, const float *gnorm_sq) {
    if (!(k.grad_clip > 0.0f) || !gnorm_sq) return 1.0f;
    float coef = k.grad_clip / (sqrtf(*gnorm_sq) + 1e-6f);
    return coef < 1.0f ? coef : 1.0f;
}

__global__ void adamw_kernel(float *master, bf16 *wgt, float *g, float *m, float *v, size_t n,
                             adamw_scalars k, const float *gnorm_sq) {
    size_t i = 8 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    int cnt = run8(i, n);
    if (!cnt) return;
    float clip = clip_factor(k, gnorm_sq);
    float p[8], gr[8], mm[8], vv[8];
    load8(p, master + i, cnt);
    load8(gr, g + i, cnt);
    load8(mm, m + i, cnt);
    load8(vv, v + i, cnt);
#pragma unroll
    for (int e = 0; e < 8; e++) {
        float gi = __fmul_rn(gr[e], clip);
        float mi = __fadd_rn(mm[e], __fmul_rn(k.w1, __fsub_rn(gi, mm[e])));
        float vi = __fadd_rn(__fmul_rn(vv[e], k.b2), __fmul_rn(__fmul_rn(k.w2, gi), gi));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.bc2_sqrt), k.eps);
        p[e] = __fadd_rn(__fmul_rn(p[e], k.decay), __fdiv_rn(__fmul_rn(k.neg_step, mi), denom));
        mm[e] = mi;
        vv[e] = vi;
    }
    store8(master + i, p, cnt);
    store8(m + i, mm, cnt);
    store8(v + i, vv, cnt);
    store8(wgt + i, p, cnt);
    float zero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    store8(g + i, zero, cnt);
}

void cuda_adamw(mlm_backend *be, float *master, void *wgt, float *g, float *m, float *v,
                size_t n, const mlm_adamw_args *a, const float *gnorm_sq) {
    cuda_state *st = cuda_st(be);
    if (n == 0) return;
    double bc1 = 1.0 - pow(a->beta1, a->step), bc2 = 1.0 - pow(a->beta2, a->step);
    adamw_scalars k = {
        (float)(1.0 - (double)a->lr * a->weight_decay), (float)(1.0 - a->beta1), a->beta2,
        (float)(1.0 - a->beta2), (float)(-(a->lr / bc1)), (float)sqrt(bc2), a->eps, a->grad_clip,
    };
    adamw_kernel<<<cdiv(cdiv(n, 8), ADAMW_THREADS), ADAMW_THREADS, 0, st->stream>>>(
        master, (bf16 *)wgt, g, m, v, n, k, gnorm_sq);
    launchCheck();
}
