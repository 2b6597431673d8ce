/*
 * The MLM head's ops on the GPU (twin: src/host/cpu/mlm_head.c): gather of the M
 * masked rows of the encoder output, scatter of their gradient back (zeros
 * elsewhere), the tied decoder (cuda_gemm with fp32 logits, the bias in the
 * epilogue), and the fused softmax cross-entropy over fp32 logits. One block per logits row: a single
 * pass keeps a running max, the sum of exp rescaled to it, and the first index of
 * the max; a second pass overwrites the row with scale * (softmax - onehot(label)).
 * Probabilities are never stored. Row losses and hits go to scratch and one block
 * adds them in row order (in double), so the statistics are deterministic.
 * Label -1 marks a padding row (row index -1 too): zero gradient, no loss, no hit;
 * gather writes zeros for it and scatter skips it. Any other label outside [0, V)
 * makes the row's loss NaN (the CPU backend exits instead; the device cannot
 * without a host sync). The loss scale comes from live when it is given, so a
 * recorded graph serves every micro-batch.
 */
#include <limits.h>
#include <math.h>

#include "common.cuh"
#include "reduce.cuh"

enum { ROWS_THREADS = 256, CE_THREADS = 512, STATS_THREADS = 256 };

/* ---- masked rows: 8 columns per thread ---- */

/* dst row (scatter ? rows[i] : i) = src row (scatter ? i : rows[i]), i < M; row
 * -1 (padding) gathers zeros and scatters nothing. */
__global__ void copy_rows_kernel(bf16 *dst, const bf16 *src, const int32_t *rows, int M, int d, bool scatter) {
    size_t t = 8 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= (size_t)M * d) return;
    int i = (int)(t / d), c = (int)(t % d), n = min(8, d - c), row = rows[i];
    if (row < 0 && scatter) return;
    float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (row >= 0) load8(v, src + (size_t)(scatter ? i : row) * d + c, n);
    store8(dst + (size_t)(scatter ? row : i) * d + c, v, n);
}

/* Threads cover each row in runs of 8 columns, the last run of a row shorter. */
static void copy_rows(cuda_state *st, bf16 *dst, const bf16 *src, const int32_t *rows, int M, int d, bool scatter) {
    if (M == 0) return;
    if (d % 8) mlm_die(MLM_EXIT_INPUT, "cuda backend: hidden size %d must be a multiple of 8", d);
    copy_rows_kernel<<<cdiv(cdiv((size_t)M * d, 8), ROWS_THREADS), ROWS_THREADS, 0, st->stream>>>(dst, src, rows, M,
                                                                                                 d, scatter);
    launchCheck();
}

void cuda_gather_rows(mlm_backend *be, void *out, const void *in, const int32_t *rows, int M, int d) {
    copy_rows(cuda_st(be), (bf16 *)out, (const bf16 *)in, rows, M, d, false);
}

void cuda_scatter_rows(mlm_backend *be, void *dfull, const void *drows, const int32_t *rows,
                       int M, int N, int d) {
    cuda_state *st = cuda_st(be);
    cudaCheck(cudaMemsetAsync(dfull, 0, (size_t)N * d * sizeof(bf16), st->stream));
    copy_rows(st, (bf16 *)dfull, (const bf16 *)drows, rows, M, d, true);
}

/* ---- tied decoder: logits (M, V) = in (M, d) W^T (V, d) + b, fp32 out ---- */

void cuda_decoder_fwd(mlm_backend *be, float *logits, const void *in, const void *W,
                      const void *b, int M, int d, int V) {
    cuda_state *st = cuda_st(be);
    size_t bytes = (size_t)V * sizeof(float);
    void *bias;   // f32 (V): the BIAS epilogue takes the bias in D's type
    cuda_scratch_slices(st, 1, &bytes, &bias);
    convert_bf16_to_f32(st, (float *)bias, (const bf16 *)b, V);
    cuda_gemm(st, {.M = M, .N = V, .K = d, .A = in, .lda = d, .B = W, .ldb = d, .tb = true, .C = logits,
                   .ldc = V, .ctype = CUDA_R_32F, .bias = bias});
}

void cuda_decoder_bwd(mlm_backend *be, void *din, float *dW, float *db, const float *dlogits,
                      const void *in, const void *W, int M, int d, int V) {
    cuda_state *st = cuda_st(be);
    size_t bytes = (size_t)M * V * sizeof(bf16);
    void *g;   // bf16 (M, V): dlogits as a tensor-core operand
    cuda_scratch_slices(st, 1, &bytes, &g);
    convert_f32_to_bf16(st, (bf16 *)g, dlogits, (size_t)M * V);
    // dW (V, d) += g^T (V, M) in (M, d)
    cuda_gemm(st, {.M = V, .N = d, .K = M, .A = g, .lda = V, .ta = true, .B = in, .ldb = d, .C = dW,
                   .ldc = d, .ctype = CUDA_R_32F, .beta = 1.0f});
    colsum(st, db, nullptr, colsum_of<float>{dlogits, V}, M, V);
    // din (M, d) = g (M, V) W (V, d)
    cuda_gemm(st, {.M = M, .N = d, .K = V, .A = g, .lda = V, .B = W, .ldb = d, .C = din, .ldc = d});
}

