/*
 * CPU self-attention over a padded micro-batch, forward and backward (twin:
 * src/kernels/attention.cu). Each (sequence, head) pair is independent: OpenMP runs
 * the pairs in parallel, each calling cblas_sgemm (single-threaded, see cpu_gemm)
 * straight on the strided q/k/v columns of qkv (leading dimension 3d, no copies).
 * Keys j >= lengths[b] get probability exactly 0; every query row, padded or not,
 * attends over the valid keys, as HF's additive mask does. saved holds the softmax
 * probabilities before dropout, (B, H, S, S); the dropout mask is recomputed from
 * Philox in the backward, never stored.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "mlm/log.h"
#include "common.h"
#include "vecmath.h"

size_t cpu_attention_saved_bytes(mlm_backend *be, int B, int S, int H) {
    return (size_t)B * H * S * S * sizeof(float);
}

static void check_lengths(const int32_t *lengths, int B, int S) {
    for (int b = 0; b < B; b++)
        if (lengths[b] < 1 || lengths[b] > S)
            mlm_die(MLM_EXIT_INPUT, "attention: sequence %d has length %d, outside [1, %d]", b,
                    (int)lengths[b], S);
}

/* p[0..L) = softmax(p[0..L)), p[L..S) = 0. */
CPU_VECTOR_CLONES static void softmax_row(float *p, int L, int S) {
    float mx = p[0];
    #pragma omp simd reduction(max : mx)
    for (int j = 1; j < L; j++) mx = p[j] > mx ? p[j] : mx;
    double sum = 0;
    #pragma omp simd reduction(+ : sum)
    for (int j = 0; j < L; j++) {
        p[j] = cpu_expf(p[j] - mx);
        sum += p[j];
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < L; j++) p[j] *= inv;
    memset(p + L, 0, (size_t)(S - L) * sizeof(float));
}

/* One (sequence b, head h): qkv, out point at row 0 of sequence b. */
static void attn_fwd_head(float *out, float *P, float *Pd, const float *qkv, int b, int h, int L,
                          int S, int dh, int d, const mlm_dropout *drop) {
    const float *q = qkv + h * dh, *k = q + d, *v = q + 2 * d;  // (S, dh), row stride 3d
    float alpha = 1.0f / sqrtf((float)dh);
    // P (S, L) = q k^T / sqrt(dh), row stride S
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, L, dh, alpha, q, 3 * d, k, 3 * d,
                0.0f, P, S);
    for (int i = 0; i < S; i++) softmax_row(P + (size_t)i * S, L, S);
    const float *Pv = P;                                          // probabilities applied to v
    if (cpu_dropout_on(drop)) {
        for (int i = 0; i < S; i++) {
            memcpy(Pd + (size_t)i * S, P + (size_t)i * S, (size_t)L * sizeof(float));
            cpu_dropout_apply(drop, b, (uint32_t)((h * S + i) * S), Pd + (size_t)i * S, L);
        }
        Pv = Pd;
    }
    // out (S, dh) = Pv (S, L) v (L, dh), row stride d
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, dh, L, 1.0f, Pv, S, v, 3 * d,
                0.0f, out + h * dh, d);
}

void cpu_attention_fwd(mlm_backend *be, void *out_, void *saved, const void *qkv_,
                       const int32_t *lengths, int B, int S, int H, int dh,
                       const mlm_dropout *drop) {
    float *out = out_, *P = saved;                                // (N, d) (B, H, S, S)
    const float *qkv = qkv_;                                      // (N, 3d)
    int d = H * dh;
    check_lengths(lengths, B, S);
    float *scratch = cpu_scratch(be, (size_t)omp_get_max_threads() * S * S);
    #pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        float *Pd = scratch + (size_t)omp_get_thread_num() * S * S;  // (S, S) dropped P
        attn_fwd_head(out + (size_t)b * S * d, P + (size_t)bh * S * S, Pd,
                      qkv + (size_t)b * S * 3 * d, b, h, lengths[b], S, dh, d, drop);
    }
}

/* dp = p * (dp - dp . p) over one row of L: softmax backward. */
CPU_VECTOR_CLONES static void softmax_bwd_row(float *dp, const float *p, int L) {
    double dot = 0;
    #pragma omp simd reduction(+ : dot)
    for (int j = 0; j < L; j++) dot += dp[j] * p[j];
    for (int j = 0; j < L; j++) dp[j] = p[j] * (dp[j] - (float)dot);
}

