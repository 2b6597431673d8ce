/*
 * The BERT / RoBERTa masked-LM model (include/mlm/model.h): parameter layout in one buffer from
 * one spec table, the activation arena, HF-compatible initialisation, and the forward
 * and backward of a micro-batch as straight-line calls against the backend op table
 * (include/mlm/backend_ops.def). Callers: the trainer, eval.c, fill-mask.
 *
 * Post-LN layer (HF BertLayer), N = B*S tokens:
 *   qkv = x W_qkv^T + b                        (N, 3d)
 *   ctx = attention(qkv, lengths)              (N, d)
 *   x1  = LN1(dropout(ctx W_o^T + b_o) + x)    (N, d)
 *   h   = GELU(x1 W_i^T + b_i)                 (N, I)
 *   y   = LN2(dropout(h W_f^T + b_f) + x1)     (N, d)
 * MLM head on the M masked rows only: gather, dense + GELU, LN, tied decoder, fused
 * softmax cross-entropy.
 *
 * RoBERTa (HF RobertaForMaskedLM) is the same network under other names; what
 * differs is where positions start: HF numbers a sequence's tokens padding_idx + 1,
 * padding_idx + 2, ... and gives padding padding_idx. Padding only trails here, so
 * token s of a sequence reads position row s + padding_idx + 1: the ops get the
 * position table and its gradient offset by that many rows (mlm_position_offset).
 * Padding rows then read a row HF would not, but nothing reads their outputs (the
 * attention stops at the lengths, the head gathers masked rows) and their gradient
 * is exactly zero, so rows 0 .. padding_idx get no gradient, as HF's padding_idx and
 * its never-used row 0 do not.
 */
#include "mlm/model.h"
#include "mlm/data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/log.h"
#include "mlm/philox.h"

/* ---------------------------------------------------------------- layout */

/* Every tensor, as one row per tensor of the HF checkpoint, in the checkpoint's
 * order (model.safetensors is written in it). A tensor of ours that HF splits
 * (qkv_w and qkv_b into query, key and value) has a row per part: the parts are row
 * blocks of ours, in table order, and agree on everything but their HF name. */
typedef enum { DIM_1, DIM_V, DIM_P, DIM_T, DIM_D, DIM_I } dim;
#define EMB MLM_PART_EMBEDDINGS
#define LAYER MLM_PART_LAYER
#define HEAD MLM_PART_HEAD
#define NORMAL MLM_INIT_NORMAL
#define PAD0 MLM_INIT_NORMAL_PAD0
#define ZERO MLM_INIT_ZERO
#define ONE MLM_INIT_ONE
#define EMB_ "bert.embeddings."
#define LAYER_ "bert.encoder.layer.%d."   // %d: the layer
#define HEAD_ "cls.predictions."
#define LM_ "lm_head."
static const struct {
    mlm_tensor_id id;
    const char *name;     // ours
    mlm_part part;
    dim rows, cols;       // of one part and layer; cols DIM_1: a vector
    int decay;            // AdamW's weight decay
    mlm_init init;
    const char *hf;       // BertForMaskedLM's name
    const char *roberta;  // RobertaForMaskedLM's, where it is not hf with "roberta." for "bert."
} SPEC[] = {
    // id             name         part   rows   cols   decay init   HF name (BERT, RoBERTa)
    {MLM_T_WTE,       "wte",       EMB,   DIM_V, DIM_D, 1, PAD0,   EMB_ "word_embeddings.weight", NULL},
    {MLM_T_WPE,       "wpe",       EMB,   DIM_P, DIM_D, 1, NORMAL, EMB_ "position_embeddings.weight", NULL},
    {MLM_T_WTT,       "wtt",       EMB,   DIM_T, DIM_D, 1, NORMAL, EMB_ "token_type_embeddings.weight", NULL},
    {MLM_T_EMB_LN_W,  "emb_ln_w",  EMB,   DIM_D, DIM_1, 0, ONE,    EMB_ "LayerNorm.weight", NULL},
    {MLM_T_EMB_LN_B,  "emb_ln_b",  EMB,   DIM_D, DIM_1, 0, ZERO,   EMB_ "LayerNorm.bias", NULL},
    {MLM_T_QKV_W,     "qkv_w",     LAYER, DIM_D, DIM_D, 1, NORMAL, LAYER_ "attention.self.query.weight", NULL},
    {MLM_T_QKV_B,     "qkv_b",     LAYER, DIM_D, DIM_1, 0, ZERO,   LAYER_ "attention.self.query.bias", NULL},
    {MLM_T_QKV_W,     "qkv_w",     LAYER, DIM_D, DIM_D, 1, NORMAL, LAYER_ "attention.self.key.weight", NULL},
    {MLM_T_QKV_B,     "qkv_b",     LAYER, DIM_D, DIM_1, 0, ZERO,   LAYER_ "attention.self.key.bias", NULL},
    {MLM_T_QKV_W,     "qkv_w",     LAYER, DIM_D, DIM_D, 1, NORMAL, LAYER_ "attention.self.value.weight", NULL},
    {MLM_T_QKV_B,     "qkv_b",     LAYER, DIM_D, DIM_1, 0, ZERO,   LAYER_ "attention.self.value.bias", NULL},
    {MLM_T_ATTN_O_W,  "attn_o_w",  LAYER, DIM_D, DIM_D, 1, NORMAL, LAYER_ "attention.output.dense.weight", NULL},
    {MLM_T_ATTN_O_B,  "attn_o_b",  LAYER, DIM_D, DIM_1, 0, ZERO,   LAYER_ "attention.output.dense.bias", NULL},
    {MLM_T_LN1_W,     "ln1_w",     LAYER, DIM_D, DIM_1, 0, ONE,    LAYER_ "attention.output.LayerNorm.weight", NULL},
    {MLM_T_LN1_B,     "ln1_b",     LAYER, DIM_D, DIM_1, 0, ZERO,   LAYER_ "attention.output.LayerNorm.bias", NULL},
    {MLM_T_FFN_IN_W,  "ffn_in_w",  LAYER, DIM_I, DIM_D, 1, NORMAL, LAYER_ "intermediate.dense.weight", NULL},
    {MLM_T_FFN_IN_B,  "ffn_in_b",  LAYER, DIM_I, DIM_1, 0, ZERO,   LAYER_ "intermediate.dense.bias", NULL},
    {MLM_T_FFN_OUT_W, "ffn_out_w", LAYER, DIM_D, DIM_I, 1, NORMAL, LAYER_ "output.dense.weight", NULL},
    {MLM_T_FFN_OUT_B, "ffn_out_b", LAYER, DIM_D, DIM_1, 0, ZERO,   LAYER_ "output.dense.bias", NULL},
    {MLM_T_LN2_W,     "ln2_w",     LAYER, DIM_D, DIM_1, 0, ONE,    LAYER_ "output.LayerNorm.weight", NULL},
    {MLM_T_LN2_B,     "ln2_b",     LAYER, DIM_D, DIM_1, 0, ZERO,   LAYER_ "output.LayerNorm.bias", NULL},
    {MLM_T_HEAD_W,    "head_w",    HEAD,  DIM_D, DIM_D, 1, NORMAL, HEAD_ "transform.dense.weight", LM_ "dense.weight"},
    {MLM_T_HEAD_B,    "head_b",    HEAD,  DIM_D, DIM_1, 0, ZERO,   HEAD_ "transform.dense.bias", LM_ "dense.bias"},
    {MLM_T_HEAD_LN_W, "head_ln_w", HEAD,  DIM_D, DIM_1, 0, ONE,    HEAD_ "transform.LayerNorm.weight", LM_ "layer_norm.weight"},
    {MLM_T_HEAD_LN_B, "head_ln_b", HEAD,  DIM_D, DIM_1, 0, ZERO,   HEAD_ "transform.LayerNorm.bias", LM_ "layer_norm.bias"},
    {MLM_T_DEC_B,     "dec_b",     HEAD,  DIM_V, DIM_1, 0, ZERO,   HEAD_ "bias", LM_ "bias"},
};
#undef EMB
#undef LAYER
#undef HEAD
#undef NORMAL
#undef PAD0
#undef ZERO
#undef ONE
#undef EMB_
#undef LAYER_
#undef HEAD_
#undef LM_
enum { NSPEC = sizeof SPEC / sizeof SPEC[0] };

