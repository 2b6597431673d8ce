/*
 * What makes a training micro-batch replayable (CUDA graphs, backend.h `replay`),
 * checked on the CPU backend:
 *  - padding the masked rows (row and label -1) to the backend's rows_align changes
 *    neither the loss nor any gradient;
 *  - the ops of micro-batches with the same (B, S, padded M) have the same
 *    arguments, bit for bit, whatever their step, sequence base, loss scale and data:
 *    a recorder backend wraps the CPU backend, notes every op call inside `replay`
 *    and compares each call of a key with the first; and nothing inside `replay`
 *    waits for the device (download, sync, alloc, free).
 * The recorder is itself checked: it catches a changed argument.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/backend.h"
#include "mlm/config.h"
#include "mlm/model.h"

/* ---------------------------------------------------------------- the recorder */

enum { MAX_CALLS = 512, MAX_WORDS = 32 };

typedef struct {
    const char *op;
    int n;
    uint64_t w[MAX_WORDS];
} call;

typedef struct {
    mlm_backend *inner;
    int inside;             // within replay's fn
    uint64_t key;
    int have_ref, replays, compared, forbidden;
    call ref[MAX_CALLS], now[MAX_CALLS];
    int nref, nnow;
    char mismatch[256];     // the first difference, or ""
} recorder;

static recorder *rec_of(mlm_backend *be) { return (recorder *)be->impl; }

static void note(mlm_backend *be, const char *op, const uint64_t *w, int n) {
    recorder *r = rec_of(be);
    if (!r->inside) return;
    cr_assert_lt(r->nnow, MAX_CALLS);
    cr_assert_leq(n, MAX_WORDS);
    call *c = &r->now[r->nnow++];
    c->op = op;
    c->n = n;
    memcpy(c->w, w, n * sizeof(uint64_t));
}

