/*
 * BERT encoder + masked-LM head with HF BertForMaskedLM semantics (post-LN,
 * erf GELU, learned absolute positions, token types, decoder tied to the word
 * embeddings), or with model.architecture = roberta HF RobertaForMaskedLM's (the same
 * network: positions start at padding_idx + 1, roberta. / lm_head. names). Parameters live in one contiguous buffer in the fixed tensor order
 * below, each per-layer tensor stacked over layers; gradients, fp32 master weights
 * and AdamW moments use the same layout. What is known of each tensor (its name,
 * shape, HF name, weight decay, initialisation, and the part of the model it
 * belongs to, which decides its gradient bucket) is written once, in the spec
 * table of src/host/train/model.c; everything else loops over mlm_layout.
 */
#ifndef MLM_MODEL_H
#define MLM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "mlm/backend.h"
#include "mlm/config.h"

/* The tensors in buffer order. The order is fixed: it is the layout of the AdamW
 * moments in optimizer.safetensors and keys the initialisation (a tensor's id is in
 * its Philox counter). The decayed tensors come first, so AdamW runs as two calls. */
typedef enum {
    /* weight decay */
    MLM_T_WTE,        // (V, d) word embeddings, also the decoder weight
    MLM_T_WPE,        // (P, d) position embeddings
    MLM_T_WTT,        // (T, d) token-type embeddings
    MLM_T_QKV_W,      // (L, 3d, d) query | key | value
    MLM_T_ATTN_O_W,   // (L, d, d) attention output dense
    MLM_T_FFN_IN_W,   // (L, I, d) intermediate dense
    MLM_T_FFN_OUT_W,  // (L, d, I) output dense
    MLM_T_HEAD_W,     // (d, d) MLM head transform dense
    /* no weight decay: biases and LayerNorms */
    MLM_T_EMB_LN_W,   // (d)
    MLM_T_EMB_LN_B,   // (d)
    MLM_T_QKV_B,      // (L, 3d)
    MLM_T_ATTN_O_B,   // (L, d)
    MLM_T_LN1_W,      // (L, d) attention.output.LayerNorm
    MLM_T_LN1_B,      // (L, d)
    MLM_T_FFN_IN_B,   // (L, I)
    MLM_T_FFN_OUT_B,  // (L, d)
    MLM_T_LN2_W,      // (L, d) output.LayerNorm
    MLM_T_LN2_B,      // (L, d)
    MLM_T_HEAD_B,     // (d)
    MLM_T_HEAD_LN_W,  // (d)
    MLM_T_HEAD_LN_B,  // (d)
    MLM_T_DEC_B,      // (V) decoder bias
    MLM_T_COUNT
} mlm_tensor_id;

/* The part of the model a tensor belongs to: the embeddings, an encoder layer
 * (stacked over layers) or the MLM head. The backward finishes their gradients in
 * the order head, layers L-1 .. 0, embeddings: the data-parallel buckets (dist.h). */
typedef enum { MLM_PART_EMBEDDINGS, MLM_PART_LAYER, MLM_PART_HEAD } mlm_part;

/* HF's initialisation: N(0, init_range); that with the padding row zeroed, as HF's
 * padding_idx does ([PAD] = 0 for BERT, <pad> = 1 for RoBERTa, whose position
 * embeddings get it too); zeros (biases); ones (LayerNorm weights). */
typedef enum { MLM_INIT_NORMAL, MLM_INIT_NORMAL_PAD0, MLM_INIT_ZERO, MLM_INIT_ONE } mlm_init;

typedef struct {
    const char *name;     // our name, e.g. "qkv_w"
    mlm_part part;
    int layers;           // 1, or L for the tensors of an encoder layer
    size_t rows, cols;    // shape of one layer's slice (cols = 1 for vectors)
    size_t numel;         // layers * rows * cols
    size_t offset;        // element offset of layer 0 in the parameter buffer
    int decay;            // AdamW applies weight decay (matrices and embeddings)
    mlm_init init;
} mlm_tensor_info;

typedef struct {
    mlm_model_config cfg;
    mlm_tensor_info t[MLM_T_COUNT];
    size_t num_params;    // elements in the buffer
} mlm_layout;

void mlm_layout_init(mlm_layout *lay, const mlm_model_config *cfg);

/* RoBERTa's padding_idx: HF RobertaConfig's pad_token_id, <pad> of its vocabulary
 * (<s> 0, <pad> 1, </s> 2, <unk> 3). The position table is indexed from it. */
#define MLM_ROBERTA_PAD_ID 1
/* The position row of a sequence's first token: 0 (BERT), padding_idx + 1 (RoBERTa). */
int mlm_position_offset(const mlm_model_config *cfg);
/* The longest sequence the position table holds: max_position - that offset. */
int mlm_max_seq_len(const mlm_model_config *cfg);
/* Element offset of tensor id, layer l. */
size_t mlm_offset(const mlm_layout *lay, mlm_tensor_id id, int l);

/* A segment of the parameter buffer: one tensor of one layer, the unit HF calls a
 * parameter and an optimizer with per-tensor norms (LAMB's trust ratio) works on. */
