/*
 * Embeddings on the GPU (twin: src/host/cpu/embedding.c): out = dropout(LayerNorm(
 * wte[ids] + wpe[s] + wtt[types])), one block per row over the row steps of
 * layernorm.cuh, and the backward. The gradients of the tables come from dsum (N, d),
 * the gradient of the word + position + token-type sum, deterministically and
 * without float atomics:
 *
 *   position   dwpe[s] += sum_b dsum[b, s]: a column sum of dsum seen as (B, S*d).
 *   word       dwte[ids[r]] += dsum[r]: a segmented sum. Rows are sorted by id with
 *              cub's stable radix sort, so each id's rows form one run in row order.
 *              The sorted run is cut into chunks of SEG_CHUNK; a block sums each run
 *              piece of its chunk in order and adds the pieces that lie wholly inside
 *              to the table (their id appears nowhere else). A run that crosses chunk
 *              edges ([PAD] and [MASK] are frequent) is owned by the chunk where it
 *              starts, which adds its own piece and then the pieces of the chunks it
 *              continues into, in order.
 *   token type dwtt[types[r]] += dsum[r]: the same segmented sum, or with types NULL
 *              (all type 0) a column sum into row 0.
 * The sort and the chunking depend on the ids alone, so every run adds the same
 * numbers in the same order.
 */
#include <cub/device/device_radix_sort.cuh>

#include "common.cuh"
#include "dropout.cuh"
#include "layernorm.cuh"
#include "reduce.cuh"

enum { SEG_CHUNK = 128, SEG_THREADS = 128, KEY_BITS = 31 };   // ids are non-negative int32

/* The segmented sum's buffers, carved from base (sizes only when base is NULL). */
struct seg_buffers {
    uint32_t *keys;       // (N) sorted ids
    int32_t *order;       // (N) 0, 1, .. N-1: the rows before sorting
    int32_t *rows;        // (N) rows in sorted order
    float *first, *last;  // (chunks, d) sums of a chunk's first / last run piece
    void *sort_tmp;       // cub's temporary storage
    size_t sort_tmp_bytes, total;
};

static seg_buffers seg_layout(char *base, int N, int d) {
    seg_buffers b = {};
    size_t chunks = cdiv(N, SEG_CHUNK), used = 0;
    cudaCheck(cub::DeviceRadixSort::SortPairs(nullptr, b.sort_tmp_bytes, (const uint32_t *)nullptr,
                                              (uint32_t *)nullptr, (const int32_t *)nullptr,
                                              (int32_t *)nullptr, N, 0, KEY_BITS));
    auto take = [&](size_t bytes) {
        void *p = base ? base + used : nullptr;
        used += (bytes + 255) / 256 * 256;
        return p;
    };
    b.keys = (uint32_t *)take((size_t)N * sizeof(uint32_t));
    b.order = (int32_t *)take((size_t)N * sizeof(int32_t));
    b.rows = (int32_t *)take((size_t)N * sizeof(int32_t));
    b.first = (float *)take(chunks * d * sizeof(float));
    b.last = (float *)take(chunks * d * sizeof(float));
    b.sort_tmp = take(b.sort_tmp_bytes);
    b.total = used;
    return b;
}

static size_t embedding_grads_scratch(int N, int d) { return seg_layout(nullptr, N, d).total; }

__global__ void iota_kernel(int32_t *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = i;
}