static uint64_t P(const void *p) { return (uint64_t)(uintptr_t)p; }
static uint64_t FB(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
/* The words of a dropout argument, by value as a kernel would receive it. */
#define DROP(d) (d) ? (d)->threshold : 0, (d) ? FB((d)->scale) : 0, (d) ? (d)->seed : 0, (d) ? (d)->step : 0, \
                (d) ? (d)->site : 0, (d) ? (d)->seq_base : 0, (d) ? P((d)->live) : 0
#define NOTE(op, ...)                                                  \
    do {                                                               \
        const uint64_t w_[] = {__VA_ARGS__};                           \
        note(be, op, w_, (int)(sizeof w_ / sizeof w_[0]));             \
    } while (0)
#define IN rec_of(be)->inner

static void forbid(mlm_backend *be, const char *op) {
    recorder *r = rec_of(be);
    if (r->inside && !r->forbidden++) snprintf(r->mismatch, sizeof r->mismatch, "%s inside replay", op);
}

static void *w_alloc(mlm_backend *be, size_t bytes, const char *what) {
    forbid(be, "alloc");
    return IN->alloc(IN, bytes, what);
}
static void w_free(mlm_backend *be, void *p) {
    forbid(be, "free");
    IN->free(IN, p);
}
static void w_upload(mlm_backend *be, void *dst, const void *src, size_t bytes) {
    NOTE("upload", P(dst), bytes);   // a host source is read at record time only
    IN->upload(IN, dst, src, bytes);
}
static void w_download(mlm_backend *be, void *dst, const void *src, size_t bytes) {
    forbid(be, "download");
    IN->download(IN, dst, src, bytes);
}
static void w_zero(mlm_backend *be, void *p, size_t bytes) {
    NOTE("zero", P(p), bytes);
    IN->zero(IN, p, bytes);
}
static void w_sync(mlm_backend *be) {
    forbid(be, "sync");
    IN->sync(IN);
}
static size_t w_mem_free(mlm_backend *be) {
    forbid(be, "mem_free");
    return IN->mem_free ? IN->mem_free(IN) : 0;
}
static void w_upload_f32(mlm_backend *be, void *dst, const float *src, size_t n) {
    forbid(be, "upload_f32_as_act");
    IN->upload_f32_as_act(IN, dst, src, n);
}
static void w_download_f32(mlm_backend *be, float *dst, const void *src, size_t n) {
    forbid(be, "download_act_as_f32");
    IN->download_act_as_f32(IN, dst, src, n);
}
static void w_master(mlm_backend *be, void *dst, const float *master, size_t n) {
    NOTE("copy_master_to_wgt", P(dst), P(master), n);
    IN->copy_master_to_wgt(IN, dst, master, n);
}
static void w_embed_fwd(mlm_backend *be, void *out, void *sum, float *mean, float *rstd, const int32_t *ids,
                        const int32_t *types, const void *wte, const void *wpe, const void *wtt, const void *ln_w,
                        const void *ln_b, int B, int S, int d, float eps, const mlm_dropout *drop) {
    NOTE("embed_fwd", P(out), P(sum), P(mean), P(rstd), P(ids), P(types), P(wte), P(wpe), P(wtt), P(ln_w),
         P(ln_b), B, S, d, FB(eps), DROP(drop));
    IN->embed_fwd(IN, out, sum, mean, rstd, ids, types, wte, wpe, wtt, ln_w, ln_b, B, S, d, eps, drop);
}
static void w_embed_bwd(mlm_backend *be, float *dwte, float *dwpe, float *dwtt, float *dln_w, float *dln_b,
                        const void *dout, const void *sum, const float *mean, const float *rstd,
                        const int32_t *ids, const int32_t *types, const void *ln_w, int B, int S, int d,
                        const mlm_dropout *drop) {
    NOTE("embed_bwd", P(dwte), P(dwpe), P(dwtt), P(dln_w), P(dln_b), P(dout), P(sum), P(mean), P(rstd), P(ids),
         P(types), P(ln_w), B, S, d, DROP(drop));
    IN->embed_bwd(IN, dwte, dwpe, dwtt, dln_w, dln_b, dout, sum, mean, rstd, ids, types, ln_w, B, S, d, drop);
}
static void w_linear_fwd(mlm_backend *be, void *out, void *pre, const void *in, const void *W, const void *b,
                         int N, int I, int O, mlm_act act) {
    NOTE("linear_fwd", P(out), P(pre), P(in), P(W), P(b), N, I, O, act);
    IN->linear_fwd(IN, out, pre, in, W, b, N, I, O, act);
}
static void w_linear_bwd(mlm_backend *be, void *din, float *dW, float *db, void *dout, const void *in,
                         const void *W, const void *pre, int N, int I, int O, mlm_act act, int acc) {
    NOTE("linear_bwd", P(din), P(dW), P(db), P(dout), P(in), P(W), P(pre), N, I, O, act, acc);
    IN->linear_bwd(IN, din, dW, db, dout, in, W, pre, N, I, O, act, acc);
}
static void w_res_fwd(mlm_backend *be, void *out, void *s, float *mean, float *rstd, const void *x,
                      const void *res, const void *ln_w, const void *ln_b, int B, int S, int d, float eps,
                      const mlm_dropout *drop) {
    NOTE("residual_ln_fwd", P(out), P(s), P(mean), P(rstd), P(x), P(res), P(ln_w), P(ln_b), B, S, d, FB(eps),
         DROP(drop));
    IN->residual_ln_fwd(IN, out, s, mean, rstd, x, res, ln_w, ln_b, B, S, d, eps, drop);
}
static void w_res_bwd(mlm_backend *be, void *dx, void *dres, float *dln_w, float *dln_b, const void *dout,
                      const void *s, const float *mean, const float *rstd, const void *ln_w, int B, int S, int d,
                      const mlm_dropout *drop) {
    NOTE("residual_ln_bwd", P(dx), P(dres), P(dln_w), P(dln_b), P(dout), P(s), P(mean), P(rstd), P(ln_w), B, S,
         d, DROP(drop));
    IN->residual_ln_bwd(IN, dx, dres, dln_w, dln_b, dout, s, mean, rstd, ln_w, B, S, d, drop);
}
static void w_ln_fwd(mlm_backend *be, void *out, float *mean, float *rstd, const void *x, const void *ln_w,
                     const void *ln_b, int M, int d, float eps) {
    NOTE("layernorm_fwd", P(out), P(mean), P(rstd), P(x), P(ln_w), P(ln_b), M, d, FB(eps));
    IN->layernorm_fwd(IN, out, mean, rstd, x, ln_w, ln_b, M, d, eps);
}
static void w_ln_bwd(mlm_backend *be, void *dx, float *dln_w, float *dln_b, const void *dout, const void *x,
                     const float *mean, const float *rstd, const void *ln_w, int M, int d) {
    NOTE("layernorm_bwd", P(dx), P(dln_w), P(dln_b), P(dout), P(x), P(mean), P(rstd), P(ln_w), M, d);
    IN->layernorm_bwd(IN, dx, dln_w, dln_b, dout, x, mean, rstd, ln_w, M, d);
}
static size_t w_att_saved(mlm_backend *be, int B, int S, int H) { return IN->attention_saved_bytes(IN, B, S, H); }
static void w_att_fwd(mlm_backend *be, void *out, void *saved, const void *qkv, const int32_t *lengths, int B,
                      int S, int H, int dh, const mlm_dropout *drop) {
    NOTE("attention_fwd", P(out), P(saved), P(qkv), P(lengths), B, S, H, dh, DROP(drop));
    IN->attention_fwd(IN, out, saved, qkv, lengths, B, S, H, dh, drop);
}
static void w_att_bwd(mlm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                      const void *saved, const int32_t *lengths, int B, int S, int H, int dh,
                      const mlm_dropout *drop) {
    NOTE("attention_bwd", P(dqkv), P(dout), P(qkv), P(out), P(saved), P(lengths), B, S, H, dh, DROP(drop));
    IN->attention_bwd(IN, dqkv, dout, qkv, out, saved, lengths, B, S, H, dh, drop);
}
static void w_gather(mlm_backend *be, void *out, const void *in, const int32_t *rows, int M, int d) {
    NOTE("gather_rows", P(out), P(in), P(rows), M, d);
    IN->gather_rows(IN, out, in, rows, M, d);
}
static void w_scatter(mlm_backend *be, void *dfull, const void *drows, const int32_t *rows, int M, int N, int d) {
    NOTE("scatter_rows", P(dfull), P(drows), P(rows), M, N, d);
    IN->scatter_rows(IN, dfull, drows, rows, M, N, d);
}
static void w_dec_fwd(mlm_backend *be, float *logits, const void *in, const void *W, const void *b, int M, int d,
                      int V) {
    NOTE("decoder_fwd", P(logits), P(in), P(W), P(b), M, d, V);
    IN->decoder_fwd(IN, logits, in, W, b, M, d, V);
}
static void w_dec_bwd(mlm_backend *be, void *din, float *dW, float *db, const float *dlogits, const void *in,
                      const void *W, int M, int d, int V) {
    NOTE("decoder_bwd", P(din), P(dW), P(db), P(dlogits), P(in), P(W), M, d, V);
    IN->decoder_bwd(IN, din, dW, db, dlogits, in, W, M, d, V);
}
static void w_ce(mlm_backend *be, float *logits, const int32_t *labels, int M, int V, float scale,
                 const mlm_live *live, float *stats) {
    NOTE("cross_entropy", P(logits), P(labels), M, V, FB(scale), P(live), P(stats));
    IN->cross_entropy(IN, logits, labels, M, V, scale, live, stats);
}
static void w_sumsq(mlm_backend *be, float *out, const float *g, size_t n) {
    NOTE("sum_squares", P(out), P(g), n);
    IN->sum_squares(IN, out, g, n);
}
static void w_adamw(mlm_backend *be, float *master, void *wgt, const float *g, float *m, float *v, size_t n,
                    const mlm_adamw_args *a, const float *gnorm_sq) {
    NOTE("adamw", P(master), P(wgt), P(g), P(m), P(v), n, FB(a->lr), a->step, P(gnorm_sq));
    IN->adamw(IN, master, wgt, g, m, v, n, a, gnorm_sq);
}

/* The replay of a recording backend: runs fn, noting its ops, and compares them
 * with those of the first call of the same key. */
static void w_replay(mlm_backend *be, uint64_t key, void (*fn)(void *), void *ctx) {
    recorder *r = rec_of(be);
    cr_assert(!r->have_ref || r->key == key, "these tests use one key");
    r->inside = 1;
    r->nnow = 0;
    fn(ctx);
    r->inside = 0;
    r->replays++;
    if (!r->have_ref) {
        memcpy(r->ref, r->now, sizeof r->ref);
        r->nref = r->nnow;
        r->have_ref = 1;
        r->key = key;
        return;
    }
    r->compared++;
    if (r->mismatch[0]) return;
    if (r->nnow != r->nref) {
        snprintf(r->mismatch, sizeof r->mismatch, "%d op calls, the first call of the key made %d", r->nnow, r->nref);
        return;
    }
    for (int i = 0; i < r->nnow; i++) {
        const call *a = &r->ref[i], *b = &r->now[i];
        if (strcmp(a->op, b->op) != 0 || a->n != b->n) {
            snprintf(r->mismatch, sizeof r->mismatch, "call %d: %s, first time %s", i, b->op, a->op);
            return;
        }
        for (int k = 0; k < a->n; k++)
            if (a->w[k] != b->w[k]) {
                snprintf(r->mismatch, sizeof r->mismatch, "call %d (%s): argument word %d is %llu, first time %llu",
                         i, a->op, k, (unsigned long long)b->w[k], (unsigned long long)a->w[k]);
                return;
            }
    }
}

static void w_destroy(mlm_backend *be) {
    recorder *r = rec_of(be);
    r->inner->destroy(r->inner);
    free(r);
    free(be);
}

static mlm_backend *recorder_new(int rows_align) {
    recorder *r = calloc(1, sizeof *r);
    r->inner = mlm_backend_cpu(2);
    mlm_backend *be = calloc(1, sizeof *be);
    *be = (mlm_backend){
        .name = "recorder", .act_size = r->inner->act_size, .wgt_size = r->inner->wgt_size, .impl = r,
        .alloc = w_alloc, .free = w_free, .upload = w_upload, .download = w_download, .zero = w_zero,
        .sync = w_sync, .mem_free = w_mem_free, .upload_f32_as_act = w_upload_f32,
        .download_act_as_f32 = w_download_f32, .copy_master_to_wgt = w_master, .embed_fwd = w_embed_fwd,
        .embed_bwd = w_embed_bwd, .linear_fwd = w_linear_fwd, .linear_bwd = w_linear_bwd,
        .residual_ln_fwd = w_res_fwd, .residual_ln_bwd = w_res_bwd, .layernorm_fwd = w_ln_fwd,
        .layernorm_bwd = w_ln_bwd, .attention_saved_bytes = w_att_saved, .attention_fwd = w_att_fwd,
        .attention_bwd = w_att_bwd, .gather_rows = w_gather, .scatter_rows = w_scatter,
        .decoder_fwd = w_dec_fwd, .decoder_bwd = w_dec_bwd, .cross_entropy = w_ce, .sum_squares = w_sumsq,
        .adamw = w_adamw, .replay = w_replay, .rows_align = rows_align, .destroy = w_destroy,
    };
    return be;
}

/* ---------------------------------------------------------------- a small model */

enum { B = 4, S = 16, MAX_M = 24 };

typedef struct {
    int32_t ids[B * S], lengths[B], rows[MAX_M], labels[MAX_M];
    mlm_batch batch;
} micro;

static mlm_model_config tiny_config(void) {
    mlm_config c;
    mlm_config_defaults(&c);
    mlm_model_config m = c.model;
    m.vocab_size = 50;
    m.hidden_size = 16;
    m.num_layers = 2;
    m.num_heads = 2;
    m.intermediate_size = 32;
    m.max_position = S;
    m.hidden_dropout = 0.1f;
    m.attention_dropout = 0.1f;
    return m;
}

/* A micro-batch with M masked rows drawn from rnd; lengths vary, some < S. */
static void make_micro(micro *mb, int M, uint32_t step, uint32_t seq_base, unsigned rnd) {
    srand(rnd);
    for (int b = 0; b < B; b++) mb->lengths[b] = S - (b % 2) * (1 + rand() % 6);
    for (int i = 0; i < B * S; i++) mb->ids[i] = 5 + rand() % 45;
    int taken[B * S] = {0};
    for (int i = 0; i < M; i++) {
        int r;
        do {
            int b = rand() % B;
            r = b * S + 1 + rand() % (mb->lengths[b] - 1);
        } while (taken[r]);
        taken[r] = 1;
        mb->rows[i] = r;
        mb->labels[i] = mb->ids[r];
        mb->ids[r] = 4;   // [MASK]
    }
    mb->batch = (mlm_batch){B, S, M, mb->ids, NULL, mb->lengths, mb->rows, mb->labels, seq_base, step};
}

/* Gradients after the micro-batches (host copy, caller frees) and the loss sum. */
static float *run_micro(mlm_backend *be, micro *mbs, int n, const float *scales, float *loss) {
    mlm_model_config cfg = tiny_config();
    mlm_model m;
    mlm_model_create(&m, &cfg, be, B, S, MAX_M, 7);
    mlm_model_init_params(&m, 7);
    for (int i = 0; i < n; i++) mlm_model_step_micro(&m, &mbs[i].batch, scales[i]);
    size_t np = m.lay.num_params;
    float *g = malloc(np * sizeof(float)), stats[4];
    be->download(be, g, m.grads, np * sizeof(float));
    be->download(be, stats, m.stats, sizeof stats);
    *loss = stats[0];
    mlm_model_destroy(&m);
    return g;
}

static size_t num_params(void) {
    mlm_model_config cfg = tiny_config();
    mlm_layout lay;
    mlm_layout_init(&lay, &cfg);
    return lay.num_params;
}

static void expect_same_grads(const float *a, const float *b, size_t n, double tol) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(a[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    cr_assert_gt(scale, 0, "no gradient at all");
    cr_expect_leq(worst, tol * scale, "max gradient difference %g (largest gradient %g)", worst, scale);
}

/* ---------------------------------------------------------------- tests */

Test(replay, padding_rows_change_neither_loss_nor_gradients) {
    micro mbs[2];
    make_micro(&mbs[0], 9, 3, 0, 1);
    make_micro(&mbs[1], 13, 3, B, 2);
    float scales[2] = {1.0f / 22, 1.0f / 22}, loss_plain, loss_padded;
    mlm_backend *plain = mlm_backend_cpu(2), *padded = mlm_backend_cpu(2);
    padded->rows_align = 8;   // 9 -> 16 and 13 -> 16 rows, 10 padding rows in all
    float *g1 = run_micro(plain, mbs, 2, scales, &loss_plain);
    float *g2 = run_micro(padded, mbs, 2, scales, &loss_padded);
    cr_expect_float_eq(loss_plain, loss_padded, 1e-6f * fabsf(loss_plain), "loss %g padded %g", loss_plain,
                       loss_padded);
    expect_same_grads(g1, g2, num_params(), 1e-5);
    free(g1);
    free(g2);
    plain->destroy(plain);
    padded->destroy(padded);
}

Test(replay, a_micro_batch_replays_with_the_same_arguments) {
    micro mbs[3];
    make_micro(&mbs[0], 9, 1, 0, 11);    // steps, bases, scales and M differ;
    make_micro(&mbs[1], 14, 1, B, 12);   // padded to 16 rows they share a key
    make_micro(&mbs[2], 16, 2, 0, 13);
    float scales[3] = {1.0f / 23, 1.0f / 23, 1.0f / 16}, loss_rec, loss_cpu;
    mlm_backend *rb = recorder_new(8), *cpu = mlm_backend_cpu(2);
    cpu->rows_align = 8;
    recorder *r = rec_of(rb);
    float *g_rec = run_micro(rb, mbs, 3, scales, &loss_rec);
    cr_expect_eq(r->replays, 3);
    cr_expect_eq(r->compared, 2);
    cr_expect_gt(r->nref, 20, "only %d op calls recorded", r->nref);
    cr_expect_eq(r->forbidden, 0, "%s", r->mismatch);
    cr_expect_str_empty(r->mismatch, "a recorded micro-batch would replay wrong: %s", r->mismatch);
    // the recorder only watches: the numbers are the CPU backend's
    float *g_cpu = run_micro(cpu, mbs, 3, scales, &loss_cpu);
    cr_expect_eq(loss_rec, loss_cpu);
    cr_expect_eq(memcmp(g_rec, g_cpu, num_params() * sizeof(float)), 0);
    free(g_rec);
    free(g_cpu);
    rb->destroy(rb);
    cpu->destroy(cpu);
}

/* The recorder catches an argument that changes between calls of a key. */
typedef struct { mlm_backend *be; float *buf; int n; } poke;
static void poke_ops(void *ctx) {
    poke *p = ctx;
    p->be->zero(p->be, p->buf, (size_t)p->n * sizeof(float));
}

Test(replay, the_recorder_sees_a_changed_argument) {
    mlm_backend *rb = recorder_new(1);
    float *buf = rb->alloc(rb, 64 * sizeof(float), "test buffer");
    poke p = {rb, buf, 8};
    rb->replay(rb, 1, poke_ops, &p);
    rb->replay(rb, 1, poke_ops, &p);
    cr_expect_str_empty(rec_of(rb)->mismatch);
    p.n = 9;
    rb->replay(rb, 1, poke_ops, &p);
    cr_expect(strstr(rec_of(rb)->mismatch, "call 0 (zero): argument word 1"), "%s", rec_of(rb)->mismatch);
    rb->free(rb, buf);
    rb->destroy(rb);
}

Test(replay, padding_rows_in_the_ops) {
    mlm_backend *be = mlm_backend_cpu(1);
    enum { N = 3, D = 4, V = 5 };
    float in[N * D], out[3 * D], full[N * D];
    for (int i = 0; i < N * D; i++) in[i] = (float)(i + 1);
    int32_t rows[3] = {2, -1, 0};
    be->gather_rows(be, out, in, rows, 3, D);
    for (int c = 0; c < D; c++) {
        cr_expect_eq(out[c], in[2 * D + c]);
        cr_expect_eq(out[D + c], 0.0f, "a padding row gathers zeros");
        cr_expect_eq(out[2 * D + c], in[c]);
    }
    be->scatter_rows(be, full, out, rows, 3, N, D);
    for (int c = 0; c < D; c++) {
        cr_expect_eq(full[c], in[c]);
        cr_expect_eq(full[D + c], 0.0f, "row 1 is not scattered to");
        cr_expect_eq(full[2 * D + c], in[2 * D + c]);
    }
    float logits[2 * V] = {1, 2, 3, 4, 5, 5, 4, 3, 2, 1}, stats[2] = {0, 0};
    int32_t labels[2] = {-1, 0};
    mlm_live live = {0, 0, 0.5f, 0};
    be->cross_entropy(be, logits, labels, 2, V, 123.0f, &live, stats);
    double z = 0;
    for (int j = 0; j < V; j++) z += exp(5.0 - j - 5.0);
    for (int j = 0; j < V; j++) {
        cr_expect_eq(logits[j], 0.0f, "a padding row has no gradient");
        double p = exp(-(double)j) / z;
        cr_expect_float_eq(logits[V + j], 0.5 * (p - (j == 0)), 1e-6, "the scale comes from live");
    }
    cr_expect_float_eq(stats[0], log(z), 1e-5, "only the real row has a loss");
    cr_expect_eq(stats[1], 1.0f, "only the real row is counted");
    be->destroy(be);
}