static size_t dim_of(dim x, const mlm_model_config *c) {
    switch (x) {
    case DIM_V: return (size_t)c->vocab_size;
    case DIM_P: return (size_t)c->max_position;
    case DIM_T: return (size_t)c->type_vocab_size;
    case DIM_D: return (size_t)c->hidden_size;
    case DIM_I: return (size_t)c->intermediate_size;
    default: return 1;
    }
}

/* The tensors in id (buffer) order, each from its spec rows: a part's rows add to its
 * tensor's. The table is checked here, so a mistake in it stops every run at once. */
void mlm_layout_init(mlm_layout *lay, const mlm_model_config *c) {
    memset(lay, 0, sizeof *lay);
    lay->cfg = *c;
    for (int i = 0; i < NSPEC; i++) {
        mlm_tensor_info *t = &lay->t[SPEC[i].id];
        size_t rows = dim_of(SPEC[i].rows, c), cols = dim_of(SPEC[i].cols, c);
        if (t->name && (strcmp(t->name, SPEC[i].name) || t->cols != cols || t->decay != SPEC[i].decay ||
                        t->init != SPEC[i].init || t->part != SPEC[i].part))
            mlm_die(MLM_EXIT_RUNTIME, "model.c: the parts of tensor %s disagree in the spec table", t->name);
        *t = (mlm_tensor_info){.name = SPEC[i].name, .part = SPEC[i].part,
                               .layers = SPEC[i].part == MLM_PART_LAYER ? c->num_layers : 1,
                               .rows = t->rows + rows, .cols = cols, .decay = SPEC[i].decay, .init = SPEC[i].init};
    }
    size_t off = 0;
    for (int id = 0; id < MLM_T_COUNT; id++) {
        mlm_tensor_info *t = &lay->t[id];
        if (!t->name) mlm_die(MLM_EXIT_RUNTIME, "model.c: tensor id %d has no row in the spec table", id);
        t->numel = (size_t)t->layers * t->rows * t->cols;
        t->offset = off;
        off += t->numel;
    }
    lay->num_params = off;
}

int mlm_position_offset(const mlm_model_config *c) {
    return c->architecture == MLM_ARCH_ROBERTA ? MLM_ROBERTA_PAD_ID + 1 : 0;
}

int mlm_max_seq_len(const mlm_model_config *c) { return c->max_position - mlm_position_offset(c); }

size_t mlm_offset(const mlm_layout *lay, mlm_tensor_id id, int l) {
    const mlm_tensor_info *t = &lay->t[id];
    return t->offset + (size_t)l * t->rows * t->cols;
}

