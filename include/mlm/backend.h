/*
 * The backend op table: the operations a training step is made of, at the
 * granularity the fastest backend fuses them. model.c calls these in straight
 * lines; the CPU backend (fp32, OpenBLAS, threads) is the oracle and the CUDA
 * backend must match it.
 *
 * Buffers are backend memory (host memory on CPU, device memory on CUDA) of three
 * kinds, named in the comments:
 *   act   activations, act_size bytes per element (fp32 on CPU, bf16 on CUDA)
 *   wgt   compute copy of parameters, wgt_size bytes per element (fp32 / bf16)
 *   f32   always fp32: gradients, master weights, moments, LayerNorm statistics,
 *         logits, losses
 *   i32   int32 ids, positions, labels, lengths
 * Shapes are row-major; N = B*S tokens of a micro-batch; linear weights are
 * [out, in] as in PyTorch (y = x W^T + b). Gradient outputs named "accumulate"
 * are added to (micro-batch accumulation); all others are overwritten.
 */
#ifndef MLM_BACKEND_H
#define MLM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MLM_ACT_NONE = 0, MLM_ACT_GELU = 1 } mlm_act;

/* The values that change from one training micro-batch to the next while the
 * shapes stay: the model writes them to backend memory before each micro-batch,
 * and the ops read them from there when given this pointer. Then a micro-batch's
 * op sequence has the same arguments every time, so a backend may record it once
 * and replay it (CUDA graphs, `replay` below). */
typedef struct {
    uint32_t step;        // optimizer step, keys dropout
    uint32_t seq_base;    // global index of the micro-batch's first sequence
    float loss_scale;     // cross_entropy's scale
    uint32_t unused;
} mlm_live;

/* Dropout by counter-based Philox: element e of sequence g at step t, site s is
 * kept when philox(ctr = {e/4, site, g, step}, key = seed)[e%4] >= threshold,
 * then scaled by scale = 1/(1-p). p == 0 (threshold == 0) disables it.
 * Sequence b of the micro-batch has global index seq_base + b. When live is set
 * (backend memory), step and seq_base are read from it instead. */
typedef struct {
    uint32_t threshold;   // (uint32)(p * 2^32), 0 = off
    float scale;          // 1 / (1 - p)
    uint64_t seed;
    uint32_t step;
    uint32_t site;        // see MLM_SITE_* in model.h
    uint32_t seq_base;
    const mlm_live *live; // or NULL
} mlm_dropout;

/* Arguments of one AdamW update (decoupled weight decay, bias-corrected). */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int step;             // 1-based, for bias correction
    float grad_clip;      // clip the global norm to this; 0 = off
} mlm_adamw_args;

typedef struct mlm_backend mlm_backend;
struct mlm_backend {
    const char *name;     // "cpu" or "cuda"
    size_t act_size;
    size_t wgt_size;
    void *impl;           // backend private state

