/*
 * The performance model (include/mlm/predict.h): a backend that mirrors the CUDA
 * backend (src/kernels) op by op without running anything. Each op function below
 * lists the launches its CUDA twin makes, with their GEMM or attention FLOPs and the
 * bytes they move, and the scratch buffers it grows; the wrapper's hooks add them up
 * per (op, shape). act and wgt are bf16 (2 bytes) as on CUDA, rows_align is 64.
 * When a kernel in src/kernels changes what it reads or writes, its function here
 * changes with it (tests/test_predict.c holds the counts to hand-computed values).
 */
#include "mlm/predict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/backend_wrap.h"
#include "mlm/log.h"

enum { MAX_LIVE = 4096 };
enum { A = 2, F = 4 };   // bytes of an act/wgt element (bf16) and of an f32 one

/* src/kernels constants the costs depend on */
enum {
    SCRATCH_ALIGN = 256, GROW_ROUND = 1 << 20, LT_WORKSPACE = 32 << 20,   // backend.cu, common.cuh
    COLSUM_CHUNK = 256,                                                   // reduce.cuh
    LN_BWD_ROWS = 32,                                                     // layernorm.cu
    CE_THREADS = 512, CE_HELD_RUNS = 16,                                  // mlm_head.cu
    SUMSQ_PER_BLOCK = 256 * 8, SUMSQ_MAX_BLOCKS = 1024,                   // reduce.cu
    SEG_CHUNK = 128, SORT_PASSES = 4,                                     // embedding.cu: 31-bit keys, 8 bits a pass
    FLASH_MAX_S = 512, SMEM_ALIGN = 256, SMEM_PER_SM = 228 * 1024,        // flash_kernels.cuh
};

mlm_ceilings mlm_ceilings_h100(void) {
    return (mlm_ceilings){.gemm_flops = 427e12, .attn_flops = 787e12 / 2, .device_bw = 3.0e12, .host_bw = 25e9,
                          .copy_s = 10e-6, .launch_s = 2e-6, .device_bytes = 80.0 * (1 << 30)};
}

struct mlm_predict {
    mlm_ceilings c;
    int graphs;
    mlm_op_table t;
    mlm_op_entry *open;   // the op between the hooks' before and after
    struct { uintptr_t at; size_t bytes; } live[MAX_LIVE];
    int nlive;
    uintptr_t next;       // the next address alloc hands out (never dereferenced)
    size_t allocated, peak_allocated, scratch, partials;
};

static mlm_predict *pred(mlm_backend *be) { return be->impl; }

/* ---------------------------------------------------------------- costs */

/* One launch (or copy) of the open op: t = max(flops / rate, bytes / bandwidth). */
static void launch(mlm_predict *p, double flops, double rate, double bytes) {
    if (!p->open) return;   // outside the wrapper: not counted
    mlm_op_cost *e = &p->open->c;
    double t = bytes / p->c.device_bw;
    if (flops > 0 && flops / rate > t) {
        t = flops / rate;
        e->flops_bound_s += t;
    }
    e->flops += flops;
    e->bytes += bytes;
    e->seconds += t + (p->graphs ? 0 : p->c.launch_s);
    e->launches++;
}

/* A memory-bound kernel. */
static void pass(mlm_predict *p, double read, double written) { launch(p, 0, 0, read + written); }

/* A host <-> device copy from pageable memory: it goes through the host link. */
static void copy(mlm_predict *p, double bytes) {
    if (!p->open) return;
    mlm_op_cost *e = &p->open->c;
    e->bytes += bytes;
    e->seconds += p->c.copy_s + bytes / p->c.host_bw;
    e->launches++;
}

/* cuda_gemm (matmul.cu): C (M, N) = op(A) (M, K) op(B) (K, N), bf16 operands, C of
 * c_size bytes, read too when accumulating, a bias of N elements of C's type. */