int mlm_layout_segments(const mlm_layout *lay, mlm_segment *out, int max) {
    int n = 0;
    for (int id = 0; id < MLM_T_COUNT; id++) {
        const mlm_tensor_info *t = &lay->t[id];
        for (int l = 0; l < t->layers; l++, n++)
            if (n < max) out[n] = (mlm_segment){id, l, mlm_offset(lay, id, l), t->rows * t->cols, t->decay};
    }
    return n;
}

/* ---------------------------------------------------------------- HF names */

int mlm_hf_tensors(const mlm_layout *lay, mlm_hf_tensor *out, int max) {
    int n = 0, roberta = lay->cfg.architecture == MLM_ARCH_ROBERTA;
    size_t at[MLM_T_COUNT] = {0};   // where the next part of each tensor starts in a layer's slice
    for (int i = 0; i < NSPEC; i++) {
        const mlm_tensor_info *t = &lay->t[SPEC[i].id];
        size_t rows = dim_of(SPEC[i].rows, &lay->cfg), part = at[SPEC[i].id];
        at[SPEC[i].id] += rows * t->cols;
        for (int l = 0; l < t->layers; l++, n++) {
            if (n >= max) continue;
            mlm_hf_tensor *o = &out[n];
            if (roberta && SPEC[i].roberta) snprintf(o->name, sizeof o->name, "%s", SPEC[i].roberta);
            else if (roberta) {   // "bert.x" -> "roberta.x"
                char fmt[96];
                snprintf(fmt, sizeof fmt, "roberta.%s", SPEC[i].hf + strlen("bert."));
                snprintf(o->name, sizeof o->name, fmt, l);
            } else {
                snprintf(o->name, sizeof o->name, SPEC[i].hf, l);
            }
            o->id = SPEC[i].id;
            o->rows = rows;
            o->cols = t->cols == 1 ? 0 : t->cols;
            o->offset = mlm_offset(lay, SPEC[i].id, l) + part;
        }
    }
    return n;
}

/* ---------------------------------------------------------------- activations */

struct mlm_acts {
    void *base;
    int32_t *ids, *lengths, *rows, *labels;  // i32 (N) (B) (M) (M)
    mlm_live *live;                 // the training micro-batch's step, seq_base, loss scale
    int32_t *stage;                 // host (2 M): rows and labels, padded, before upload
    void *emb_sum;                  // act (N, d)
    float *emb_mean, *emb_rstd;     // f32 (N)
    void **x;                       // act (L+1) x (N, d): layer inputs, x[L] = encoder output
    void **qkv;                     // act L x (N, 3d)
    void **att_saved;               // L x attention_saved_bytes
    void **ctx;                     // act L x (N, d)
    void **s1, **x1, **s2;          // act L x (N, d)
    float **m1, **r1, **m2, **r2;   // f32 L x (N)
    void **ffn_pre, **ffn_act;      // act L x (N, I)
    void *h_in, *h_pre, *h_act, *h_ln;  // act (M, d)
    float *h_mean, *h_rstd;         // f32 (M)
    void *logits;                   // act (M, ldl): ldl = V rounded up to the backend's logits_align
    int ldl;
    void *g_a, *g_b, *g_c, *g_d, *g_e;  // act (N, d) backward scratch
    void *g_ffn;                    // act (N, I)
    void *g_qkv;                    // act (N, 3d)
    void *g_h1, *g_h2;              // act (M, d)
};

/* Hands out aligned slices of one block; with base == NULL it only counts. */
typedef struct { char *base; size_t used; } carver;

static void *carve(carver *c, size_t bytes) {
    size_t at = (c->used + 255) & ~(size_t)255;
    c->used = at + bytes;
    return c->base ? c->base + at : NULL;
}

static void carve_acts(mlm_acts *a, carver *c, const mlm_layout *lay, const mlm_backend *be, int B,
                       int S, int M) {
    const mlm_model_config *cfg = &lay->cfg;
    size_t N = (size_t)B * S, d = cfg->hidden_size, I = cfg->intermediate_size, L = cfg->num_layers;
    size_t A = be->act_size, F = sizeof(float);
    size_t att = be->attention_saved_bytes((mlm_backend *)be, B, S, cfg->num_heads);
    a->ids = carve(c, N * sizeof(int32_t));
    a->lengths = carve(c, B * sizeof(int32_t));
    a->rows = carve(c, M * sizeof(int32_t));
    a->labels = carve(c, M * sizeof(int32_t));
    a->live = carve(c, sizeof(mlm_live));
    a->emb_sum = carve(c, N * d * A);
    a->emb_mean = carve(c, N * F);
    a->emb_rstd = carve(c, N * F);
    for (size_t l = 0; l <= L; l++) a->x[l] = carve(c, N * d * A);
    for (size_t l = 0; l < L; l++) {
        a->qkv[l] = carve(c, N * 3 * d * A);
        a->att_saved[l] = carve(c, att);
        a->ctx[l] = carve(c, N * d * A);
        a->s1[l] = carve(c, N * d * A);
        a->x1[l] = carve(c, N * d * A);
        a->s2[l] = carve(c, N * d * A);
        a->m1[l] = carve(c, N * F);
        a->r1[l] = carve(c, N * F);
        a->m2[l] = carve(c, N * F);
        a->r2[l] = carve(c, N * F);
        a->ffn_pre[l] = carve(c, N * I * A);
        a->ffn_act[l] = carve(c, N * I * A);
    }
    a->h_in = carve(c, M * d * A);
    a->h_pre = carve(c, M * d * A);
    a->h_act = carve(c, M * d * A);
    a->h_ln = carve(c, M * d * A);
    a->h_mean = carve(c, M * F);
    a->h_rstd = carve(c, M * F);
    int align = be->logits_align > 1 ? be->logits_align : 1;
    a->ldl = (cfg->vocab_size + align - 1) / align * align;
    a->logits = carve(c, (size_t)M * a->ldl * A);
    a->g_a = carve(c, N * d * A);
    a->g_b = carve(c, N * d * A);
    a->g_c = carve(c, N * d * A);
    a->g_d = carve(c, N * d * A);
    a->g_e = carve(c, N * d * A);
    a->g_ffn = carve(c, N * I * A);
    a->g_qkv = carve(c, N * 3 * d * A);
    a->g_h1 = carve(c, M * d * A);
    a->g_h2 = carve(c, M * d * A);
}

