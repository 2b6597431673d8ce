/*
 * The MLM head's ops on the GPU (twin: src/host/cpu/mlm_head.c): gather of the M
 * masked rows of the encoder output, scatter of their gradient back (zeros
 * elsewhere), the tied decoder (cuda_gemm, bf16 logits, the bias in the epilogue),
 * and the fused softmax cross-entropy in place on the logits. Logits rows are ldl
 * columns apart (V rounded up to logits_align = 128), so every decoder GEMM sees
 * 256-byte aligned leading dimensions; the columns past V are never touched.
 * Cross-entropy: one block per row, each thread holding its 8-column runs in
 * registers; one sweep keeps a running max, the sum of exp rescaled to it and the
 * first index of the max, then the held values become scale * (softmax -
 * onehot(label)) in bf16: the row is read once and written once. Probabilities are
 * never stored. Row losses and hits go to scratch and one block adds them in row
 * order (in double), so the statistics are deterministic. The bias gradient sums
 * the bf16 gradient, as the GEMMs see it, in the weight-gradient GEMM's epilogue
 * (cuda_weight_grads).
 * Label -1 marks a padding row (row index -1 too): zero gradient, no loss, no hit;
 * gather writes zeros for it and scatter skips it. Any other label outside [0, V)
 * makes the row's loss NaN (the CPU backend exits instead; the device cannot
 * without a host sync). The loss scale comes from live when it is given, so a
 * recorded graph serves every micro-batch.
 */
#include <limits.h>
#include <math.h>

#include "common.cuh"

/* CE_HELD_RUNS: the most 8-column runs a cross-entropy thread holds in registers
 * (predict.c mirrors it and CE_THREADS). */
enum { ROWS_THREADS = 256, CE_THREADS = 512, CE_HELD_RUNS = 16, STATS_THREADS = 256 };

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

/* ---- tied decoder: logits (M, V of ldl) = in (M, d) W^T (V, d) + b, bf16 ---- */

void cuda_decoder_fwd(mlm_backend *be, void *logits, const void *in, const void *W, const void *b, int M, int d,
                      int V, int ldl) {
    cuda_gemm(cuda_st(be), {.M = M, .N = V, .K = d, .A = in, .lda = d, .B = W, .ldb = d, .tb = true, .C = logits,
                            .ldc = ldl, .bias = b});
}