static void gemm(mlm_predict *p, double M, double N, double K, int c_size, int accumulate, int bias, double batch) {
    double bytes = batch * ((M * K + K * N) * A + M * N * c_size * (accumulate ? 2 : 1)) + (bias ? N * c_size : 0);
    launch(p, 2 * M * N * K * batch, p->c.gemm_flops, bytes);
}

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* cuda_scratch_slices: the scratch buffer holds the sum of the slices, each 256-byte
 * aligned; it grows in whole MiB. */
static void need_scratch(mlm_predict *p, int count, const size_t *bytes) {
    size_t used = 0;
    for (int i = 0; i < count; i++) used += round_up(bytes[i], SCRATCH_ALIGN);
    if (used > p->scratch) p->scratch = round_up(used, GROW_ROUND);
}

static void need_partials(mlm_predict *p, size_t bytes) {
    if (bytes > p->partials) p->partials = round_up(bytes, GROW_ROUND);
}

/* colsum (reduce.cuh) over R rows and C columns: pass one reads what f reads (read),
 * writes what f writes (written) and float2 partials per chunk of 256 rows, pass two
 * adds them into one or two fp32 accumulators. */
static void colsum(mlm_predict *p, double R, double C, double read, double written, int accs) {
    double P = ceil(R / COLSUM_CHUNK);
    need_partials(p, (size_t)(P * C * 8));
    pass(p, read, written + P * C * 8);
    pass(p, P * C * 8, accs * C * F * 2);
}

/* ---------------------------------------------------------------- memory ops */

static void *pred_alloc(mlm_backend *be, size_t bytes, const char *what) {
    mlm_predict *p = pred(be);
    if (p->nlive == MAX_LIVE) mlm_die(MLM_EXIT_RUNTIME, "performance model: more than %d allocations", MAX_LIVE);
    uintptr_t at = p->next;
    p->next += round_up(bytes ? bytes : 1, SCRATCH_ALIGN);
    p->live[p->nlive].at = at;
    p->live[p->nlive++].bytes = bytes;
    p->allocated += bytes;
    if (p->allocated > p->peak_allocated) p->peak_allocated = p->allocated;
    return (void *)at;
}

static void pred_free(mlm_backend *be, void *ptr) {
    mlm_predict *p = pred(be);
    for (int i = 0; i < p->nlive; i++)
        if (p->live[i].at == (uintptr_t)ptr) {
            p->allocated -= p->live[i].bytes;
            p->live[i] = p->live[--p->nlive];
            return;
        }
}

static void pred_upload(mlm_backend *be, void *dst, const void *host_src, size_t bytes) { copy(pred(be), bytes); }
static void pred_download(mlm_backend *be, void *host_dst, const void *src, size_t bytes) { copy(pred(be), bytes); }
static void pred_zero(mlm_backend *be, void *ptr, size_t bytes) { pass(pred(be), 0, bytes); }
static void pred_sync(mlm_backend *be) {}
static void pred_download_start(mlm_backend *be, void *host_dst, const void *src, size_t bytes) {
    copy(pred(be), bytes);
}
static void pred_download_finish(mlm_backend *be) {}

/* What cudaMemGetInfo would say, less the CUDA backend's 512 MiB margin. */
static size_t pred_mem_free(mlm_backend *be) {
    mlm_predict *p = pred(be);
    double used = (double)p->allocated + p->scratch + p->partials + LT_WORKSPACE + 512.0 * (1 << 20);
    return used < p->c.device_bytes ? (size_t)(p->c.device_bytes - used) : 0;
}

static void pred_upload_f32_as_act(mlm_backend *be, void *dst_act, const float *src, size_t n) {
    mlm_predict *p = pred(be);
    size_t staged = n * F;
    need_scratch(p, 1, &staged);
    copy(p, n * F);
    pass(p, n * F, n * A);
}

static void pred_download_act_as_f32(mlm_backend *be, float *dst, const void *src_act, size_t n) {
    mlm_predict *p = pred(be);
    size_t staged = n * F;
    need_scratch(p, 1, &staged);
    pass(p, n * A, n * F);
    copy(p, n * F);
}