static mlm_acts *acts_new(int L) {
    mlm_acts *a = mlm_xcalloc(1, sizeof *a, "activation table");
    void ***vecs[] = {&a->x, &a->qkv, &a->att_saved, &a->ctx, &a->s1, &a->x1, &a->s2, &a->ffn_pre, &a->ffn_act};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++)
        *vecs[i] = mlm_xcalloc(L + 1, sizeof(void *), "activation table");
    float ***stats[] = {&a->m1, &a->r1, &a->m2, &a->r2};
    for (size_t i = 0; i < sizeof stats / sizeof stats[0]; i++)
        *stats[i] = mlm_xcalloc(L + 1, sizeof(float *), "activation table");
    return a;
}

static void acts_free(mlm_acts *a) {
    free(a->stage);
    void *vecs[] = {a->x, a->qkv, a->att_saved, a->ctx, a->s1, a->x1, a->s2, a->ffn_pre, a->ffn_act,
                    a->m1, a->r1, a->m2, a->r2};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) free(vecs[i]);
    free(a);
}

/* Bytes of the activation arena for B x S with M masked rows. */
static size_t arena_bytes(const mlm_layout *lay, const mlm_backend *be, int B, int S, int M) {
    mlm_acts *a = acts_new(lay->cfg.num_layers);
    carver c = {NULL, 0};
    carve_acts(a, &c, lay, be, B, S, M);
    acts_free(a);
    return c.used;
}

/* ---------------------------------------------------------------- lifetime */

/* Parameters, gradients, master weights and moments: all but the arena. */
static size_t state_bytes(const mlm_layout *lay, const mlm_backend *be) {
    size_t per = be->wgt_size + 3 * sizeof(float) + (be->wgt_size == sizeof(float) ? 0 : sizeof(float));
    return lay->num_params * per + 4 * sizeof(float);
}

int mlm_model_max_micro_batch(const mlm_layout *lay, const mlm_backend *be, int S, float mask_prob, size_t bytes) {
    int lo = 0, hi = 1;
    // the arena grows with B, its masked rows by the loader's own bound for B x S
    // tokens (not in proportion: the bound's spread term shrinks per sequence as B
    // grows): double, then bisect
    int cap = (1 << 30) / S;   // the config's limit on micro_batch x seq_len
    while (hi <= cap && arena_bytes(lay, be, hi, S, mlm_max_masked(hi * S, mask_prob)) <= bytes) lo = hi, hi *= 2;
    if (hi > cap) hi = cap + 1;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (arena_bytes(lay, be, mid, S, mlm_max_masked(mid * S, mask_prob)) <= bytes) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* The mask probability whose bound mlm_max_masked gives max_M rows for n tokens:
 * what the caller of mlm_model_create used, so the advice below follows its rule. */
static float implied_mask_prob(int n, int max_M) {
    float lo = 0, hi = 1;
    for (int i = 0; i < 40; i++) {
        float mid = 0.5f * (lo + hi);
        if (mlm_max_masked(n, mid) < max_M) lo = mid;
        else hi = mid;
    }
    return hi;
}

/* Dies before allocating when the backend says the model cannot fit, naming the
 * parts and the micro-batch that would. */
static void check_fits(const mlm_layout *lay, mlm_backend *be, int max_B, int S, int max_M) {
    size_t avail = be->mem_free(be), state = state_bytes(lay, be);
    size_t acts = arena_bytes(lay, be, max_B, S, max_M);
    if (state + acts <= avail) return;
    int fits = state < avail ? mlm_model_max_micro_batch(lay, be, S, implied_mask_prob(max_B * S, max_M), avail - state)
                             : 0;
    const double G = 1024.0 * 1024.0 * 1024.0;
    char hint[96] = "not even micro_batch 1 fits: use a smaller model or sequence";
    if (fits) snprintf(hint, sizeof hint, "train.micro_batch = %d fits", fits);
    mlm_die(MLM_EXIT_RUNTIME,
            "out of %s memory: micro_batch %d x %d tokens needs %.2f GiB for the activations and %.2f GiB for "
            "parameters, gradients and AdamW, but %.2f GiB are free; %s",
            be->name, max_B, S, acts / G, state / G, avail / G, hint);
}

void mlm_model_create(mlm_model *m, const mlm_model_config *cfg, mlm_backend *be, int max_B, int S,
                      int max_M, uint64_t seed) {
    memset(m, 0, sizeof *m);
    mlm_layout_init(&m->lay, cfg);
    m->be = be;
    m->seed = seed;
    m->max_B = max_B;
    m->max_M = max_M;
    if (S > mlm_max_seq_len(cfg))   // callers check this first, naming the input
        mlm_die(MLM_EXIT_RUNTIME, "sequences of %d tokens need more than the %d position embeddings", S,
                cfg->max_position);
    check_fits(&m->lay, be, max_B, S, max_M);
    size_t n = m->lay.num_params;
    m->params = be->alloc(be, n * be->wgt_size, "parameters");
    m->master = be->wgt_size == sizeof(float) ? m->params : be->alloc(be, n * sizeof(float), "master weights");
    m->grads = be->alloc(be, n * sizeof(float), "gradients");
    m->m = be->alloc(be, n * sizeof(float), "AdamW first moments");
    m->v = be->alloc(be, n * sizeof(float), "AdamW second moments");
    m->stats = be->alloc(be, 4 * sizeof(float), "step statistics");
    be->zero(be, m->grads, n * sizeof(float));
    be->zero(be, m->m, n * sizeof(float));
    be->zero(be, m->v, n * sizeof(float));
    be->zero(be, m->stats, 4 * sizeof(float));
    m->acts = acts_new(cfg->num_layers);
    carver c = {NULL, 0};
    carve_acts(m->acts, &c, &m->lay, be, max_B, S, max_M);
    m->act_bytes = c.used;
    m->acts->base = be->alloc(be, c.used, "activations");
    c = (carver){m->acts->base, 0};
    carve_acts(m->acts, &c, &m->lay, be, max_B, S, max_M);
    m->acts->stage = mlm_xmalloc(2 * (size_t)max_M * sizeof(int32_t), "masked-row staging");
    m->nsegs = mlm_layout_segments(&m->lay, NULL, 0);
    m->segs = mlm_xmalloc(m->nsegs * sizeof *m->segs, "parameter segments");
    mlm_layout_segments(&m->lay, m->segs, m->nsegs);
}

void mlm_model_destroy(mlm_model *m) {
    mlm_backend *be = m->be;
    be->free(be, m->acts->base);
    acts_free(m->acts);
    free(m->segs);
    if (m->master != m->params) be->free(be, m->master);
    void *bufs[] = {m->params, m->grads, m->m, m->v, m->stats};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be, bufs[i]);
    memset(m, 0, sizeof *m);
}