/* Block (chunk, column block): the run pieces of one chunk of the sorted rows. */
__global__ void seg_pieces_kernel(float *table, float *first, float *last, const uint32_t *keys,
                                  const int32_t *rows, const float *src, int N, int d) {
    __shared__ uint32_t key[SEG_CHUNK];
    __shared__ int32_t row[SEG_CHUNK];
    int chunk = blockIdx.x, lo = chunk * SEG_CHUNK, len = min(N - lo, (int)SEG_CHUNK);
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        key[i] = keys[lo + i];
        row[i] = rows[lo + i];
    }
    __syncthreads();
    if (c >= d) return;
    uint32_t before = lo > 0 ? keys[lo - 1] : UINT32_MAX, after = lo + len < N ? keys[lo + len] : UINT32_MAX;
    float acc = 0.0f;
    int start = 0;   // first position of the current piece
    for (int i = 0; i < len; i++) {
        acc += src[(size_t)row[i] * d + c];
        uint32_t k = key[i];
        if (i + 1 < len && key[i + 1] == k) continue;
        if (start == 0 && before == k) first[(size_t)chunk * d + c] = acc;        // continues a run
        else if (i + 1 == len && after == k) last[(size_t)chunk * d + c] = acc;   // starts a crossing run
        else table[(size_t)k * d + c] += acc;                                     // a whole run
        acc = 0.0f;
        start = i + 1;
    }
}

/* Block (chunk, column block): a run that starts in this chunk and crosses its end. */
__global__ void seg_spans_kernel(float *table, const float *first, const float *last, const uint32_t *keys,
                                 int N, int d) {
    int chunk = blockIdx.x, lo = chunk * SEG_CHUNK, hi = min(N, lo + (int)SEG_CHUNK);
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= d || hi == N) return;
    uint32_t k = keys[hi - 1];
    if (keys[hi] != k) return;                                   // no run crosses the end
    if (lo > 0 && keys[lo] == k && keys[lo - 1] == k) return;    // it started in an earlier chunk
    float acc = last[(size_t)chunk * d + c];
    for (int next = chunk + 1;; next++) {
        acc += first[(size_t)next * d + c];
        int end = min(N, (next + 1) * (int)SEG_CHUNK);
        if (end == N || keys[end] != k) break;
    }
    table[(size_t)k * d + c] += acc;
}

/* table[keys_in[r]] += src[r] for r < N, src (N, d). */
static void segment_add(cuda_state *st, float *table, const int32_t *keys_in, const float *src, int N, int d,
                        const seg_buffers &b) {
    iota_kernel<<<cdiv(N, 256), 256, 0, st->stream>>>(b.order, N);
    launchCheck();
    size_t tmp_bytes = b.sort_tmp_bytes;
    cudaCheck(cub::DeviceRadixSort::SortPairs(b.sort_tmp, tmp_bytes, (const uint32_t *)keys_in, b.keys, b.order,
                                              b.rows, N, 0, KEY_BITS, st->stream));
    dim3 grid(cdiv(N, SEG_CHUNK), cdiv(d, SEG_THREADS));
    seg_pieces_kernel<<<grid, SEG_THREADS, 0, st->stream>>>(table, b.first, b.last, b.keys, b.rows, src, N, d);
    launchCheck();
    seg_spans_kernel<<<grid, SEG_THREADS, 0, st->stream>>>(table, b.first, b.last, b.keys, N, d);
    launchCheck();
}

/* dwte[ids[r]] += dsum[r], dwpe[r % S] += dsum[r], dwtt[types[r]] += dsum[r] for the
 * N = B*S rows of dsum (N, d); scratch holds embedding_grads_scratch(N, d) bytes. */
static void embedding_grads(cuda_state *st, float *dwte, float *dwpe, float *dwtt, const float *dsum,
                            const int32_t *ids, const int32_t *types, int B, int S, int d, void *scratch) {
    int N = B * S;
    seg_buffers b = seg_layout((char *)scratch, N, d);
    segment_add(st, dwte, ids, dsum, N, d, b);
    colsum(st, dwpe, nullptr, colsum_of<float>{dsum, S * d}, B, S * d);
    if (types) segment_add(st, dwtt, types, dsum, N, d, b);
    else colsum(st, dwtt, nullptr, colsum_of<float>{dsum, d}, N, d);
}

/* ---- the ops ---- */