static void pred_copy_master_to_wgt(mlm_backend *be, void *dst_wgt, const float *master, size_t n) {
    pass(pred(be), n * F, n * A);
}

/* ---------------------------------------------------------------- embeddings (embedding.cu) */

static void pred_embed_fwd(mlm_backend *be, void *out, void *sum, float *mean, float *rstd, const int32_t *ids,
                           const int32_t *types, const void *wte, const void *wpe, const void *wtt, const void *ln_w,
                           const void *ln_b, int B, int S, int d, float eps, const mlm_dropout *drop) {
    double N = (double)B * S;
    // ids, the three table rows of every token, gamma and beta; out, the saved sum, mean and rstd
    pass(pred(be), N * 4 + 3 * N * d * A + 2.0 * d * A, 2 * N * d * A + 2 * N * F);
}

static void pred_embed_bwd(mlm_backend *be, float *dwte, float *dwpe, float *dwtt, float *dln_w, float *dln_b,
                           const void *dout, const void *sum, const float *mean, const float *rstd,
                           const int32_t *ids, const int32_t *types, const void *ln_w, int B, int S, int d,
                           const mlm_dropout *drop) {
    mlm_predict *p = pred(be);
    double N = (double)B * S, chunks = ceil(N / SEG_CHUNK);
    double unique = N;   // table rows a segmented sum touches: at most one per token (an upper bound)
    size_t rows = (size_t)N * d * F, sort_tmp = 4096 + (size_t)N * 8;   // CUB's storage: an estimate
    size_t seg = round_up((size_t)N * 4, SCRATCH_ALIGN) * 3 + 2 * round_up((size_t)(chunks * d * F), SCRATCH_ALIGN) +
                 round_up(sort_tmp, SCRATCH_ALIGN);
    size_t slices[3] = {rows, rows, seg};
    need_scratch(p, 3, slices);
    // dout, the saved sum and statistics, gamma -> the LayerNorm-output gradient and dsum, fp32
    pass(p, 2 * N * d * A + 2 * N * F + d * A, 2 * N * d * F);
    colsum(p, N, d, N * d * F + N * d * A + 2 * N * F, 0, 2);   // gamma, beta
    int tables = types ? 2 : 1;                                // word (and type) ids: segmented sums
    for (int t = 0; t < tables; t++) {
        pass(p, 0, N * 4);                                     // iota
        pass(p, N * 4, 0);                                     // the sort's histogram
        for (int k = 0; k < SORT_PASSES; k++) pass(p, 2 * N * 4, 2 * N * 4);
        pass(p, 2 * N * 4 + N * d * F + unique * d * F, unique * d * F + 2 * chunks * d * F);   // run pieces
        pass(p, N * 4 + 2 * chunks * d * F, 0);                                                // crossing runs
    }
    colsum(p, B, (double)S * d, N * d * F, 0, 1);   // positions
    if (!types) colsum(p, N, d, N * d * F, 0, 1);   // all token type 0
}

/* ---------------------------------------------------------------- linear (linear.cu) */

static void pred_linear_fwd(mlm_backend *be, void *out, void *pre, const void *in, const void *W, const void *b,
                            int N, int I, int O, mlm_act act) {
    mlm_predict *p = pred(be);
    gemm(p, N, O, I, A, 0, b != NULL, 1);
    if (act == MLM_ACT_GELU) pass(p, (double)N * O * A, (double)N * O * A);   // pre -> out
}

/* The bias-gradient path cuda_weight_grads takes: the GEMM's epilogue unless
 * MLM_BIAS_GRAD=colsum (the model takes cuBLASLt to have an algorithm for it); a
 * bad value dies, as in the backend. */
static int bgrad_epilogue(void) {
    static const char *const choices[] = {"epilogue", "colsum", NULL};
    return mlm_env_choice("MLM_BIAS_GRAD", choices) == 0;
}

/* cuda_weight_grads (linear.cu): dW (O, I) += g^T in, fp32; db from the GEMM's
 * epilogue (O sums written to the partials, then added to db) or a column sum. */