void mlm_model_set_params(mlm_model *m, const float *host) {
    mlm_backend *be = m->be;
    size_t n = m->lay.num_params;
    be->upload(be, m->master, host, n * sizeof(float));
    be->copy_master_to_wgt(be, m->params, m->master, n);
}

/* Standard normal from two Philox words (Box-Muller). */
static float normal01(uint32_t a, uint32_t b) {
    float u1 = ((float)(a >> 8) + 1.0f) * (1.0f / 16777216.0f);   // (0, 1]
    float u2 = mlm_u01(b);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

/* Rows first.. of a (rows, d) position table: position k = row - first gets
 * sin(k w_i) in column 2i and cos(k w_i) in column 2i + 1, w_i = 10000^(-2i/d)
 * (Vaswani et al. 2017), times range sqrt 2: the standard deviation of the N(0,
 * range) init. For any offset, position k + offset is a fixed rotation of position k
 * in every column pair, so attention can learn "the word before" once for all
 * positions instead of for each one. */
static void sinusoidal_positions(float *p, size_t rows, size_t d, size_t first, float range) {
    for (size_t r = first; r < rows; r++)
        for (size_t c = 0; c < d; c++) {
            double angle = (double)(r - first) * pow(10000.0, -(double)(c - c % 2) / (double)d);
            p[r * d + c] = (float)(range * M_SQRT2 * (c % 2 ? cos(angle) : sin(angle)));
        }
}

/* Element i of a tensor is a function of (seed, tensor id, i) alone, so the threads
 * of the OpenMP team (the CPU backend's) give the same values as one thread. */
void mlm_model_init_params(mlm_model *m, uint64_t seed) {
    const mlm_layout *lay = &m->lay;
    float *host = mlm_xmalloc(lay->num_params * sizeof(float), "initial parameters");
    for (int id = 0; id < MLM_T_COUNT; id++) {
        const mlm_tensor_info *t = &lay->t[id];
        float *p = host + t->offset, range = lay->cfg.init_range;
        if (t->init == MLM_INIT_ZERO || t->init == MLM_INIT_ONE) {
            for (size_t i = 0; i < t->numel; i++) p[i] = t->init == MLM_INIT_ONE ? 1.0f : 0.0f;
            continue;
        }
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < t->numel; i++) {
            mlm_u32x4 r = mlm_philox((uint32_t)i, 0x40000000u + (uint32_t)id, (uint32_t)(i >> 32), 0, seed);
            p[i] = range * normal01(r.v[0], r.v[1]);
        }
        // HF zeroes the padding_idx row of its padded embeddings: BERT's word embeddings
        // ([PAD] = 0), RoBERTa's word and position embeddings (<pad> = 1)
        size_t pad = lay->cfg.architecture == MLM_ARCH_ROBERTA ? MLM_ROBERTA_PAD_ID : 0;
        if (id == MLM_T_WPE && lay->cfg.position_init == MLM_POSITION_INIT_SINUSOIDAL)
            sinusoidal_positions(p, t->rows, t->cols, pad ? pad + 1 : 0, range);
        if (t->init == MLM_INIT_NORMAL_PAD0 || (pad && id == MLM_T_WPE))
            memset(p + pad * t->cols, 0, t->cols * sizeof(float));
    }
    mlm_model_set_params(m, host);
    free(host);
}