    /* ---- memory ---- */
    void *(*alloc)(mlm_backend *be, size_t bytes, const char *what); // dies naming what
    void (*free)(mlm_backend *be, void *p);
    void (*upload)(mlm_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(mlm_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*zero)(mlm_backend *be, void *p, size_t bytes);
    void (*sync)(mlm_backend *be);
    /* A download that does not wait: download_start queues the copy of bytes (at
     * most 256) behind the work queued so far and returns at once; download_finish
     * waits for it and fills host_dst, which must stay valid until then. One at a
     * time. The trainer reads a step's statistics this way while the next step runs. */
    void (*download_start)(mlm_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*download_finish)(mlm_backend *be);
    /* Bytes the backend could still allocate: free device memory, available host
     * RAM. NULL when unknown. */
    size_t (*mem_free)(mlm_backend *be);
    /* act/wgt <-> host fp32 conversions of n elements */
    void (*upload_f32_as_act)(mlm_backend *be, void *dst_act, const float *src, size_t n);
    void (*download_act_as_f32)(mlm_backend *be, float *dst, const void *src_act, size_t n);
    /* wgt compute copy from f32 master (a no-op on CPU where they are the same). */
    void (*copy_master_to_wgt)(mlm_backend *be, void *dst_wgt, const float *master, size_t n);

    /* ---- embeddings: out = dropout(LayerNorm(wte[ids] + wpe[s] + wtt[types])) ---- */
    void (*embed_fwd)(mlm_backend *be,
                      void *out,          // act (N, d)
                      void *sum,          // act (N, d) saved LayerNorm input
                      float *mean, float *rstd,   // f32 (N) saved statistics
                      const int32_t *ids, const int32_t *types, // i32 (N); types may be NULL (all 0)
                      const void *wte, const void *wpe, const void *wtt, // wgt (V,d) (P,d) (T,d)
                      const void *ln_w, const void *ln_b,              // wgt (d)
                      int B, int S, int d, float eps, const mlm_dropout *drop);
    void (*embed_bwd)(mlm_backend *be,
                      float *dwte, float *dwpe, float *dwtt,   // f32 accumulate (V,d) (P,d) (T,d)
                      float *dln_w, float *dln_b,              // f32 accumulate (d)
                      const void *dout,                        // act (N, d)
                      const void *sum, const float *mean, const float *rstd,
                      const int32_t *ids, const int32_t *types, const void *ln_w,
                      int B, int S, int d, const mlm_dropout *drop);

    /* ---- linear: out = act(in W^T + b); pre saves in W^T + b when act != NONE ---- */
    void (*linear_fwd)(mlm_backend *be,
                       void *out,                // act (N, O)
                       void *pre,                // act (N, O) or NULL when act == NONE
                       const void *in,           // act (N, I)
                       const void *W,            // wgt (O, I)
                       const void *b,            // wgt (O) or NULL
                       int N, int I, int O, mlm_act act);
    /* dout is overwritten with the gradient before the activation when act != NONE.
     * din: overwritten, or added to when din_accumulate; may be NULL. */
    void (*linear_bwd)(mlm_backend *be,
                       void *din,                // act (N, I) or NULL
                       float *dW,                // f32 accumulate (O, I)
                       float *db,                // f32 accumulate (O) or NULL
                       void *dout,               // act (N, O)
                       const void *in,           // act (N, I)
                       const void *W,            // wgt (O, I)
                       const void *pre,          // act (N, O) or NULL
                       int N, int I, int O, mlm_act act, int din_accumulate);

    /* ---- post-LN residual: s = dropout(x) + res; out = LayerNorm(s) ---- */
    void (*residual_ln_fwd)(mlm_backend *be,
                            void *out,           // act (N, d)
                            void *s,             // act (N, d) saved LayerNorm input
                            float *mean, float *rstd,  // f32 (N)
                            const void *x,       // act (N, d)
                            const void *res,     // act (N, d)
                            const void *ln_w, const void *ln_b,  // wgt (d)
                            int B, int S, int d, float eps, const mlm_dropout *drop);
    /* ds = dLayerNorm(dout); dres = ds; dx = dropout_bwd(ds). dres may be NULL. */
    void (*residual_ln_bwd)(mlm_backend *be,
                            void *dx,            // act (N, d)
                            void *dres,          // act (N, d) or NULL
                            float *dln_w, float *dln_b,   // f32 accumulate (d)
                            const void *dout,    // act (N, d)
                            const void *s, const float *mean, const float *rstd,
                            const void *ln_w,
                            int B, int S, int d, const mlm_dropout *drop);
    /* Plain LayerNorm over M rows (MLM head transform); x is saved by the caller. */
    void (*layernorm_fwd)(mlm_backend *be, void *out, float *mean, float *rstd,
                          const void *x, const void *ln_w, const void *ln_b,
                          int M, int d, float eps);
    void (*layernorm_bwd)(mlm_backend *be, void *dx, float *dln_w, float *dln_b,
                          const void *dout, const void *x, const float *mean,
                          const float *rstd, const void *ln_w, int M, int d);

    /* ---- self-attention ----
     * qkv: act (N, 3d), columns [q | k | v], head h at columns h*dh .. h*dh+dh-1 of each.
     * Key j of sequence b takes part only when j < lengths[b]. scores scaled by
     * 1/sqrt(dh), softmax in fp32, dropout on the probabilities. */
    size_t (*attention_saved_bytes)(mlm_backend *be, int B, int S, int H);
    void (*attention_fwd)(mlm_backend *be,
                          void *out,             // act (N, d)
                          void *saved,           // attention_saved_bytes()
                          const void *qkv,       // act (N, 3d)
                          const int32_t *lengths,// i32 (B)
                          int B, int S, int H, int dh, const mlm_dropout *drop);
    void (*attention_bwd)(mlm_backend *be,
                          void *dqkv,            // act (N, 3d)
                          const void *dout,      // act (N, d)
                          const void *qkv, const void *out, const void *saved,
                          const int32_t *lengths,
                          int B, int S, int H, int dh, const mlm_dropout *drop);

    /* ---- masked rows ----
     * A row index of -1 pads the list to a fixed length: gather writes a zero row,
     * scatter skips it. */
    void (*gather_rows)(mlm_backend *be, void *out /* act (M, d) */, const void *in /* act (N, d) */,
                        const int32_t *rows /* i32 (M) */, int M, int d);
    /* dfull = 0 except dfull[rows[i]] = drows[i]; rows other than -1 are distinct. */
    void (*scatter_rows)(mlm_backend *be, void *dfull /* act (N, d) */, const void *drows /* act (M, d) */,
                         const int32_t *rows, int M, int N, int d);

    /* ---- tied decoder: logits = in W^T + b, fp32 output ---- */
    void (*decoder_fwd)(mlm_backend *be, float *logits /* (M, V) */, const void *in /* act (M, d) */,
                        const void *W /* wgt (V, d) */, const void *b /* wgt (V) */, int M, int d, int V);
    void (*decoder_bwd)(mlm_backend *be, void *din /* act (M, d) */, float *dW /* accumulate (V, d) */,
                        float *db /* accumulate (V) */, const float *dlogits /* (M, V) */,
                        const void *in, const void *W, int M, int d, int V);
    /* Softmax cross-entropy per row against labels; logits are overwritten with
     * scale * dloss/dlogits (scale = live->loss_scale when live is set). stats[0] +=
     * sum of row losses, stats[1] += rows whose argmax equals the label. A label of
     * -1 marks a padding row: no loss, zero gradient, not counted. Any other label
     * outside [0, V) is an error. Never stores probabilities. */
    void (*cross_entropy)(mlm_backend *be, float *logits, const int32_t *labels,
                          int M, int V, float scale, const mlm_live *live, float *stats /* f32 (2) */);

    /* ---- optimizer ---- */
    /* out[0] = sum of squares of g[0..n) (deterministic). */
    void (*sum_squares)(mlm_backend *be, float *out /* f32 (1) */, const float *g, size_t n);
    /* AdamW on master[0..n) with moments m, v; clip factor min(1, clip/sqrt(*gnorm_sq))
     * applied to g when a->grad_clip > 0; then refreshes the wgt copy. */
    void (*adamw)(mlm_backend *be, float *master, void *wgt, const float *g, float *m, float *v,
                  size_t n, const mlm_adamw_args *a, const float *gnorm_sq);

    /* ---- replay ----
     * Runs fn(ctx). fn must queue ops only (no download or sync), with arguments
     * that depend on key alone; what changes between calls is in backend memory
     * (inputs, mlm_live). A backend may record the ops the first times it sees key
     * and afterwards replay the record instead of calling fn (CUDA graphs). NULL:
     * the caller just calls fn. */
    void (*replay)(mlm_backend *be, uint64_t key, void (*fn)(void *ctx), void *ctx);
    /* Padding rows (label -1) make the masked-row count of a micro-batch a multiple
     * of this, so that few keys cover every micro-batch; 1 = no padding. */
    int rows_align;

    void (*destroy)(mlm_backend *be);
};

/* CPU backend; threads <= 0 means all cores. */
mlm_backend *mlm_backend_cpu(int threads);

#endif