static void weight_grads(mlm_predict *p, double N, double I, double O, int db) {
    if (db && bgrad_epilogue()) {
        need_partials(p, (size_t)(O * F));
        launch(p, 2 * O * I * N, p->c.gemm_flops, (O * N + N * I) * A + 2 * O * I * F + O * F);
        pass(p, 2 * O * F, O * F);
        return;
    }
    gemm(p, O, I, N, F, 1, 0, 1);
    if (db) colsum(p, N, O, N * O * A, 0, 1);
}

static void pred_linear_bwd(mlm_backend *be, void *din, float *dW, float *db, void *dout, const void *in,
                            const void *W, const void *pre, int N, int I, int O, mlm_act act, int din_accumulate) {
    mlm_predict *p = pred(be);
    double NO = (double)N * O;
    if (act == MLM_ACT_GELU && db) {
        colsum(p, N, O, 2 * NO * A, NO * A, 1);   // dout *= gelu'(pre) in place, db += its column sums
    } else if (act == MLM_ACT_GELU) {
        pass(p, 2 * NO * A, NO * A);
    }
    weight_grads(p, N, I, O, db && act != MLM_ACT_GELU);   // dW += dout^T in, db
    if (din) gemm(p, N, I, O, A, din_accumulate, 0, 1);   // din = dout W
}

/* ---------------------------------------------------------------- LayerNorm (layernorm.cu) */

static void pred_residual_ln_fwd(mlm_backend *be, void *out, void *s, float *mean, float *rstd, const void *x,
                                 const void *res, const void *ln_w, const void *ln_b, int B, int S, int d, float eps,
                                 const mlm_dropout *drop) {
    double N = (double)B * S;
    pass(pred(be), 2 * N * d * A + 2.0 * d * A, 2 * N * d * A + 2 * N * F);
}

/* ln_bwd (layernorm.cu): one pass over the rows reads dout, the saved input and the
 * statistics, writes dx (and dres) and float2 partials per block of LN_BWD_ROWS rows
 * (a second set for the bias gradient); the finish passes add them up. */
static void ln_bwd(mlm_predict *p, double N, double d, int outputs, int with_bias) {
    double P = ceil(N / LN_BWD_ROWS), sets = with_bias ? 2 : 1;
    need_partials(p, (size_t)(sets * P * d * 8));
    pass(p, 2 * N * d * A + 2 * N * F + d * A, outputs * N * d * A + sets * P * d * 8);
    pass(p, P * d * 8, 2 * d * F * 2);
    if (with_bias) pass(p, P * d * 8, d * F * 2);
}

static void pred_residual_ln_bwd(mlm_backend *be, void *dx, void *dres, float *dln_w, float *dln_b, float *dbias,
                                 const void *dout, const void *s, const float *mean, const float *rstd,
                                 const void *ln_w, int B, int S, int d, const mlm_dropout *drop) {
    ln_bwd(pred(be), (double)B * S, d, dres ? 2 : 1, dbias != NULL);
}

static void pred_layernorm_fwd(mlm_backend *be, void *out, float *mean, float *rstd, const void *x, const void *ln_w,
                               const void *ln_b, int M, int d, float eps) {
    pass(pred(be), (double)M * d * A + 2.0 * d * A, (double)M * d * A + 2.0 * M * F);
}

static void pred_layernorm_bwd(mlm_backend *be, void *dx, float *dln_w, float *dln_b, const void *dout, const void *x,
                               const float *mean, const float *rstd, const void *ln_w, int M, int d) {
    ln_bwd(pred(be), M, d, 1, 0);
}

/* ---------------------------------------------------------------- attention (attention.cu) */

static int flash_dh(int dh) { return dh <= 64 ? 64 : 128; }   // the columns the kernels compute

static size_t pred_attention_saved_bytes(mlm_backend *be, int B, int S, int H) {
    return S <= FLASH_MAX_S ? (size_t)B * H * S * F : (size_t)B * H * S * S * A;
}