/* ---------------------------------------------------------------- forward */

static const void *W(const mlm_model *m, mlm_tensor_id id, int l) {
    return (const char *)m->params + mlm_offset(&m->lay, id, l) * m->be->wgt_size;
}

static float *G(const mlm_model *m, mlm_tensor_id id, int l) {
    return m->grads + mlm_offset(&m->lay, id, l);
}

/* Dropout at a site. Training reads the step and seq_base from live (backend
 * memory), so that the ops' arguments are the same for every micro-batch; eval
 * passes live = NULL and has no dropout. */
static mlm_dropout dropout_at(const mlm_model *m, const mlm_live *live, float p, uint32_t site) {
    mlm_dropout d = {0, 1.0f, m->seed, 0, site, 0, live};
    if (p > 0) {
        d.threshold = (uint32_t)fmin(4294967295.0, (double)p * 4294967296.0);
        d.scale = 1.0f / (1.0f - p);
    }
    return d;
}

/* The masked-row count a micro-batch of M runs with: M rounded up to the
 * backend's rows_align, within the arena. */
static int padded_rows(const mlm_model *m, int M) {
    int align = m->be->rows_align > 1 ? m->be->rows_align : 1;
    int padded = (M + align - 1) / align * align;
    return padded < m->max_M ? padded : (M > m->max_M ? M : m->max_M);
}

/* Uploads ids, lengths, and the masked rows and labels padded to M_run rows
 * (row -1, label -1). */
static void upload_batch(mlm_model *m, const mlm_batch *b, int M_run) {
    mlm_backend *be = m->be;
    mlm_acts *a = m->acts;
    if (b->B > m->max_B || M_run > m->max_M)
        mlm_die(MLM_EXIT_RUNTIME, "micro-batch of %d sequences with %d masked tokens exceeds the arena (%d, %d)",
                b->B, b->M, m->max_B, m->max_M);
    be->upload(be, a->ids, b->ids, (size_t)b->B * b->S * sizeof(int32_t));
    be->upload(be, a->lengths, b->lengths, (size_t)b->B * sizeof(int32_t));
    int32_t *rows = a->stage, *labels = a->stage + M_run;
    memcpy(rows, b->rows, (size_t)b->M * sizeof(int32_t));
    memcpy(labels, b->labels, (size_t)b->M * sizeof(int32_t));
    for (int i = b->M; i < M_run; i++) rows[i] = labels[i] = -1;
    be->upload(be, a->rows, rows, (size_t)M_run * sizeof(int32_t));
    be->upload(be, a->labels, labels, (size_t)M_run * sizeof(int32_t));
}

/* Embeddings and the encoder layers; a->x[L] holds the encoder output. */
static void encoder_forward(mlm_model *m, const mlm_batch *b, const mlm_live *live) {
    mlm_backend *be = m->be;
    mlm_acts *a = m->acts;
    const mlm_model_config *c = &m->lay.cfg;
    int B = b->B, S = b->S, N = B * S, d = c->hidden_size, I = c->intermediate_size;
    float ph = live ? c->hidden_dropout : 0, pa = live ? c->attention_dropout : 0;
    mlm_dropout drop = dropout_at(m, live, ph, MLM_SITE_EMB);
    const char *wpe = (const char *)W(m, MLM_T_WPE, 0) + (size_t)mlm_position_offset(c) * d * be->wgt_size;
    be->embed_fwd(be, a->x[0], a->emb_sum, a->emb_mean, a->emb_rstd, a->ids, NULL, W(m, MLM_T_WTE, 0),
                  wpe, W(m, MLM_T_WTT, 0), W(m, MLM_T_EMB_LN_W, 0), W(m, MLM_T_EMB_LN_B, 0),
                  B, S, d, c->layer_norm_eps, &drop);
    for (int l = 0; l < c->num_layers; l++) {
        be->linear_fwd(be, a->qkv[l], NULL, a->x[l], W(m, MLM_T_QKV_W, l), W(m, MLM_T_QKV_B, l), N, d, 3 * d,
                       MLM_ACT_NONE);
        drop = dropout_at(m, live, pa, MLM_SITE_ATTN_PROBS(l));
        be->attention_fwd(be, a->ctx[l], a->att_saved[l], a->qkv[l], a->lengths, B, S, c->num_heads,
                          d / c->num_heads, &drop);
        be->linear_fwd(be, a->g_a, NULL, a->ctx[l], W(m, MLM_T_ATTN_O_W, l), W(m, MLM_T_ATTN_O_B, l), N, d, d,
                       MLM_ACT_NONE);
        drop = dropout_at(m, live, ph, MLM_SITE_ATTN_OUT(l));
        be->residual_ln_fwd(be, a->x1[l], a->s1[l], a->m1[l], a->r1[l], a->g_a, a->x[l], W(m, MLM_T_LN1_W, l),
                            W(m, MLM_T_LN1_B, l), B, S, d, c->layer_norm_eps, &drop);
        be->linear_fwd(be, a->ffn_act[l], a->ffn_pre[l], a->x1[l], W(m, MLM_T_FFN_IN_W, l),
                       W(m, MLM_T_FFN_IN_B, l), N, d, I, MLM_ACT_GELU);
        be->linear_fwd(be, a->g_a, NULL, a->ffn_act[l], W(m, MLM_T_FFN_OUT_W, l), W(m, MLM_T_FFN_OUT_B, l), N,
                       I, d, MLM_ACT_NONE);
        drop = dropout_at(m, live, ph, MLM_SITE_FFN_OUT(l));
        be->residual_ln_fwd(be, a->x[l + 1], a->s2[l], a->m2[l], a->r2[l], a->g_a, a->x1[l],
                            W(m, MLM_T_LN2_W, l), W(m, MLM_T_LN2_B, l), B, S, d, c->layer_norm_eps, &drop);
    }
}