/* Softmax and dropout backward of one head, row by row: dS enters as dPd (S, L), the
 * gradient of the dropped probabilities, and leaves as the gradient of the scores;
 * Pd (S, L) receives the dropped probabilities. keep is (S) scratch. */
static void attn_softmax_bwd(float *dS, float *Pd, float *keep, const float *P, int b, int h,
                             int L, int S, const mlm_dropout *drop) {
    for (int i = 0; i < S; i++) {
        float *dp = dS + (size_t)i * S, *pd = Pd + (size_t)i * S;
        const float *p = P + (size_t)i * S;
        if (cpu_dropout_on(drop)) {
            for (int j = 0; j < L; j++) keep[j] = 1.0f;
            cpu_dropout_apply(drop, b, (uint32_t)((h * S + i) * S), keep, L);
            for (int j = 0; j < L; j++) {
                pd[j] = p[j] * keep[j];
                dp[j] *= keep[j];
            }
        }
        softmax_bwd_row(dp, p, L);
    }
}

/* One (sequence b, head h): dqkv, dout, qkv point at row 0 of sequence b. */
static void attn_bwd_head(float *dqkv, const float *dout, const float *qkv, const float *P,
                          float *scratch, int b, int h, int L, int S, int dh, int d,
                          const mlm_dropout *drop) {
    const float *q = qkv + h * dh, *k = q + d, *v = q + 2 * d;  // (S, dh), row stride 3d
    float *dq = dqkv + h * dh, *dk = dq + d, *dv = dq + 2 * d;    // (S, dh), row stride 3d
    const float *dy = dout + h * dh;                              // (S, dh), row stride d
    float *dS = scratch, *Pd = dS + (size_t)S * S, *keep = Pd + (size_t)S * S;
    float alpha = 1.0f / sqrtf((float)dh);
    // dS (S, L) = dy v^T, the gradient of the dropped probabilities
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, L, dh, 1.0f, dy, d, v, 3 * d,
                0.0f, dS, S);
    attn_softmax_bwd(dS, Pd, keep, P, b, h, L, S, drop);
    const float *Pv = cpu_dropout_on(drop) ? Pd : P;
    // dv (L, dh) = Pv^T (L, S) dy (S, dh)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, S, 1.0f, Pv, S, dy, d,
                0.0f, dv, 3 * d);
    // dq (S, dh) = dS (S, L) k (L, dh) / sqrt(dh)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, dh, L, alpha, dS, S, k, 3 * d,
                0.0f, dq, 3 * d);
    // dk (L, dh) = dS^T (L, S) q (S, dh) / sqrt(dh)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, S, alpha, dS, S, q, 3 * d,
                0.0f, dk, 3 * d);
    for (int j = L; j < S; j++) {                                 // padded keys get no gradient
        memset(dk + (size_t)j * 3 * d, 0, (size_t)dh * sizeof(float));
        memset(dv + (size_t)j * 3 * d, 0, (size_t)dh * sizeof(float));
    }
}

void cpu_attention_bwd(mlm_backend *be, void *dqkv_, const void *dout_, const void *qkv_,
                       const void *out, const void *saved, const int32_t *lengths,
                       int B, int S, int H, int dh, const mlm_dropout *drop) {
    float *dqkv = dqkv_;                                          // (N, 3d)
    const float *dout = dout_, *qkv = qkv_, *P = saved;           // (N, d) (N, 3d) (B, H, S, S)
    int d = H * dh;
    check_lengths(lengths, B, S);
    size_t per_thread = 2 * (size_t)S * S + S;                    // dS, Pd (S, S), keep (S)
    float *scratch = cpu_scratch(be, (size_t)omp_get_max_threads() * per_thread);
    #pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        size_t row0 = (size_t)b * S;
        attn_bwd_head(dqkv + row0 * 3 * d, dout + row0 * d, qkv + row0 * 3 * d,
                      P + (size_t)bh * S * S, scratch + (size_t)omp_get_thread_num() * per_thread,
                      b, h, lengths[b], S, dh, d, drop);
    }
}
