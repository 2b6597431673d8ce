/*
 * CPU linear layers (twin: src/kernels/linear.cu): y = act(x W^T + b) with exact
 * erf GELU, and its backward. Matmuls are cpu_gemm (blocks of C over the OpenMP
 * team); GELU runs as an OpenMP pass over the output rows through the vectorizable
 * vecmath.h.
 */
#include <string.h>

#include "common.h"
#include "vecmath.h"

/* One row: out = gelu(pre). */
CPU_VECTOR_CLONES static void gelu_row(float *out, const float *pre, int n) {
    for (int c = 0; c < n; c++) out[c] = cpu_gelu(pre[c]);
}

/* One row: dout *= gelu'(pre). */
CPU_VECTOR_CLONES static void gelu_bwd_row(float *dout, const float *pre, int n) {
    for (int c = 0; c < n; c++) dout[c] *= cpu_gelu_grad(pre[c]);
}

/* The bias is written into every row first and the matmul accumulates onto it
 * (beta = 1): OpenBLAS then skips its pass that zeroes C for beta = 0. */
void cpu_affine(float *y, int ldy, const float *in, const float *W, const float *b, int N, int I, int O) {
    if (b) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++) memcpy(y + (size_t)r * ldy, b, (size_t)O * sizeof(float));
    }
    cpu_gemm(CblasNoTrans, CblasTrans, N, O, I, 1.0f, in, I, W, I, b ? 1.0f : 0.0f, y, ldy);
}

void cpu_linear_fwd(mlm_backend *be, void *out_, void *pre_, const void *in, const void *W,
                    const void *b, int N, int I, int O, mlm_act act) {
    float *out = out_, *pre = pre_;                               // (N, O)
    float *y = act == MLM_ACT_GELU ? pre : out;                   // (N, O) in W^T + b
    cpu_affine(y, O, in, W, b, N, I, O);
    if (act == MLM_ACT_GELU) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++) gelu_row(out + (size_t)r * O, pre + (size_t)r * O, O);
    }
}

void cpu_linear_grads(float *din, float *dW, float *db, const float *dout, int ldo, const float *in, const float *W,
                      int N, int I, int O, int din_accumulate) {
    // dout (N, O) rows ldo apart, in (N, I), W (O, I), dW (O, I), din (N, I)
    cpu_gemm(CblasTrans, CblasNoTrans, O, I, N, 1.0f, dout, ldo, in, I, 1.0f, dW, I);
    if (db) cpu_colsum_add(db, dout, N, O, ldo);
    if (din)
        cpu_gemm(CblasNoTrans, CblasNoTrans, N, I, O, 1.0f, dout, ldo, W, I,
                 din_accumulate ? 1.0f : 0.0f, din, I);
}

void cpu_linear_bwd(mlm_backend *be, void *din, float *dW, float *db, void *dout_,
                    const void *in, const void *W, const void *pre_, int N, int I, int O,
                    mlm_act act, int din_accumulate) {
    float *dout = dout_;                                          // (N, O)
    const float *pre = pre_;                                      // (N, O)
    if (act == MLM_ACT_GELU) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++) gelu_bwd_row(dout + (size_t)r * O, pre + (size_t)r * O, O);
    }
    cpu_linear_grads(din, dW, db, dout, O, in, W, N, I, O, din_accumulate);
}