/* MLM head on the masked rows: a->logits (M rows of ldl) before the loss. */
static void head_forward(mlm_model *m, const mlm_batch *b) {
    mlm_backend *be = m->be;
    mlm_acts *a = m->acts;
    const mlm_model_config *c = &m->lay.cfg;
    int M = b->M, d = c->hidden_size;
    be->gather_rows(be, a->h_in, a->x[c->num_layers], a->rows, M, d);
    be->linear_fwd(be, a->h_act, a->h_pre, a->h_in, W(m, MLM_T_HEAD_W, 0), W(m, MLM_T_HEAD_B, 0), M, d, d,
                   MLM_ACT_GELU);
    be->layernorm_fwd(be, a->h_ln, a->h_mean, a->h_rstd, a->h_act, W(m, MLM_T_HEAD_LN_W, 0),
                      W(m, MLM_T_HEAD_LN_B, 0), M, d, c->layer_norm_eps);
    be->decoder_fwd(be, a->logits, a->h_ln, W(m, MLM_T_WTE, 0), W(m, MLM_T_DEC_B, 0), M, d, c->vocab_size,
                    a->ldl);
}

/* ---------------------------------------------------------------- backward */

/* From dlogits (in a->logits) to the encoder output gradient, returned (N, d). */
static void *head_backward(mlm_model *m, const mlm_batch *b) {
    mlm_backend *be = m->be;
    mlm_acts *a = m->acts;
    const mlm_model_config *c = &m->lay.cfg;
    int M = b->M, N = b->B * b->S, d = c->hidden_size;
    be->decoder_bwd(be, a->g_h1, G(m, MLM_T_WTE, 0), G(m, MLM_T_DEC_B, 0), a->logits, a->h_ln,
                    W(m, MLM_T_WTE, 0), M, d, c->vocab_size, a->ldl);
    be->layernorm_bwd(be, a->g_h2, G(m, MLM_T_HEAD_LN_W, 0), G(m, MLM_T_HEAD_LN_B, 0), a->g_h1, a->h_act,
                      a->h_mean, a->h_rstd, W(m, MLM_T_HEAD_LN_W, 0), M, d);
    be->linear_bwd(be, a->g_h1, G(m, MLM_T_HEAD_W, 0), G(m, MLM_T_HEAD_B, 0), a->g_h2, a->h_in,
                   W(m, MLM_T_HEAD_W, 0), a->h_pre, M, d, d, MLM_ACT_GELU, 0);
    be->scatter_rows(be, a->g_a, a->g_h1, a->rows, M, N, d);
    return a->g_a;
}

/* One layer's backward: dy = d x[l+1] in, returns d x[l] (the other ping-pong buffer). */
static void *layer_backward(mlm_model *m, const mlm_batch *b, int l, void *dy) {
    mlm_backend *be = m->be;
    mlm_acts *a = m->acts;
    const mlm_model_config *c = &m->lay.cfg;
    int B = b->B, S = b->S, N = B * S, d = c->hidden_size, I = c->intermediate_size;
    void *dx = dy == a->g_a ? a->g_b : a->g_a;
    void *d_dense = a->g_c, *d_x1 = a->g_d, *d_ctx = a->g_e;
    mlm_dropout drop = dropout_at(m, a->live, c->hidden_dropout, MLM_SITE_FFN_OUT(l));
    be->residual_ln_bwd(be, d_dense, d_x1, G(m, MLM_T_LN2_W, l), G(m, MLM_T_LN2_B, l), G(m, MLM_T_FFN_OUT_B, l),
                        dy, a->s2[l], a->m2[l], a->r2[l], W(m, MLM_T_LN2_W, l), B, S, d, &drop);
    be->linear_bwd(be, a->g_ffn, G(m, MLM_T_FFN_OUT_W, l), NULL, d_dense, a->ffn_act[l],
                   W(m, MLM_T_FFN_OUT_W, l), NULL, N, I, d, MLM_ACT_NONE, 0);
    be->linear_bwd(be, d_x1, G(m, MLM_T_FFN_IN_W, l), G(m, MLM_T_FFN_IN_B, l), a->g_ffn, a->x1[l],
                   W(m, MLM_T_FFN_IN_W, l), a->ffn_pre[l], N, d, I, MLM_ACT_GELU, 1);
    drop = dropout_at(m, a->live, c->hidden_dropout, MLM_SITE_ATTN_OUT(l));
    be->residual_ln_bwd(be, d_dense, dx, G(m, MLM_T_LN1_W, l), G(m, MLM_T_LN1_B, l), G(m, MLM_T_ATTN_O_B, l),
                        d_x1, a->s1[l], a->m1[l], a->r1[l], W(m, MLM_T_LN1_W, l), B, S, d, &drop);
    be->linear_bwd(be, d_ctx, G(m, MLM_T_ATTN_O_W, l), NULL, d_dense, a->ctx[l],
                   W(m, MLM_T_ATTN_O_W, l), NULL, N, d, d, MLM_ACT_NONE, 0);
    drop = dropout_at(m, a->live, c->attention_dropout, MLM_SITE_ATTN_PROBS(l));
    be->attention_bwd(be, a->g_qkv, d_ctx, a->qkv[l], a->ctx[l], a->att_saved[l], a->lengths, B, S,
                      c->num_heads, d / c->num_heads, &drop);
    be->linear_bwd(be, dx, G(m, MLM_T_QKV_W, l), G(m, MLM_T_QKV_B, l), a->g_qkv, a->x[l], W(m, MLM_T_QKV_W, l),
                   NULL, N, d, 3 * d, MLM_ACT_NONE, 1);
    return dx;
}

