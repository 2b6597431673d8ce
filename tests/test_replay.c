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
 * The recorder is itself checked: it catches a changed argument. And the op
 * profiler (profile.h), a wrapper too, sees every op of a step and changes nothing.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/backend.h"
#include "mlm/backend_wrap.h"
#include "mlm/config.h"
#include "mlm/log.h"
#include "mlm/model.h"
#include "mlm/optimizer.h"
#include "mlm/profile.h"

/* ---------------------------------------------------------------- the recorder */

enum { MAX_CALLS = 512 };

typedef struct {
    const char *op;
    int n;
    uint64_t w[MLM_WRAP_MAX_ARGS];
} call;

typedef struct {
    int inside;             // within replay's fn
    uint64_t key;
    int have_ref, replays, compared, forbidden;
    call ref[MAX_CALLS], now[MAX_CALLS];
    int nref, nnow;
    char mismatch[256];     // the first difference, or ""
} recorder;

static void rec_before(void *ctx, const char *op, unsigned flags, const char *shape, const uint64_t *w, int n) {
    recorder *r = ctx;
    if (!r->inside) return;
    // ops that wait for the device or allocate: never inside a replay
    if ((flags & MLM_OP_WAITS) && !r->forbidden++) snprintf(r->mismatch, sizeof r->mismatch, "%s inside replay", op);
    cr_assert_lt(r->nnow, MAX_CALLS);
    cr_assert_leq(n, MLM_WRAP_MAX_ARGS);
    call *c = &r->now[r->nnow++];
    c->op = op;
    c->n = n;
    memcpy(c->w, w, n * sizeof(uint64_t));
}