__global__ void embed_fwd_kernel(bf16 *out, bf16 *sum, float *mean, float *rstd, const int32_t *ids,
                                 const int32_t *types, const bf16 *wte, const bf16 *wpe, const bf16 *wtt,
                                 const bf16 *ln_w, const bf16 *ln_b, int S, int d, float eps, mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    __shared__ float shared[32];
    int r = blockIdx.x, s = r % S, c0 = 8 * threadIdx.x, n = cols8(c0, d);
    size_t at = (size_t)r * d + c0;
    float tok[8], pos[8], typ[8], v[8], mu, rs;
    load8(tok, wte + (size_t)ids[r] * d + c0, n);
    load8(pos, wpe + (size_t)s * d + c0, n);
    load8(typ, wtt + (size_t)(types ? types[r] : 0) * d + c0, n);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = tok[k] + pos[k] + typ[k];
    save_and_normalize(v, sum + at, n, c0, d, eps, ln_w, ln_b, mu, rs, shared);
    dropout8(v, drop, drop.seq_base + (uint32_t)(r / S), (uint32_t)(s * d + c0));
    store8(out + at, v, n);
    store_stats(mean, rstd, r, mu, rs);
}

void cuda_embed_fwd(mlm_backend *be, void *out, void *sum, float *mean, float *rstd,
                    const int32_t *ids, const int32_t *types, const void *wte, const void *wpe,
                    const void *wtt, const void *ln_w, const void *ln_b, int B, int S, int d,
                    float eps, const mlm_dropout *drop) {
    cuda_state *st = cuda_st(be);
    if (B * S == 0) return;
    embed_fwd_kernel<<<B * S, row_threads(d), 0, st->stream>>>(
        (bf16 *)out, (bf16 *)sum, mean, rstd, ids, types, (const bf16 *)wte, (const bf16 *)wpe,
        (const bf16 *)wtt, (const bf16 *)ln_w, (const bf16 *)ln_b, S, d, eps, dropout_arg(drop));
    launchCheck();
}

/* gd = dropout(dout), the gradient of the LayerNorm output; dsum = its LayerNorm
 * backward, the gradient of the embedding sum. Both fp32 (N, d). */
__global__ void embed_bwd_kernel(float *gd, float *dsum, const bf16 *dout, const bf16 *sum, const float *mean,
                                 const float *rstd, const bf16 *ln_w, int S, int d, mlm_dropout drop_arg) {
    const mlm_dropout drop = dropout_live(drop_arg);
    __shared__ float shared[32];
    int r = blockIdx.x, s = r % S, c0 = 8 * threadIdx.x, n = cols8(c0, d);
    size_t at = (size_t)r * d + c0;
    float g[8], x[8], dx[8];
    load8(g, dout + at, n);
    dropout8(g, drop, drop.seq_base + (uint32_t)(r / S), (uint32_t)(s * d + c0));
    store8(gd + at, g, n);
    load8(x, sum + at, n);
    ln_row_bwd(dx, g, x, n, c0, d, mean[r], rstd[r], ln_w, shared);
    store8(dsum + at, dx, n);
}

void cuda_embed_bwd(mlm_backend *be, float *dwte, float *dwpe, float *dwtt, float *dln_w,
                    float *dln_b, const void *dout, const void *sum, const float *mean,
                    const float *rstd, const int32_t *ids, const int32_t *types, const void *ln_w,
                    int B, int S, int d, const mlm_dropout *drop) {
    cuda_state *st = cuda_st(be);
    int N = B * S;
    if (N == 0) return;
    size_t rows = (size_t)N * d * sizeof(float);
    size_t bytes[3] = {rows, rows, embedding_grads_scratch(N, d)};
    void *p[3];   // gd f32 (N, d), dsum f32 (N, d), the table gradients' scratch
    cuda_scratch_slices(st, 3, bytes, p);
    float *gd = (float *)p[0], *dsum = (float *)p[1];
    embed_bwd_kernel<<<N, row_threads(d), 0, st->stream>>>(gd, dsum, (const bf16 *)dout, (const bf16 *)sum,
                                                           mean, rstd, (const bf16 *)ln_w, S, d,
                                                           dropout_arg(drop));
    launchCheck();
    colsum(st, dln_w, dln_b, ln_param_grads<float>{gd, (const bf16 *)sum, mean, rstd, d}, N, d);
    embedding_grads(st, dwte, dwpe, dwtt, dsum, ids, types, B, S, d, p[2]);
}
