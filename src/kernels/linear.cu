/*
 * Linear layers on the GPU (twin: src/host/cpu/linear.c): out = act(in W^T + b) and
 * its backward, over cuda_gemm (matmul.cu). GELU does not ride in a cuBLASLt
 * epilogue: cuBLASLt's GELU epilogues use the tanh approximation, and HF BERT uses
 * the exact erf form, so linear_fwd writes pre = x W^T + b and a kernel applies erf
 * GELU; the backward multiplies by the exact derivative, in the same pass as the bias
 * gradient when there is one. Other bias gradients come from the weight-gradient
 * GEMM's BGRADB epilogue (cuda_weight_grads), or deterministic column sums
 * (reduce.cuh) where cuBLASLt has no such algorithm. Weight gradients accumulate in
 * fp32 (C fp32, beta 1).
 */
#include <math.h>

#include "common.cuh"
#include "reduce.cuh"

enum { GELU_THREADS = 256 };

/* ---- exact (erf) GELU, 8 elements per thread ---- */

__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

/* d GELU / dx = Phi(x) + x phi(x). */
__device__ __forceinline__ float gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    return cdf + x * expf(-0.5f * x * x) * 0.39894228040143268f;
}

__global__ void gelu_fwd_kernel(bf16 *out, const bf16 *pre, size_t n) {
    size_t i = 8 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    int cnt = run8(i, n);
    if (!cnt) return;
    float v[8];
    load8(v, pre + i, cnt);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = gelu(v[k]);
    store8(out + i, v, cnt);
}

__global__ void gelu_bwd_kernel(bf16 *dout, const bf16 *pre, size_t n) {
    size_t i = 8 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    int cnt = run8(i, n);
    if (!cnt) return;
    float g[8], x[8];
    load8(g, dout + i, cnt);
    load8(x, pre + i, cnt);
#pragma unroll
    for (int k = 0; k < 8; k++) g[k] *= gelu_grad(x[k]);
    store8(dout + i, g, cnt);
}

/* colsum functor that turns g (R, C) into g * gelu'(pre) in place, rounded to
 * bf16 as gelu_bwd_kernel does, and sums the rounded values: the bias gradient of a
 * GELU layer in the pass that makes its input gradient (each element is visited
 * once). */
struct gelu_grad_in_place {
    bf16 *g;
    const bf16 *pre;
    int C;
    __device__ float2 operator()(int r, int c) const {
        size_t i = (size_t)r * C + c;
        bf16 v = __float2bfloat16_rn(__bfloat162float(g[i]) * gelu_grad(__bfloat162float(pre[i])));
        g[i] = v;
        return make_float2(__bfloat162float(v), 0.0f);
    }
};

/* ---- weight and bias gradients ---- */

void cuda_weight_grads(cuda_state *st, float *dW, float *db, const void *g, int ldg, const void *in, int N, int I,
                       int O) {
    gemm_args w = {.M = O, .N = I, .K = N, .A = g, .lda = ldg, .ta = true, .B = in, .ldb = I, .C = dW, .ldc = I,
                   .ctype = CUDA_R_32F, .beta = 1.0f};
    if (db && !st->bgrad_colsum) {   // the epilogue writes the sums; they are added to db after
        w.bgrad = (float *)cuda_partials(st, (size_t)O * sizeof(float));
        if (cuda_gemm_try(st, w)) {
            add_into(st, db, w.bgrad, O);
            return;
        }
        w.bgrad = nullptr;
    }
    cuda_gemm(st, w);
    if (db) colsum(st, db, nullptr, colsum_of<bf16>{(const bf16 *)g, ldg}, N, O);
}

/* ---- linear: out (N, O) = act(in (N, I) W^T (O, I) + b) ---- */

void cuda_linear_fwd(mlm_backend *be, void *out, void *pre, const void *in, const void *W,
                     const void *b, int N, int I, int O, mlm_act act) {
    cuda_state *st = cuda_st(be);
    void *y = act == MLM_ACT_GELU ? pre : out;   // (N, O) in W^T + b
    cuda_gemm(st, {.M = N, .N = O, .K = I, .A = in, .lda = I, .B = W, .ldb = I, .tb = true, .C = y,
                   .ldc = O, .bias = b});
    size_t n = (size_t)N * O;
    if (act != MLM_ACT_GELU || n == 0) return;
    gelu_fwd_kernel<<<cdiv(cdiv(n, 8), GELU_THREADS), GELU_THREADS, 0, st->stream>>>((bf16 *)out,
                                                                                    (const bf16 *)pre, n);
    launchCheck();
}

void cuda_linear_bwd(mlm_backend *be, void *din, float *dW, float *db, void *dout,
                     const void *in, const void *W, const void *pre, int N, int I, int O,
                     mlm_act act, int din_accumulate) {
    cuda_state *st = cuda_st(be);
    size_t n = (size_t)N * O;
    bool gelu = act == MLM_ACT_GELU && n;
    if (gelu && db) {   // dout (N, O) *= gelu'(pre) in place, db += its column sums: one pass
        colsum(st, db, nullptr, gelu_grad_in_place{(bf16 *)dout, (const bf16 *)pre, O}, N, O);
    } else if (gelu) {
        gelu_bwd_kernel<<<cdiv(cdiv(n, 8), GELU_THREADS), GELU_THREADS, 0, st->stream>>>((bf16 *)dout,
                                                                                        (const bf16 *)pre, n);
        launchCheck();
    }
    cuda_weight_grads(st, dW, gelu ? nullptr : db, dout, O, in, N, I, O);
    // din (N, I) = dout (N, O) W (O, I)
    if (din)
        cuda_gemm(st, {.M = N, .N = I, .K = O, .A = dout, .lda = O, .B = W, .ldb = I, .C = din, .ldc = I,
                       .beta = din_accumulate ? 1.0f : 0.0f});
}