/* flash_kernels.cuh forward: q, k and v read (a head's k and v serve all its query
 * tiles from the cache), out and the log-sum-exp written; DH columns computed. */
static void flash_fwd(mlm_predict *p, double B, double S, double H, int dh) {
    double heads = B * H;
    launch(p, 4 * heads * S * S * flash_dh(dh), p->c.attn_flops, heads * (4 * S * dh * A + S * F));
}

/* The backward variant flash_attention.cu runs: MLM_FLASH_BWD = wide, else narrow
 * (its default; a bad value dies, here as there). The model sees the variants' FLOPs and
 * bytes, not their occupancy (narrow: three blocks per SM at DH 64, two at DH 128,
 * wide: one). */
static int flash_bwd_narrow(void) {
    static const char *const choices[] = {"narrow", "wide", NULL};
    return mlm_env_choice("MLM_FLASH_BWD", choices) == 0;
}

/* Backward, one block per (head, sequence): q, k, v, dout, out and the log-sum-exp
 * read, dqkv written, and with more than one key tile (128 keys wide, 64 narrow)
 * the fp32 dq rows (a head's stay in the cache between key tiles: written and read
 * once), unless narrow holds them in shared memory (bwd_cfg::dq_in_smem). */
static void flash_bwd(mlm_predict *p, double B, double S, double H, int dh) {
    int DH = flash_dh(dh), narrow = flash_bwd_narrow();
    int BN = narrow ? 64 : 128, BM = narrow ? (DH == 64 ? 32 : 16) : (DH == 64 ? 64 : 32);
    double heads = B * H, rows = ceil(S / BM) * BM, dq = 0;
    double tiles = SMEM_ALIGN + (2.0 * BN * DH + 4.0 * BM * DH + BN * (BM + 8)) * A + 2 * rows * F;
    int blocks = DH == 64 ? 3 : 2;   // narrow: per SM, as its registers allow; its dq rows get a block's share
    int dq_in_smem = narrow && tiles + rows * (DH + 8) * F <= SMEM_PER_SM / blocks - 1024;
    if (S > BN && !dq_in_smem) {
        size_t acc = (size_t)(heads * rows * DH * F);
        need_scratch(p, 1, &acc);
        dq = rows * DH * F * 2;
    }
    double per_head = 5 * S * dh * A + S * F + dq + 3 * S * dh * A;
    launch(p, 10 * heads * S * S * DH, p->c.attn_flops, heads * per_head);
}

/* The cuBLAS path beyond FLASH_MAX_S: permutes, batched GEMMs, a softmax pass. */
static void cublas_attention(mlm_predict *p, double B, double S, double H, int dh, int dropping, int backward) {
    double nd = B * S * H * dh, sq = B * H * S * S, BH = B * H;
    if (!backward) {
        size_t slices[4] = {(size_t)(3 * nd * A), (size_t)(sq * F), dropping ? (size_t)(sq * A) : 0,
                            (size_t)(nd * A)};
        need_scratch(p, 4, slices);
        pass(p, 3 * nd * A, 3 * nd * A);
        gemm(p, S, S, dh, F, 0, 0, BH);
        pass(p, sq * F, (dropping ? 2 : 1) * sq * A);
        gemm(p, S, dh, S, A, 0, 0, BH);
        pass(p, nd * A, nd * A);
        return;
    }
    size_t slices[6] = {(size_t)(3 * nd * A), (size_t)(nd * A), (size_t)(sq * F), (size_t)(sq * A),
                        dropping ? (size_t)(sq * A) : 0, (size_t)(3 * nd * A)};
    need_scratch(p, 6, slices);
    pass(p, 3 * nd * A, 3 * nd * A);
    pass(p, nd * A, nd * A);
    gemm(p, S, S, dh, F, 0, 0, BH);
    pass(p, sq * F + sq * A, (dropping ? 2 : 1) * sq * A);
    for (int k = 0; k < 3; k++) gemm(p, S, dh, S, A, 0, 0, BH);   // dv, dq, dk
    pass(p, 3 * nd * A, 3 * nd * A);
}