/* ---- fused softmax cross-entropy ---- */

/* Running softmax statistics of a set of logits: max, sum of exp(x - max), and
 * the first index holding the max. */
struct softmax_run {
    float max, sum;
    int argmax;
};

__device__ __forceinline__ softmax_run merge(softmax_run a, softmax_run b) {
    softmax_run r;
    r.max = fmaxf(a.max, b.max);
    if (r.max == -INFINITY) return a;   // both empty
    r.sum = a.sum * expf(a.max - r.max) + b.sum * expf(b.max - r.max);
    r.argmax = a.max > b.max ? a.argmax : b.max > a.max ? b.argmax : min(a.argmax, b.argmax);
    return r;
}

__device__ __forceinline__ softmax_run shfl_xor(softmax_run v, int o) {
    v.max = __shfl_xor_sync(0xffffffffu, v.max, o);
    v.sum = __shfl_xor_sync(0xffffffffu, v.sum, o);
    v.argmax = __shfl_xor_sync(0xffffffffu, v.argmax, o);
    return v;
}

/* The block's merged statistics, the same on every thread (fixed tree). */
__device__ softmax_run block_merge(softmax_run v) {
    __shared__ softmax_run shared[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = merge(v, shfl_xor(v, o));
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? shared[lane] : softmax_run{-INFINITY, 0.0f, INT_MAX};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = merge(v, shfl_xor(v, o));
    return v;
}

/* Row r of logits (V): row_stats[r] = (loss, label == argmax); the row becomes
 * scale * (softmax - onehot(label)). */
__global__ void cross_entropy_kernel(float *logits, float2 *row_stats, const int32_t *labels, int V, float scale,
                                     const mlm_live *live) {
    int r = blockIdx.x, label = labels[r];
    float *x = logits + (size_t)r * V;
    if (live) scale = live->loss_scale;
    if (label == -1) {   // padding row
        for (int j = threadIdx.x; j < V; j += blockDim.x) x[j] = 0.0f;
        if (threadIdx.x == 0) row_stats[r] = make_float2(0.0f, 0.0f);
        return;
    }
    bool valid = label >= 0 && label < V;
    float x_label = valid ? x[label] : NAN;
    softmax_run run = {-INFINITY, 0.0f, INT_MAX};
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float v = x[j];
        if (v > run.max) {
            run.sum = run.sum * expf(run.max - v) + 1.0f;
            run.max = v;
            run.argmax = j;
        } else {
            run.sum += expf(v - run.max);
        }
    }
    run = block_merge(run);   // its barrier also orders the reads of x before the writes
    float inv = 1.0f / run.sum;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float p = expf(x[j] - run.max) * inv;
        x[j] = scale * (j == label ? p - 1.0f : p);
    }
    if (threadIdx.x == 0)
        row_stats[r] = make_float2(logf(run.sum) + run.max - x_label, valid && run.argmax == label ? 1.0f : 0.0f);
}

/* stats[0] += sum of row losses, stats[1] += sum of hits, rows in a fixed order. */
__global__ void ce_stats_kernel(float *stats, const float2 *row_stats, int M) {
    __shared__ double shared[32];
    double loss = 0, hits = 0;
    for (int r = threadIdx.x; r < M; r += blockDim.x) {
        loss += row_stats[r].x;
        hits += row_stats[r].y;
    }
    loss = block_sum(loss, shared);
    hits = block_sum(hits, shared);
    if (threadIdx.x == 0) {
        stats[0] += (float)loss;
        stats[1] += (float)hits;
    }
}

void cuda_cross_entropy(mlm_backend *be, float *logits, const int32_t *labels, int M, int V,
                        float scale, const mlm_live *live, float *stats) {
    cuda_state *st = cuda_st(be);
    if (M == 0) return;
    size_t bytes = (size_t)M * sizeof(float2);
    void *row_stats;   // f32 (M, 2) loss, hit
    cuda_scratch_slices(st, 1, &bytes, &row_stats);
    cross_entropy_kernel<<<M, CE_THREADS, 0, st->stream>>>(logits, (float2 *)row_stats, labels, V, scale,
                                                                    live);
    launchCheck();
    ce_stats_kernel<<<1, STATS_THREADS, 0, st->stream>>>(stats, (const float2 *)row_stats, M);
    launchCheck();
}