typedef struct {
    mlm_tensor_id id;
    int layer;
    size_t offset, count;
    int decay;
} mlm_segment;
/* The segments in buffer order, at most max of them into out; returns the count. */
int mlm_layout_segments(const mlm_layout *lay, mlm_segment *out, int max);

/* The HF BertForMaskedLM (RobertaForMaskedLM) parameter names, each a contiguous range of our buffer
 * (query/key/value are row blocks of qkv), in the order of the checkpoint's
 * model.safetensors. The tied decoder weight is not listed. */
typedef struct {
    char name[96];        // e.g. "bert.encoder.layer.3.attention.self.key.weight", "lm_head.bias"
    mlm_tensor_id id;     // the tensor of ours it is (a part of)
    size_t offset;        // element offset in the buffer
    size_t rows, cols;    // cols == 0 for 1-D tensors
} mlm_hf_tensor;
/* Fills up to max entries, returns the total count. */
int mlm_hf_tensors(const mlm_layout *lay, mlm_hf_tensor *out, int max);

/* Dropout sites: embeddings, then three per layer. Masking uses its own site. */
#define MLM_SITE_EMB 0u
#define MLM_SITE_ATTN_PROBS(l) (1u + 3u * (uint32_t)(l))
#define MLM_SITE_ATTN_OUT(l) (2u + 3u * (uint32_t)(l))
#define MLM_SITE_FFN_OUT(l) (3u + 3u * (uint32_t)(l))
#define MLM_SITE_MASKING 0x80000000u

/* One micro-batch in host memory (the model uploads it): ids and lengths of B
 * sequences of S tokens and the M masked positions (flat indices b*S + s) with
 * their labels. */
typedef struct {
    int B, S, M;
    const int32_t *ids;       // i32 (B*S), after masking
    const int32_t *types;     // i32 (B*S) or NULL
    const int32_t *lengths;   // i32 (B)
    const int32_t *rows;      // i32 (M)
    const int32_t *labels;    // i32 (M)
    uint32_t seq_base;        // global index of sequence 0 in the global batch
    uint32_t step;            // optimizer step, keys dropout
} mlm_batch;

typedef struct mlm_acts mlm_acts;  // activation arena, private to model.c

typedef struct {
    mlm_layout lay;
    mlm_backend *be;
    void *params;       // wgt (num_params) compute copy
    float *master;      // f32 (num_params); == params when wgt_size == 4
    float *grads;       // f32 (num_params)
    float *m, *v;       // f32 (num_params) AdamW moments
    float *stats;       // f32 (4): loss sum, correct, grad norm^2, spare
    mlm_segment *segs;  // host (nsegs): the buffer by tensor and layer (the optimizer's)
    int nsegs;
    uint64_t seed;      // keys dropout
    int max_B, max_M;   // arena capacity
    size_t act_bytes;   // arena size
    mlm_acts *acts;
    /* When set, the backward of mlm_model_step_micro calls it as gradients become
     * final, right after queueing their ops: layer = L after the MLM head, l after
     * encoder layer l (L-1 .. 0), -1 after the embeddings (the tied word embeddings
     * are final only then). The gradient all-reduce of dist.h starts buckets here. */
    void (*grad_hook)(void *ctx, int layer);
    void *grad_hook_ctx;
} mlm_model;

/* Allocates everything on the backend for micro-batches up to max_B x S with up to
 * max_M masked rows. Parameters are left uninitialised. */
void mlm_model_create(mlm_model *m, const mlm_model_config *cfg, mlm_backend *be,
                      int max_B, int S, int max_M, uint64_t seed);
void mlm_model_destroy(mlm_model *m);
/* HF init: N(0, init_range) for matrices and embeddings, zero biases, LayerNorm 1/0;
 * deterministic from seed. Writes master and the wgt copy, zeroes grads and moments. */
void mlm_model_init_params(mlm_model *m, uint64_t seed);
/* Replaces all parameters with host fp32 values (num_params). */
void mlm_model_set_params(mlm_model *m, const float *host);
/* The largest micro-batch whose activation arena fits in bytes, with the masked
 * rows the loader reserves for it (mlm_max_masked of B x S tokens at mask_prob);
 * 0 when not even one sequence fits. */
int mlm_model_max_micro_batch(const mlm_layout *lay, const mlm_backend *be, int S, float mask_prob, size_t bytes);

/* Forward + backward of one micro-batch; gradients accumulate into m->grads with
 * the loss scaled by loss_scale (1 / masked tokens of the whole step);
 * stats[0] += loss sum, stats[1] += correct predictions. */
void mlm_model_step_micro(mlm_model *m, const mlm_batch *b, float loss_scale);
/* Forward only (evaluation, no dropout); stats as above. logits_out, when not
 * NULL, receives the host fp32 logits (M, V). */
void mlm_model_forward(mlm_model *m, const mlm_batch *b, float *logits_out);

/* Starts copying the model's statistics (loss sum, correct, grad norm^2, spare) into
 * s behind the queued work, and clears them on the backend for what follows; the
 * backend's download_finish completes the copy. */
void mlm_model_stats_start(mlm_model *m, float s[4]);
/* Downloads and clears the loss, correct and grad-norm statistics now. */
void mlm_model_take_stats(mlm_model *m, float out[3]);

#endif
