/*
 * Gradients of the embedding tables from dsum (N, d), the gradient of the
 * word + position + token-type sum, deterministically and without float atomics:
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

size_t embedding_grads_scratch(int N, int d) { return seg_layout(nullptr, N, d).total; }

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

void embedding_grads(cuda_state *st, float *dwte, float *dwpe, float *dwtt, const float *dsum,
                     const int32_t *ids, const int32_t *types, int B, int S, int d, void *scratch) {
    int N = B * S;
    seg_buffers b = seg_layout((char *)scratch, N, d);
    segment_add(st, dwte, ids, dsum, N, d, b);
    colsum(st, dwpe, nullptr, colsum_of<float>{dsum, S * d}, B, S * d);
    if (types) segment_add(st, dwtt, types, dsum, N, d, b);
    else colsum(st, dwtt, nullptr, colsum_of<float>{dsum, d}, N, d);
}