/* The ops of a training micro-batch, forward and backward; b->M is the padded
 * row count, and step, seq_base and the loss scale are in a->live. */
typedef struct { mlm_model *m; const mlm_batch *b; } micro_ctx;

static void micro_ops(void *ctx) {
    mlm_model *m = ((micro_ctx *)ctx)->m;
    const mlm_batch *b = ((micro_ctx *)ctx)->b;
    mlm_backend *be = m->be;
    mlm_acts *a = m->acts;
    const mlm_model_config *c = &m->lay.cfg;
    encoder_forward(m, b, a->live);
    head_forward(m, b);
    be->cross_entropy(be, a->logits, a->labels, b->M, c->vocab_size, a->ldl, 0.0f, a->live, m->stats);
    void *dy = head_backward(m, b);
    if (m->grad_hook) m->grad_hook(m->grad_hook_ctx, c->num_layers);
    for (int l = c->num_layers - 1; l >= 0; l--) {
        dy = layer_backward(m, b, l, dy);
        if (m->grad_hook) m->grad_hook(m->grad_hook_ctx, l);
    }
    mlm_dropout drop = dropout_at(m, a->live, c->hidden_dropout, MLM_SITE_EMB);
    float *dwpe = G(m, MLM_T_WPE, 0) + (size_t)mlm_position_offset(c) * c->hidden_size;
    be->embed_bwd(be, G(m, MLM_T_WTE, 0), dwpe, G(m, MLM_T_WTT, 0), G(m, MLM_T_EMB_LN_W, 0),
                  G(m, MLM_T_EMB_LN_B, 0), dy, a->emb_sum, a->emb_mean, a->emb_rstd, a->ids, NULL,
                  W(m, MLM_T_EMB_LN_W, 0), b->B, b->S, c->hidden_size, &drop);
    if (m->grad_hook) m->grad_hook(m->grad_hook_ctx, -1);
}

/* Uploads the micro-batch and its live values, then runs its ops, through the
 * backend's replay when it has one: every argument of micro_ops depends on
 * (B, S, padded M) alone. A micro-batch with the gradient hook armed (the last of
 * a data-parallel step) queues collectives between its ops, so it is not
 * replayed; the others of that step are. */
void mlm_model_step_micro(mlm_model *m, const mlm_batch *b, float loss_scale) {
    mlm_backend *be = m->be;
    if (b->M == 0) return;   // nothing masked: no loss, no gradient
    int M = padded_rows(m, b->M);
    upload_batch(m, b, M);
    mlm_live live = {b->step, b->seq_base, loss_scale, 0};
    be->upload(be, m->acts->live, &live, sizeof live);
    mlm_batch run = *b;
    run.M = M;
    run.step = run.seq_base = 0;   // the ops read them from live
    micro_ctx ctx = {m, &run};
    uint64_t key = (uint64_t)b->B << 42 | (uint64_t)b->S << 21 | (uint64_t)M;
    if (be->replay && !m->grad_hook) be->replay(be, key, micro_ops, &ctx);
    else micro_ops(&ctx);
}

void mlm_model_forward(mlm_model *m, const mlm_batch *b, float *logits_out) {
    mlm_backend *be = m->be;
    mlm_acts *a = m->acts;
    const mlm_model_config *c = &m->lay.cfg;
    if (b->M == 0) return;
    upload_batch(m, b, b->M);
    encoder_forward(m, b, NULL);
    head_forward(m, b);
    if (logits_out) {   // (M, V) fp32 from act rows ldl apart
        int V = c->vocab_size;
        float *rows = a->ldl == V ? logits_out : mlm_xmalloc((size_t)b->M * a->ldl * sizeof(float), "logits");
        be->download_act_as_f32(be, rows, a->logits, (size_t)b->M * a->ldl);
        if (rows != logits_out) {
            for (int i = 0; i < b->M; i++)
                memcpy(logits_out + (size_t)i * V, rows + (size_t)i * a->ldl, (size_t)V * sizeof(float));
            free(rows);
        }
    }
    be->cross_entropy(be, a->logits, a->labels, b->M, c->vocab_size, a->ldl, 0.0f, NULL, m->stats);
}

/* ---------------------------------------------------------------- statistics */

void mlm_model_stats_start(mlm_model *m, float s[4]) {
    m->be->download_start(m->be, s, m->stats, 4 * sizeof(float));
    m->be->zero(m->be, m->stats, 4 * sizeof(float));
}

void mlm_model_take_stats(mlm_model *m, float out[3]) {
    float s[4];
    mlm_model_stats_start(m, s);
    m->be->download_finish(m->be);
    memcpy(out, s, 3 * sizeof(float));
}