void cuda_decoder_bwd(mlm_backend *be, void *din, float *dW, float *db, const void *dlogits, const void *in,
                      const void *W, int M, int d, int V, int ldl) {
    cuda_state *st = cuda_st(be);
    cuda_weight_grads(st, dW, db, dlogits, ldl, in, M, d, V);   // dW (V, d) += g^T (V, M) in (M, d), db
    // din (M, d) = g (M, V) W (V, d)
    cuda_gemm(st, {.M = M, .N = d, .K = V, .A = dlogits, .lda = ldl, .B = W, .ldb = d, .C = din, .ldc = d});
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

/* 8 bf16 logits from p, the n < 8 of a short run padded with zeros. */
__device__ __forceinline__ uint4 load_run(const bf16 *p, int n) {
    if (n == 8) return *reinterpret_cast<const uint4 *>(p);
    uint4 raw = make_uint4(0, 0, 0, 0);
    bf16 *h = reinterpret_cast<bf16 *>(&raw);
    for (int k = 0; k < n; k++) h[k] = p[k];
    return raw;
}

/* Row r of logits (V of ld, bf16): row_stats[r] = (loss, label == argmax); the row
 * becomes scale * (softmax - onehot(label)). Thread t owns the 8-column runs t,
 * t + blockDim.x, ...; with R > 0 it holds its R runs in registers (R 8 blockDim.x >=
 * V), so the row is read once and written once. R = 0 is for wider rows: it reads
 * them again for the gradient. */
template <int R>
__global__ void cross_entropy_kernel(bf16 *logits, float2 *row_stats, const int32_t *labels, int V, size_t ld,
                                     float scale, const mlm_live *live) {
    int r = blockIdx.x, label = labels[r];
    bf16 *x = logits + (size_t)r * ld;
    if (live) scale = live->loss_scale;
    if (label == -1) {   // padding row
        float zero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int c = 8 * threadIdx.x; c < V; c += 8 * blockDim.x) store8(x + c, zero, min(8, V - c));
        if (threadIdx.x == 0) row_stats[r] = make_float2(0.0f, 0.0f);
        return;
    }
    bool valid = label >= 0 && label < V;
    float x_label = valid ? __bfloat162float(x[label]) : NAN;   // before the barrier: the row is rewritten after
    softmax_run run = {-INFINITY, 0.0f, INT_MAX};
    uint4 held[R > 0 ? R : 1];
    for (int k = 0; R > 0 ? k < R : 8 * (int)(threadIdx.x + k * blockDim.x) < V; k++) {
        int c = 8 * (threadIdx.x + k * blockDim.x), n = c < V ? min(8, V - c) : 0;
        uint4 raw = load_run(x + c, n);
        if (R > 0) held[R > 0 ? k : 0] = raw;
        float v[8];
        unpack8(v, raw);
        for (int j = 0; j < n; j++) {
            if (v[j] > run.max) {
                run.sum = run.sum * expf(run.max - v[j]) + 1.0f;
                run.max = v[j];
                run.argmax = c + j;
            } else {
                run.sum += expf(v[j] - run.max);
            }
        }
    }
    run = block_merge(run);   // its barrier also orders every read of the row before the writes
    float inv = 1.0f / run.sum;
    for (int k = 0; R > 0 ? k < R : 8 * (int)(threadIdx.x + k * blockDim.x) < V; k++) {
        int c = 8 * (threadIdx.x + k * blockDim.x), n = c < V ? min(8, V - c) : 0;
        if (!n) continue;
        float v[8];
        unpack8(v, R > 0 ? held[R > 0 ? k : 0] : load_run(x + c, n));
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float p = expf(v[j] - run.max) * inv;
            v[j] = scale * (c + j == label ? p - 1.0f : p);
        }
        store8(x + c, v, n);
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

struct ce_args {
    bf16 *logits;
    float2 *row_stats;
    const int32_t *labels;
    int V;
    size_t ld;
    float scale;
    const mlm_live *live;
};

template <int R> static void ce_launch(cuda_state *st, int M, const ce_args &a) {
    cross_entropy_kernel<R><<<M, CE_THREADS, 0, st->stream>>>(a.logits, a.row_stats, a.labels, a.V, a.ld, a.scale,
                                                              a.live);
}

void cuda_cross_entropy(mlm_backend *be, void *logits, const int32_t *labels, int M, int V, int ldl,
                        float scale, const mlm_live *live, float *stats) {
    cuda_state *st = cuda_st(be);
    if (M == 0) return;
    if (ldl % 8)
        mlm_die(MLM_EXIT_RUNTIME, "cuda backend: logits rows of %d columns are not a multiple of 8", ldl);
    size_t bytes = (size_t)M * sizeof(float2);
    void *row_stats;   // f32 (M, 2) loss, hit
    cuda_scratch_slices(st, 1, &bytes, &row_stats);
    int per_thread = (int)cdiv(cdiv(V, 8), CE_THREADS);   // 8-column runs a thread holds
    ce_args a = {(bf16 *)logits, (float2 *)row_stats, labels, V, (size_t)ldl, scale, live};
    if (per_thread <= 1) ce_launch<1>(st, M, a);
    else if (per_thread <= 2) ce_launch<2>(st, M, a);
    else if (per_thread <= 4) ce_launch<4>(st, M, a);
    else if (per_thread <= 8) ce_launch<8>(st, M, a);
    else if (per_thread <= CE_HELD_RUNS) ce_launch<CE_HELD_RUNS>(st, M, a);
    else ce_launch<0>(st, M, a);
    launchCheck();
    ce_stats_kernel<<<1, STATS_THREADS, 0, st->stream>>>(stats, (const float2 *)row_stats, M);
    launchCheck();
}