static void pred_attention_fwd(mlm_backend *be, void *out, void *saved, const void *qkv, const int32_t *lengths,
                               int B, int S, int H, int dh, const mlm_dropout *drop) {
    if (S <= FLASH_MAX_S) flash_fwd(pred(be), B, S, H, dh);
    else cublas_attention(pred(be), B, S, H, dh, drop && drop->threshold, 0);
}

static void pred_attention_bwd(mlm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                               const void *saved, const int32_t *lengths, int B, int S, int H, int dh,
                               const mlm_dropout *drop) {
    if (S <= FLASH_MAX_S) flash_bwd(pred(be), B, S, H, dh);
    else cublas_attention(pred(be), B, S, H, dh, drop && drop->threshold, 1);
}

/* ---------------------------------------------------------------- the MLM head (mlm_head.cu) */

static void pred_gather_rows(mlm_backend *be, void *out, const void *in, const int32_t *rows, int M, int d) {
    pass(pred(be), (double)M * 4 + (double)M * d * A, (double)M * d * A);
}

static void pred_scatter_rows(mlm_backend *be, void *dfull, const void *drows, const int32_t *rows, int M, int N,
                              int d) {
    mlm_predict *p = pred(be);
    pass(p, 0, (double)N * d * A);   // the memset
    pass(p, (double)M * 4 + (double)M * d * A, (double)M * d * A);
}

/* bf16 logits rows ldl apart; the GEMMs and passes touch the V columns of each. */
static void pred_decoder_fwd(mlm_backend *be, void *logits, const void *in, const void *W, const void *b, int M,
                             int d, int V, int ldl) {
    gemm(pred(be), M, V, d, A, 0, 1, 1);   // the bf16 bias in the epilogue
}

static void pred_decoder_bwd(mlm_backend *be, void *din, float *dW, float *db, const void *dlogits, const void *in,
                             const void *W, int M, int d, int V, int ldl) {
    mlm_predict *p = pred(be);
    weight_grads(p, M, d, V, 1);    // dW += g^T in, db
    gemm(p, M, d, V, A, 0, 0, 1);   // din = g W
}

/* One sweep over each row held in registers (read once, the gradient written once)
 * and the statistics in one block. */
static void pred_cross_entropy(mlm_backend *be, void *logits, const int32_t *labels, int M, int V, int ldl,
                               float scale, const mlm_live *live, float *stats) {
    mlm_predict *p = pred(be);
    double MV = (double)M * V;
    size_t row_stats = (size_t)M * 8;
    need_scratch(p, 1, &row_stats);
    if (V > CE_HELD_RUNS * 8 * CE_THREADS) pass(p, (double)M * 4 + 2 * MV * A, MV * A + (double)M * 8);   // re-read
    else pass(p, (double)M * 4 + MV * A, MV * A + (double)M * 8);
    pass(p, (double)M * 8, 2.0 * F * 2);
}

/* ---------------------------------------------------------------- optimizer (reduce.cu, adamw.cu) */

static void pred_sum_squares(mlm_backend *be, float *out, const float *g, size_t n) {
    mlm_predict *p = pred(be);
    double P = fmin(SUMSQ_MAX_BLOCKS, ceil((double)n / SUMSQ_PER_BLOCK));
    if (P < 1) P = 1;
    need_partials(p, (size_t)P * 8);
    pass(p, (double)n * F, P * 8);
    pass(p, P * 8, F);
}

static void pred_adamw(mlm_backend *be, float *master, void *wgt, float *g, float *m, float *v, size_t n,
                       const mlm_adamw_args *a, const float *gnorm_sq) {
    pass(pred(be), (double)n * 4 * F, (double)n * (4 * F + A));   // master, g, m, v -> master, g = 0, m, v, wgt
}

/* ---------------------------------------------------------------- the table, through the wrapper */