/* Runs fn, noting its ops, and compares them with those of the key's first call. */
static void rec_replay(void *ctx, mlm_backend *be, uint64_t key, void (*fn)(void *), void *fn_ctx) {
    recorder *r = ctx;
    cr_assert(!r->have_ref || r->key == key, "these tests use one key");
    r->inside = 1;
    r->nnow = 0;
    fn(fn_ctx);
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

/* A CPU backend behind a recorder (*out; freed by the caller after destroy). */
static mlm_backend *recorder_new(int rows_align, recorder **out) {
    recorder *r = calloc(1, sizeof *r);
    *out = r;
    mlm_wrap_hooks h = {.ctx = r, .before = rec_before, .replay = rec_replay, .rows_align = rows_align};
    return mlm_backend_wrap(mlm_backend_cpu(2), &h);
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
    recorder *r;
    mlm_backend *rb = recorder_new(8, &r), *cpu = mlm_backend_cpu(2);
    cpu->rows_align = 8;
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
    free(r);
}

/* The recorder catches an argument that changes between calls of a key. */
typedef struct { mlm_backend *be; float *buf; int n; } poke;
static void poke_ops(void *ctx) {
    poke *p = ctx;
    p->be->zero(p->be, p->buf, (size_t)p->n * sizeof(float));
}

Test(replay, the_recorder_sees_a_changed_argument) {
    recorder *r;
    mlm_backend *rb = recorder_new(1, &r);
    float *buf = rb->alloc(rb, 64 * sizeof(float), "test buffer");
    poke p = {rb, buf, 8};
    rb->replay(rb, 1, poke_ops, &p);
    rb->replay(rb, 1, poke_ops, &p);
    cr_expect_str_empty(r->mismatch);
    p.n = 9;
    rb->replay(rb, 1, poke_ops, &p);
    cr_expect(strstr(r->mismatch, "call 0 (zero): argument word 1"), "%s", r->mismatch);
    rb->free(rb, buf);
    rb->destroy(rb);
    free(r);
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
    be->cross_entropy(be, logits, labels, 2, V, V, 123.0f, &live, stats);
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

/* The profiler sees every op of the micro-batches, as often as the model calls it,
 * and its times add up to no more than the wall time. */
Test(replay, the_profiler_sees_every_op) {
    micro mbs[2];
    make_micro(&mbs[0], 9, 1, 0, 21);
    make_micro(&mbs[1], 12, 1, B, 22);
    float scales[2] = {1.0f / 21, 1.0f / 21}, loss_prof, loss_cpu;
    mlm_profile *prof;
    mlm_backend *pb = mlm_profile_wrap(mlm_backend_cpu(2), &prof), *cpu = mlm_backend_cpu(2);
    cr_expect_null(pb->replay, "under the profiler every op must be seen");
    double t0 = mlm_now_s();
    float *g_prof = run_micro(pb, mbs, 2, scales, &loss_prof);
    double wall = mlm_now_s() - t0;
    const mlm_model_config cfg = tiny_config();
    const struct { const char *op; long per_micro; } want[] = {
        {"embed_fwd", 1}, {"embed_bwd", 1}, {"attention_fwd", cfg.num_layers}, {"attention_bwd", cfg.num_layers},
        {"linear_fwd", 4 * cfg.num_layers + 1}, {"linear_bwd", 4 * cfg.num_layers + 1},
        {"residual_ln_fwd", 2 * cfg.num_layers}, {"residual_ln_bwd", 2 * cfg.num_layers}, {"layernorm_fwd", 1},
        {"layernorm_bwd", 1}, {"gather_rows", 1}, {"scatter_rows", 1}, {"decoder_fwd", 1}, {"decoder_bwd", 1},
        {"cross_entropy", 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        long calls;
        double secs;
        mlm_profile_op(prof, want[i].op, &calls, &secs);
        cr_expect_eq(calls, 2 * want[i].per_micro, "%s: %ld calls, want %ld", want[i].op, calls, 2 * want[i].per_micro);
        cr_expect_geq(secs, 0.0);
    }
    double total = mlm_profile_seconds(prof);
    cr_expect_gt(total, 0.0);
    cr_expect_leq(total, wall, "ops took %g s of a %g s run", total, wall);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    mlm_profile_print(prof, f, 2, 50);
    fclose(f);
    cr_expect(strstr(text, "linear_fwd") && strstr(text, "N=64 I=16 O=48 act=0"), "%s", text);
    free(text);
    float *g_cpu = run_micro(cpu, mbs, 2, scales, &loss_cpu);   // the profiler only watches
    cr_expect_eq(loss_prof, loss_cpu);
    cr_expect_eq(memcmp(g_prof, g_cpu, num_params() * sizeof(float)), 0);
    free(g_prof);
    free(g_cpu);
    pb->destroy(pb);
    cpu->destroy(cpu);
    mlm_profile_free(prof);
}

/* The master weights and AdamW moments after two whole steps (micro-batches, grad
 * norm, clipping, AdamW, zeroed gradients) on be, as one host buffer (caller frees). */
static float *run_steps(mlm_backend *be, micro *mbs, const float *scales) {
    mlm_model_config cfg = tiny_config();
    mlm_model m;
    mlm_optim_config o = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-6f, .weight_decay = 0.01f,
                          .grad_clip = 0.5f};
    mlm_model_create(&m, &cfg, be, B, S, MAX_M, 7);
    mlm_model_init_params(&m, 7);
    for (int step = 1; step <= 2; step++) {
        mlm_model_step_micro(&m, &mbs[step - 1].batch, scales[step - 1]);
        mlm_optim_step(&m, &o, step, o.lr);
    }
    size_t np = m.lay.num_params;
    float *out = malloc(3 * np * sizeof(float));
    be->download(be, out, m.master, np * sizeof(float));
    be->download(be, out + np, m.m, np * sizeof(float));
    be->download(be, out + 2 * np, m.v, np * sizeof(float));
    mlm_model_destroy(&m);
    return out;
}

/* The wrapper made from the op list passes every op through unchanged, the
 * optimizer's and the memory ops too: two steps under the profiler end with the
 * same bits as on the plain CPU backend. */
Test(replay, the_wrapper_changes_nothing) {
    micro mbs[2];
    make_micro(&mbs[0], 10, 1, 0, 31);
    make_micro(&mbs[1], 12, 2, 0, 32);
    float scales[2] = {1.0f / 10, 1.0f / 12};
    mlm_profile *prof;
    mlm_backend *pb = mlm_profile_wrap(mlm_backend_cpu(2), &prof), *cpu = mlm_backend_cpu(2);
    float *wrapped = run_steps(pb, mbs, scales), *plain = run_steps(cpu, mbs, scales);
    size_t n = 3 * num_params();
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += memcmp(&wrapped[i], &plain[i], sizeof(float)) != 0;
    cr_expect_eq(differ, 0, "%zu of %zu weights and moments differ under the wrapper", differ, n);
    long calls;
    double secs;
    mlm_profile_op(prof, "adamw", &calls, &secs);
    cr_expect_eq(calls, 4, "adamw: %ld calls, want 2 per step (decayed, not decayed)", calls);
    mlm_profile_op(prof, "sum_squares", &calls, &secs);
    cr_expect_eq(calls, 2);
    mlm_profile_op(prof, "alloc", &calls, &secs);
    cr_expect_eq(calls, 0, "alloc does no work of a step: the profiler leaves it out");
    free(wrapped);
    free(plain);
    pb->destroy(pb);
    cpu->destroy(cpu);
    mlm_profile_free(prof);
}