static void before(void *ctx, const char *op, unsigned flags, const char *shape, const uint64_t *args, int nargs) {
    mlm_predict *p = ctx;
    p->open = mlm_op_table_entry(&p->t, op, shape);
    p->open->c.calls++;
}

static void after(void *ctx, const char *op) { ((mlm_predict *)ctx)->open = NULL; }

static void pred_destroy(mlm_backend *be) { free(be); }

mlm_backend *mlm_predict_backend(const mlm_ceilings *c, int graphs, mlm_predict **out) {
    mlm_predict *p = mlm_xcalloc(1, sizeof *p, "performance model");
    p->c = *c;
    p->graphs = graphs;
    p->next = (uintptr_t)1 << 40;
    mlm_backend *inner = mlm_xcalloc(1, sizeof *inner, "performance model");
    *inner = (mlm_backend){
        .name = "cuda (predicted)", .act_size = A, .wgt_size = A, .impl = p,
#define MLM_OP(ret, op, ...) .op = pred_##op,
#include "mlm/backend_ops.def"
        .replay = NULL, .rows_align = 64, .logits_align = 128,   // as the CUDA backend
        .destroy = pred_destroy,
    };
    mlm_backend_check(inner);
    *out = p;
    mlm_wrap_hooks h = {.ctx = p, .before = before, .after = after};
    return mlm_backend_wrap(inner, &h);
}

void mlm_predict_free(mlm_predict *p) { free(p); }

void mlm_predict_reset(mlm_predict *p) { p->t.n = 0; }

mlm_op_cost mlm_predict_get(const mlm_predict *p, const char *op, const char *shape) {
    return mlm_op_table_sum(&p->t, op, shape);
}

size_t mlm_predict_peak_bytes(const mlm_predict *p) {
    return p->peak_allocated + p->scratch + p->partials + LT_WORKSPACE;
}

void mlm_predict_print(const mlm_predict *p, FILE *f, int units, int max_rows) {
    mlm_op_entry *s = mlm_op_table_sorted(&p->t);
    double u = units > 0 ? units : 1, total = mlm_predict_get(p, NULL, NULL).seconds;
    fprintf(f, "%-20s %-34s %7s %9s %9s %9s %7s\n", "op", "shape", "calls", "GFLOP", "MB", "ms", "share");
    int shown = 0;
    for (int i = 0; i < p->t.n && shown < max_rows; i++) {
        if (!s[i].c.launches) continue;   // no device work (sync, download_finish, ...)
        fprintf(f, "%-20s %-34s %7.1f %9.2f %9.1f %9.3f %6.1f%%\n", s[i].op, s[i].shape, s[i].c.calls / u,
                s[i].c.flops / u / 1e9, s[i].c.bytes / u / 1e6, s[i].c.seconds * 1e3 / u,
                total > 0 ? 100 * s[i].c.seconds / total : 0.0);
        shown++;
    }
    mlm_op_cost all = mlm_predict_get(p, NULL, NULL);
    fprintf(f, "%-20s %-34s %7s %9.2f %9.1f %9.3f %6.1f%%\n", "all", "", "", all.flops / u / 1e9, all.bytes / u / 1e6,
            all.seconds * 1e3 / u, 100.0);
    free(s);
}

void mlm_predict_json(const mlm_predict *p, FILE *f, int units) {
    mlm_op_entry *s = mlm_op_table_sorted(&p->t);
    double u = units > 0 ? units : 1, total = mlm_predict_get(p, NULL, NULL).seconds;
    for (int i = 0; i < p->t.n; i++)
        if (s[i].c.launches)
            fprintf(f, "{\"predict_op\":\"%s\",\"shape\":\"%s\",\"calls\":%.2f,\"gflop\":%.4f,\"mb\":%.3f,\"ms\":%.4f,"
                    "\"share\":%.4f}\n",
                    s[i].op, s[i].shape, s[i].c.calls / u, s[i].c.flops / u / 1e9, s[i].c.bytes / u / 1e6,
                    s[i].c.seconds * 1e3 / u, total > 0 ? s[i].c.seconds / total : 0.0);
    free(s);
}
