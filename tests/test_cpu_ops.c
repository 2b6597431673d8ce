/*
 * The CPU backend op by op (src/host/cpu/): every forward against a naive
 * double-precision reference written here, every backward against central finite
 * differences of L = sum(out * R), Philox dropout statistics and determinism,
 * gradient accumulation semantics, AdamW against a scalar torch.optim.AdamW
 * reference with clip_grad_norm_, the bad-label exit of cross-entropy, and the
 * table itself: every op of backend_ops.def filled in, an empty slot refused.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/backend.h"
#include "mlm/philox.h"
#include "lcg.h"

static mlm_backend *be;

/* ---- buffers freed after each test ---- */

enum { MAX_BUFS = 256 };
static void *bufs[MAX_BUFS];
static int nbufs;

static void *tmp(size_t bytes) {
    cr_assert(nbufs < MAX_BUFS);
    return bufs[nbufs++] = calloc(1, bytes ? bytes : 1);
}
static float *fbuf(size_t n) { return tmp(n * sizeof(float)); }
static double *dbuf(size_t n) { return tmp(n * sizeof(double)); }
static int32_t *ibuf(size_t n) { return tmp(n * sizeof(int32_t)); }

static void setup(void) { be = mlm_backend_cpu(2); }
static void teardown(void) {
    while (nbufs) free(bufs[--nbufs]);
    be->destroy(be);
}
TestSuite(cpu_ops, .init = setup, .fini = teardown);

/* ---- random inputs (fixed seeds) ---- */

static uint64_t rng = 1;
static float *rand_buf(size_t n, float center, float spread) {
    float *x = fbuf(n);
    for (size_t i = 0; i < n; i++) x[i] = center + spread * lcg_uniform(&rng);
    return x;
}
static int32_t *rand_ints(size_t n, int hi) {
    int32_t *x = ibuf(n);
    for (size_t i = 0; i < n; i++) x[i] = (int32_t)(lcg_next(&rng) % (uint32_t)hi);
    return x;
}

/* ---- comparisons ---- */

/* max |a - ref| / max |ref|. */
static double rel_err(const float *a, const double *ref, size_t n) {
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - ref[i]));
        den = fmax(den, fabs(ref[i]));
    }
    return num / den;
}
#define expect_close(a, ref, n, tol, what)                                          \
    do {                                                                            \
        double e_ = rel_err(a, ref, n);                                             \
        cr_expect(e_ < (tol), "%s: relative error %.3g >= %.3g", what, e_, (double)(tol)); \
    } while (0)

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* ---- references ---- */

static mlm_dropout make_drop(float p, uint32_t site) {
    return (mlm_dropout){.threshold = (uint32_t)(p * 4294967296.0), .scale = 1.0f / (1.0f - p),
                         .seed = 0x1234abcdull, .step = 7, .site = site, .seq_base = 3};
}
/* keep * scale of element e of sequence b, straight from mlm_philox_word. */
static double ref_keep(const mlm_dropout *d, int b, uint32_t e) {
    if (!d || !d->threshold) return 1.0;
    return mlm_philox_word(d->seed, d->step, d->seq_base + (uint32_t)b, d->site, e) >= d->threshold
               ? d->scale : 0.0;
}
/* y = LayerNorm(x) * w + b over d, biased variance; returns mean, rstd. */
static void ref_ln(double *y, double *mean, double *rstd, const double *x, const float *w,
                   const float *b, int d, double eps) {
    double mu = 0, var = 0;
    for (int c = 0; c < d; c++) mu += x[c] / d;
    for (int c = 0; c < d; c++) var += (x[c] - mu) * (x[c] - mu) / d;
    *mean = mu;
    *rstd = 1.0 / sqrt(var + eps);
    for (int c = 0; c < d; c++) y[c] = (x[c] - mu) * *rstd * w[c] + b[c];
}
/* y (N, O) = act(x (N, I) W^T (O, I) + b); pre gets the value before act. */
static void ref_linear(double *y, double *pre, const float *x, const float *W, const float *b,
                       int N, int I, int O, mlm_act act) {
    for (int r = 0; r < N; r++)
        for (int o = 0; o < O; o++) {
            double s = b ? b[o] : 0;
            for (int i = 0; i < I; i++) s += (double)x[r * I + i] * W[o * I + i];
            pre[r * O + o] = s;
            y[r * O + o] = act == MLM_ACT_GELU ? 0.5 * s * (1 + erf(s / sqrt(2.0))) : s;
        }
}

/* ---- finite differences: central, fp32 forward, loss summed in double ---- */

typedef double (*loss_fn)(void *ctx);
typedef struct {
    const char *name;
    float *x;             // input perturbed in place
    const float *grad;    // analytic dL/dx
    size_t n;
} grad_check;

static void check_grads(loss_fn loss, void *ctx, const grad_check *checks, int count) {
    const float h = 1e-2f;
    for (int k = 0; k < count; k++) {
        const grad_check *g = &checks[k];
        double *num = dbuf(g->n);
        for (size_t i = 0; i < g->n; i++) {
            float x0 = g->x[i];
            g->x[i] = x0 + h;
            double lp = loss(ctx);
            g->x[i] = x0 - h;
            double lm = loss(ctx);
            g->x[i] = x0;
            num[i] = (lp - lm) / (2.0 * h);
        }
        double e = rel_err(g->grad, num, g->n);
        cr_expect(e < 1e-2, "gradient of %s: relative error %.3g vs finite differences", g->name, e);
    }
}

/* ================= forward against double references ================= */

Test(cpu_ops, embed_fwd) {
    rng = 11;
    int B = 2, S = 5, d = 16, V = 11, P = 8, T = 2, N = B * S;
    int32_t *ids = rand_ints(N, V), *types = rand_ints(N, T);
    float *wte = rand_buf(V * d, 0, 1), *wpe = rand_buf(P * d, 0, 1), *wtt = rand_buf(T * d, 0, 1);
    float *lw = rand_buf(d, 1, 0.2f), *lb = rand_buf(d, 0, 0.2f);
    float *out = fbuf(N * d), *sum = fbuf(N * d), *mean = fbuf(N), *rstd = fbuf(N);
    mlm_dropout drop = make_drop(0.1f, 0);
    for (int with_types = 0; with_types < 2; with_types++) {
        const int32_t *ty = with_types ? types : NULL;
        be->embed_fwd(be, out, sum, mean, rstd, ids, ty, wte, wpe, wtt, lw, lb, B, S, d, 1e-12f, &drop);
        double *rsum = dbuf(N * d), *rout = dbuf(N * d), *rmean = dbuf(N), *rrstd = dbuf(N);
        for (int r = 0; r < N; r++) {
            int s = r % S, t = ty ? ty[r] : 0;
            for (int c = 0; c < d; c++)
                rsum[r * d + c] = (double)wte[ids[r] * d + c] + wpe[s * d + c] + wtt[t * d + c];
            ref_ln(rout + r * d, rmean + r, rrstd + r, rsum + r * d, lw, lb, d, 1e-12);
            for (int c = 0; c < d; c++) rout[r * d + c] *= ref_keep(&drop, r / S, (uint32_t)(s * d + c));
        }
        expect_close(sum, rsum, N * d, 1e-6, "embed sum");
        expect_close(out, rout, N * d, 1e-5, "embed out");
        expect_close(mean, rmean, N, 1e-5, "embed mean");
        expect_close(rstd, rrstd, N, 1e-5, "embed rstd");
    }
}

Test(cpu_ops, linear_fwd) {
    rng = 12;
    int N = 9, I = 13, O = 7;
    float *x = rand_buf(N * I, 0, 1), *W = rand_buf(O * I, 0, 0.5f), *b = rand_buf(O, 0, 0.5f);
    float *out = fbuf(N * O), *pre = fbuf(N * O);
    double *rout = dbuf(N * O), *rpre = dbuf(N * O);
    for (int act = MLM_ACT_NONE; act <= MLM_ACT_GELU; act++) {
        be->linear_fwd(be, out, act ? pre : NULL, x, W, b, N, I, O, (mlm_act)act);
        ref_linear(rout, rpre, x, W, b, N, I, O, (mlm_act)act);
        expect_close(out, rout, N * O, 1e-5, act ? "linear gelu out" : "linear out");
        if (act) expect_close(pre, rpre, N * O, 1e-5, "linear gelu pre");
    }
    be->linear_fwd(be, out, NULL, x, W, NULL, N, I, O, MLM_ACT_NONE);
    ref_linear(rout, rpre, x, W, NULL, N, I, O, MLM_ACT_NONE);
    expect_close(out, rout, N * O, 1e-5, "linear without bias");
}

Test(cpu_ops, residual_ln_fwd) {
    rng = 13;
    int B = 2, S = 4, d = 24, N = B * S;
    float *x = rand_buf(N * d, 0, 1), *res = rand_buf(N * d, 0.3f, 1);
    float *lw = rand_buf(d, 1, 0.2f), *lb = rand_buf(d, 0, 0.2f);
    float *out = fbuf(N * d), *s = fbuf(N * d), *mean = fbuf(N), *rstd = fbuf(N);
    mlm_dropout drop = make_drop(0.2f, 5);
    be->residual_ln_fwd(be, out, s, mean, rstd, x, res, lw, lb, B, S, d, 1e-12f, &drop);
    double *rs = dbuf(N * d), *rout = dbuf(N * d), *rmean = dbuf(N), *rrstd = dbuf(N);
    for (int r = 0; r < N; r++) {
        for (int c = 0; c < d; c++)
            rs[r * d + c] = x[r * d + c] * ref_keep(&drop, r / S, (uint32_t)(r % S * d + c)) + res[r * d + c];
        ref_ln(rout + r * d, rmean + r, rrstd + r, rs + r * d, lw, lb, d, 1e-12);
    }
    expect_close(s, rs, N * d, 1e-6, "residual s");
    expect_close(out, rout, N * d, 1e-5, "residual out");
    expect_close(mean, rmean, N, 1e-5, "residual mean");
    expect_close(rstd, rrstd, N, 1e-5, "residual rstd");
}

Test(cpu_ops, layernorm_fwd) {
    rng = 14;
    int M = 6, d = 20;
    float *x = rand_buf(M * d, 0.5f, 2), *lw = rand_buf(d, 1, 0.2f), *lb = rand_buf(d, 0, 0.2f);
    float *out = fbuf(M * d), *mean = fbuf(M), *rstd = fbuf(M);
    be->layernorm_fwd(be, out, mean, rstd, x, lw, lb, M, d, 1e-12f);
    double *xd = dbuf(M * d), *rout = dbuf(M * d), *rmean = dbuf(M), *rrstd = dbuf(M);
    for (int i = 0; i < M * d; i++) xd[i] = x[i];
    for (int r = 0; r < M; r++) ref_ln(rout + r * d, rmean + r, rrstd + r, xd + r * d, lw, lb, d, 1e-12);
    expect_close(out, rout, M * d, 1e-5, "layernorm out");
    expect_close(mean, rmean, M, 1e-5, "layernorm mean");
    expect_close(rstd, rrstd, M, 1e-5, "layernorm rstd");
}

/* Attention of one micro-batch in double: P (B, H, S, S) before dropout, out (N, d). */
static void ref_attention(double *out, double *P, const float *qkv, const int32_t *lengths,
                          int B, int S, int H, int dh, const mlm_dropout *drop) {
    int d = H * dh;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < S; i++) {
                double *p = P + (((size_t)b * H + h) * S + i) * S, mx = -INFINITY, sum = 0;
                const float *q = qkv + (size_t)(b * S + i) * 3 * d + h * dh;
                for (int j = 0; j < S; j++) {
                    const float *k = qkv + (size_t)(b * S + j) * 3 * d + d + h * dh;
                    double sc = 0;
                    for (int c = 0; c < dh; c++) sc += (double)q[c] * k[c];
                    p[j] = j < lengths[b] ? sc / sqrt(dh) : -INFINITY;
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j < S; j++) sum += p[j] = exp(p[j] - mx);
                for (int j = 0; j < S; j++) p[j] /= sum;
                double *o = out + (size_t)(b * S + i) * d + h * dh;
                for (int c = 0; c < dh; c++) o[c] = 0;
                for (int j = 0; j < S; j++) {
                    const float *v = qkv + (size_t)(b * S + j) * 3 * d + 2 * d + h * dh;
                    double pd = p[j] * ref_keep(drop, b, (uint32_t)((h * S + i) * S + j));
                    for (int c = 0; c < dh; c++) o[c] += pd * v[c];
                }
            }
}

Test(cpu_ops, attention_fwd) {
    rng = 15;
    int B = 3, S = 7, H = 2, dh = 4, d = H * dh, N = B * S;
    int32_t lengths[3] = {7, 3, 1};
    float *qkv = rand_buf(N * 3 * d, 0, 1.5f), *out = fbuf(N * d);
    cr_assert_eq(be->attention_saved_bytes(be, B, S, H), (size_t)B * H * S * S * sizeof(float));
    float *saved = fbuf(B * H * S * S);
    double *rout = dbuf(N * d), *rP = dbuf(B * H * S * S);
    mlm_dropout drop = make_drop(0.3f, 1);
    for (int with_drop = 0; with_drop < 2; with_drop++) {
        const mlm_dropout *dr = with_drop ? &drop : NULL;
        be->attention_fwd(be, out, saved, qkv, lengths, B, S, H, dh, dr);
        ref_attention(rout, rP, qkv, lengths, B, S, H, dh, dr);
        expect_close(out, rout, N * d, 1e-5, with_drop ? "attention out (dropout)" : "attention out");
        expect_close(saved, rP, B * H * S * S, 1e-5, "attention probabilities");
        for (int b = 0; b < B; b++)    // padded keys: exactly zero
            for (int h = 0; h < H; h++)
                for (int i = 0; i < S; i++)
                    for (int j = lengths[b]; j < S; j++)
                        cr_expect_eq(saved[(((size_t)b * H + h) * S + i) * S + j], 0.0f);
    }
}

/* The first V of every ldl columns of x (M rows), packed. */
static float *packed_rows(const float *x, int M, int V, int ldl) {
    float *p = fbuf(M * V);
    for (int r = 0; r < M; r++) memcpy(p + r * V, x + r * ldl, V * sizeof(float));
    return p;
}

/* The columns past V of each row still hold what they held. */
static void expect_row_padding(const float *x, int M, int V, int ldl, float was, const char *what) {
    for (int r = 0; r < M; r++)
        for (int c = V; c < ldl; c++) cr_expect_eq(x[r * ldl + c], was, "%s: row %d column %d was touched", what, r, c);
}

Test(cpu_ops, decoder_and_cross_entropy_fwd) {
    rng = 16;
    int M = 6, d = 8, V = 10, ldl = 13;   // logits rows 13 apart, 3 columns of padding
    float *x = rand_buf(M * d, 0, 1), *W = rand_buf(V * d, 0, 1), *b = rand_buf(V, 0, 0.5f);
    float *logits = fbuf(M * ldl);
    for (int i = 0; i < M * ldl; i++) logits[i] = 7.0f;
    double *rlog = dbuf(M * V), *rpre = dbuf(M * V);
    be->decoder_fwd(be, logits, x, W, b, M, d, V, ldl);
    ref_linear(rlog, rpre, x, W, b, M, d, V, MLM_ACT_NONE);
    expect_close(packed_rows(logits, M, V, ldl), rlog, M * V, 1e-5, "decoder logits");
    expect_row_padding(logits, M, V, ldl, 7.0f, "decoder_fwd");

    int32_t *labels = rand_ints(M, V);
    double loss = 0, correct = 0, scale = 0.25, *rgrad = dbuf(M * V);
    for (int r = 0; r < M; r++) {
        const double *z = rlog + r * V;
        int arg = 0;
        for (int j = 1; j < V; j++) arg = z[j] > z[arg] ? j : arg;
        if (r % 2) labels[r] = arg;    // some rows predicted right
        double mx = z[arg], se = 0;
        for (int j = 0; j < V; j++) se += exp(z[j] - mx);
        loss += log(se) + mx - z[labels[r]];
        correct += arg == labels[r];
        for (int j = 0; j < V; j++) rgrad[r * V + j] = scale * (exp(z[j] - mx) / se - (j == labels[r]));
    }
    float stats[2] = {1.0f, 2.0f};   // accumulates
    be->cross_entropy(be, logits, labels, M, V, ldl, (float)scale, NULL, stats);
    cr_expect(fabs(stats[0] - 1.0 - loss) < 1e-5 * loss, "loss %.8g vs %.8g", stats[0] - 1.0, loss);
    cr_expect_eq(stats[1], 2.0f + (float)correct);
    expect_close(packed_rows(logits, M, V, ldl), rgrad, M * V, 1e-5, "cross-entropy gradient");
    expect_row_padding(logits, M, V, ldl, 7.0f, "cross_entropy");

    // decoder backward on the strided gradient: dW += g^T x, db += column sums, din = g W
    float *g = packed_rows(logits, M, V, ldl), *dW = fbuf(V * d), *db = fbuf(V), *din = fbuf(M * d);
    be->decoder_bwd(be, din, dW, db, logits, x, W, M, d, V, ldl);
    double *rdW = dbuf(V * d), *rdb = dbuf(V), *rdin = dbuf(M * d);
    for (int r = 0; r < M; r++)
        for (int v = 0; v < V; v++) {
            rdb[v] += g[r * V + v];
            for (int k = 0; k < d; k++) {
                rdW[v * d + k] += (double)g[r * V + v] * x[r * d + k];
                rdin[r * d + k] += (double)g[r * V + v] * W[v * d + k];
            }
        }
    expect_close(dW, rdW, V * d, 1e-5, "decoder dW");
    expect_close(db, rdb, V, 1e-5, "decoder db");
    expect_close(din, rdin, M * d, 1e-5, "decoder din");
}

Test(cpu_ops, gather_scatter_rows) {
    rng = 17;
    int N = 9, M = 4, d = 5;
    int32_t rows[4] = {7, 0, 3, 8};
    float *full = rand_buf(N * d, 0, 1), *part = fbuf(M * d), *back = rand_buf(N * d, 0, 1);
    be->gather_rows(be, part, full, rows, M, d);
    for (int i = 0; i < M; i++) cr_expect_arr_eq(part + i * d, full + rows[i] * d, d * sizeof(float));
    be->scatter_rows(be, back, part, rows, M, N, d);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < d; c++) {
            int picked = r == 7 || r == 0 || r == 3 || r == 8;
            cr_expect_eq(back[r * d + c], picked ? full[r * d + c] : 0.0f);
        }
}

/* ================= backward against finite differences ================= */

typedef struct {
    int B, S, d;
    int32_t *ids, *types;
    float *wte, *wpe, *wtt, *lw, *lb, *out, *sum, *mean, *rstd, *R;
    mlm_dropout drop;
} embed_ctx;

static double embed_loss(void *p) {
    embed_ctx *c = p;
    be->embed_fwd(be, c->out, c->sum, c->mean, c->rstd, c->ids, c->types, c->wte, c->wpe, c->wtt,
                  c->lw, c->lb, c->B, c->S, c->d, 1e-12f, &c->drop);
    return dot(c->out, c->R, (size_t)c->B * c->S * c->d);
}

Test(cpu_ops, embed_bwd) {
    rng = 21;
    int B = 2, S = 3, d = 8, V = 5, P = 4, T = 2, N = B * S;
    embed_ctx c = {B, S, d, rand_ints(N, V), rand_ints(N, T), rand_buf(V * d, 0, 1),
                   rand_buf(P * d, 0, 1), rand_buf(T * d, 0, 1), rand_buf(d, 1, 0.3f),
                   rand_buf(d, 0, 0.3f), fbuf(N * d), fbuf(N * d), fbuf(N), fbuf(N),
                   rand_buf(N * d, 0, 1), make_drop(0.3f, 0)};
    c.ids[0] = c.ids[4] = 2;    // a repeated token
    float *dwte = fbuf(V * d), *dwpe = fbuf(P * d), *dwtt = fbuf(T * d), *dlw = fbuf(d), *dlb = fbuf(d);
    embed_loss(&c);
    be->embed_bwd(be, dwte, dwpe, dwtt, dlw, dlb, c.R, c.sum, c.mean, c.rstd, c.ids, c.types, c.lw,
                  B, S, d, &c.drop);
    grad_check checks[] = {{"wte", c.wte, dwte, V * d}, {"wpe", c.wpe, dwpe, P * d},
                           {"wtt", c.wtt, dwtt, T * d}, {"emb ln_w", c.lw, dlw, d},
                           {"emb ln_b", c.lb, dlb, d}};
    check_grads(embed_loss, &c, checks, 5);
}

typedef struct {
    int N, I, O;
    mlm_act act;
    float *x, *W, *b, *out, *pre, *R;
} linear_ctx;

static double linear_loss(void *p) {
    linear_ctx *c = p;
    be->linear_fwd(be, c->out, c->pre, c->x, c->W, c->b, c->N, c->I, c->O, c->act);
    return dot(c->out, c->R, (size_t)c->N * c->O);
}

static void linear_grad_test(mlm_act act) {
    int N = 5, I = 4, O = 6;
    linear_ctx c = {N, I, O, act, rand_buf(N * I, 0, 1), rand_buf(O * I, 0, 1), rand_buf(O, 0, 1),
                    fbuf(N * O), fbuf(N * O), rand_buf(N * O, 0, 1)};
    float *dx = fbuf(N * I), *dW = fbuf(O * I), *db = fbuf(O), *dout = fbuf(N * O);
    linear_loss(&c);
    memcpy(dout, c.R, N * O * sizeof(float));
    be->linear_bwd(be, dx, dW, db, dout, c.x, c.W, c.pre, N, I, O, act, 0);
    grad_check checks[] = {{"linear in", c.x, dx, N * I}, {"linear W", c.W, dW, O * I},
                           {"linear b", c.b, db, O}};
    check_grads(linear_loss, &c, checks, 3);
}

Test(cpu_ops, linear_bwd) {
    rng = 22;
    linear_grad_test(MLM_ACT_NONE);
}

Test(cpu_ops, linear_gelu_bwd) {
    rng = 23;
    linear_grad_test(MLM_ACT_GELU);
}

typedef struct {
    int B, S, d;
    float *x, *res, *lw, *lb, *out, *s, *mean, *rstd, *R;
    mlm_dropout drop;
} residual_ctx;

static double residual_loss(void *p) {
    residual_ctx *c = p;
    be->residual_ln_fwd(be, c->out, c->s, c->mean, c->rstd, c->x, c->res, c->lw, c->lb, c->B, c->S,
                        c->d, 1e-12f, &c->drop);
    return dot(c->out, c->R, (size_t)c->B * c->S * c->d);
}

Test(cpu_ops, residual_ln_bwd) {
    rng = 24;
    int B = 2, S = 3, d = 8, N = B * S;
    residual_ctx c = {B, S, d, rand_buf(N * d, 0, 1), rand_buf(N * d, 0, 1), rand_buf(d, 1, 0.3f),
                      rand_buf(d, 0, 0.3f), fbuf(N * d), fbuf(N * d), fbuf(N), fbuf(N),
                      rand_buf(N * d, 0, 1), make_drop(0.3f, 2)};
    float *dx = fbuf(N * d), *dres = fbuf(N * d), *dlw = fbuf(d), *dlb = fbuf(d), *dbias = rand_buf(d, 0, 1);
    float dbias0[8];
    memcpy(dbias0, dbias, sizeof dbias0);
    residual_loss(&c);
    be->residual_ln_bwd(be, dx, dres, dlw, dlb, dbias, c.R, c.s, c.mean, c.rstd, c.lw, B, S, d, &c.drop);
    grad_check checks[] = {{"residual x", c.x, dx, N * d}, {"residual res", c.res, dres, N * d},
                           {"residual ln_w", c.lw, dlw, d}, {"residual ln_b", c.lb, dlb, d}};
    check_grads(residual_loss, &c, checks, 4);
    // dbias += the column sums of dx: the gradient of a bias added to x
    for (int col = 0; col < d; col++) {
        double sum = dbias0[col];
        for (int r = 0; r < N; r++) sum += dx[r * d + col];
        cr_expect_float_eq(dbias[col], sum, 1e-5, "dbias[%d] %g, column sum %g", col, dbias[col], sum);
    }
}

typedef struct {
    int M, d;
    float *x, *lw, *lb, *out, *mean, *rstd, *R;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    be->layernorm_fwd(be, c->out, c->mean, c->rstd, c->x, c->lw, c->lb, c->M, c->d, 1e-12f);
    return dot(c->out, c->R, (size_t)c->M * c->d);
}

Test(cpu_ops, layernorm_bwd) {
    rng = 25;
    int M = 5, d = 8;
    ln_ctx c = {M, d, rand_buf(M * d, 0, 1), rand_buf(d, 1, 0.3f), rand_buf(d, 0, 0.3f),
                fbuf(M * d), fbuf(M), fbuf(M), rand_buf(M * d, 0, 1)};
    float *dx = fbuf(M * d), *dlw = fbuf(d), *dlb = fbuf(d);
    ln_loss(&c);
    be->layernorm_bwd(be, dx, dlw, dlb, c.R, c.x, c.mean, c.rstd, c.lw, M, d);
    grad_check checks[] = {{"ln x", c.x, dx, M * d}, {"ln w", c.lw, dlw, d}, {"ln b", c.lb, dlb, d}};
    check_grads(ln_loss, &c, checks, 3);
}

typedef struct {
    int B, S, H, dh;
    const int32_t *lengths;
    float *qkv, *out, *saved, *R;
    const mlm_dropout *drop;
} attn_ctx;

static double attn_loss(void *p) {
    attn_ctx *c = p;
    be->attention_fwd(be, c->out, c->saved, c->qkv, c->lengths, c->B, c->S, c->H, c->dh, c->drop);
    return dot(c->out, c->R, (size_t)c->B * c->S * c->H * c->dh);
}

static void attention_grad_test(const mlm_dropout *drop) {
    int B = 3, S = 7, H = 2, dh = 4, d = H * dh, N = B * S;
    static const int32_t lengths[3] = {7, 3, 1};
    attn_ctx c = {B, S, H, dh, lengths, rand_buf(N * 3 * d, 0, 1), fbuf(N * d),
                  fbuf(B * H * S * S), rand_buf(N * d, 0, 1), drop};
    float *dqkv = rand_buf(N * 3 * d, 0, 1);   // garbage: must be overwritten
    attn_loss(&c);
    be->attention_bwd(be, dqkv, c.R, c.qkv, c.out, c.saved, lengths, B, S, H, dh, drop);
    grad_check checks[] = {{drop ? "qkv (dropout)" : "qkv", c.qkv, dqkv, N * 3 * d}};
    check_grads(attn_loss, &c, checks, 1);
}

Test(cpu_ops, attention_bwd) {
    rng = 26;
    attention_grad_test(NULL);
}

Test(cpu_ops, attention_dropout_bwd) {
    rng = 27;
    mlm_dropout drop = make_drop(0.3f, 4);
    attention_grad_test(&drop);
}

typedef struct {
    int M, d, V, ldl;
    float scale;
    int32_t *labels;
    float *x, *W, *b, *logits;
} head_ctx;

/* L = scale * sum of row losses, as cross_entropy's gradient is scaled. */
static double head_loss(void *p) {
    head_ctx *c = p;
    float stats[2] = {0, 0};
    be->decoder_fwd(be, c->logits, c->x, c->W, c->b, c->M, c->d, c->V, c->ldl);
    be->cross_entropy(be, c->logits, c->labels, c->M, c->V, c->ldl, c->scale, NULL, stats);
    return (double)stats[0] * c->scale;
}

Test(cpu_ops, decoder_cross_entropy_bwd) {
    rng = 28;
    int M = 4, d = 6, V = 9, ldl = 12;
    head_ctx c = {M, d, V, ldl, 0.25f, rand_ints(M, V), rand_buf(M * d, 0, 1), rand_buf(V * d, 0, 1),
                  rand_buf(V, 0, 1), fbuf(M * ldl)};
    float *dx = fbuf(M * d), *dW = fbuf(V * d), *db = fbuf(V);
    head_loss(&c);    // logits now hold dL/dlogits
    be->decoder_bwd(be, dx, dW, db, c.logits, c.x, c.W, M, d, V, ldl);
    grad_check checks[] = {{"decoder in", c.x, dx, M * d}, {"decoder W", c.W, dW, V * d},
                           {"decoder b", c.b, db, V}};
    check_grads(head_loss, &c, checks, 3);
}

/* ================= dropout ================= */

/* s = dropout(x) + 0 exposes the mask scaled: residual_ln_fwd saves s. */
static float *dropout_of_ones(int B, int S, int d, const mlm_dropout *drop) {
    int N = B * S;
    float *x = fbuf((size_t)N * d), *zero = fbuf((size_t)N * d), *s = fbuf((size_t)N * d);
    float *out = fbuf((size_t)N * d), *mean = fbuf(N), *rstd = fbuf(N);
    float *lw = rand_buf(d, 1, 0), *lb = fbuf(d);
    for (size_t i = 0; i < (size_t)N * d; i++) x[i] = 1.0f;
    be->residual_ln_fwd(be, out, s, mean, rstd, x, zero, lw, lb, B, S, d, 1e-12f, drop);
    return s;
}

Test(cpu_ops, dropout_fraction_and_scale) {
    int B = 64, S = 128, d = 64;
    size_t n = (size_t)B * S * d, dropped = 0;
    mlm_dropout drop = make_drop(0.3f, 9);
    float *s = dropout_of_ones(B, S, d, &drop);   // rows of 64: the 8-block vector path too
    for (size_t i = 0; i < n; i++) {
        size_t r = i / d;
        dropped += s[i] == 0.0f;
        cr_assert_eq(s[i], (float)ref_keep(&drop, (int)(r / S), (uint32_t)(r % S * d + i % d)),
                     "element %zu", i);
    }
    double frac = (double)dropped / n;
    cr_expect(fabs(frac - 0.3) < 0.01, "dropped fraction %.4f, want 0.3", frac);
}

static size_t count_diff(const float *a, const float *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += a[i] != b[i];
    return k;
}

Test(cpu_ops, dropout_deterministic_and_keyed) {
    int B = 2, S = 16, d = 32;
    size_t n = (size_t)B * S * d, half = n / 2;
    mlm_dropout drop = make_drop(0.5f, 3);
    float *a = dropout_of_ones(B, S, d, &drop), *again = dropout_of_ones(B, S, d, &drop);
    cr_expect_arr_eq(a, again, n * sizeof(float), "same arguments, different mask");
    mlm_dropout other[3] = {drop, drop, drop};
    other[0].step++;
    other[1].site++;
    other[2].seq_base += 2;
    for (int k = 0; k < 3; k++)
        cr_expect_gt(count_diff(a, dropout_of_ones(B, S, d, &other[k]), n), n / 4,
                     "changing step/site/seq_base (%d) must change the mask", k);
    /* sequence 1 at seq_base 3 is global sequence 4, as sequence 0 at seq_base 4 */
    mlm_dropout shifted = drop;
    shifted.seq_base = 4;
    cr_expect_arr_eq(a + half, dropout_of_ones(1, S, d, &shifted), half * sizeof(float));
}

Test(cpu_ops, dropout_off_is_identity) {
    int B = 2, S = 8, d = 16;
    size_t n = (size_t)B * S * d;
    mlm_dropout off = make_drop(0.0f, 3);
    float *s = dropout_of_ones(B, S, d, &off), *none = dropout_of_ones(B, S, d, NULL);
    for (size_t i = 0; i < n; i++) cr_assert_eq(s[i], 1.0f);
    cr_expect_arr_eq(s, none, n * sizeof(float));
}

/* ================= accumulation semantics ================= */

Test(cpu_ops, linear_bwd_accumulates) {
    rng = 31;
    int N = 64, I = 24, O = 40;
    float *x = rand_buf(N * I, 0, 1), *W = rand_buf(O * I, 0, 1), *g = rand_buf(N * O, 0, 1);
    float *dout = fbuf(N * O), *dW1 = fbuf(O * I), *db1 = fbuf(O), *dx1 = fbuf(N * I);
    float *dW2 = fbuf(O * I), *db2 = fbuf(O), *dx2 = rand_buf(N * I, 0, 1), *dx0 = fbuf(N * I);
    memcpy(dx0, dx2, N * I * sizeof(float));
    memcpy(dout, g, N * O * sizeof(float));
    be->linear_bwd(be, dx1, dW1, db1, dout, x, W, NULL, N, I, O, MLM_ACT_NONE, 0);
    be->linear_bwd(be, NULL, dW2, db2, dout, x, W, NULL, N, I, O, MLM_ACT_NONE, 0);
    be->linear_bwd(be, dx2, dW2, NULL, dout, x, W, NULL, N, I, O, MLM_ACT_NONE, 1);
    double *twice = dbuf(O * I), *sum = dbuf(N * I), *bias = dbuf(O);
    for (int i = 0; i < O * I; i++) twice[i] = 2.0 * dW1[i];
    for (int i = 0; i < N * I; i++) sum[i] = (double)dx0[i] + dx1[i];
    for (int i = 0; i < O; i++) bias[i] = db1[i];
    expect_close(dW2, twice, O * I, 1e-6, "dW after two calls");
    expect_close(db2, bias, O, 1e-6, "db untouched when NULL");
    expect_close(dx2, sum, N * I, 1e-6, "din_accumulate");
}

/* ================= optimizer ================= */

Test(cpu_ops, sum_squares) {
    rng = 41;
    size_t n = 200003;
    float *g = rand_buf(n, 0, 1), out = 0;
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)g[i] * g[i];
    be->sum_squares(be, &out, g, n);
    cr_expect(fabs(out - ref) < 1e-6 * ref, "sum of squares %.9g vs %.9g", out, ref);
}

/* torch.optim.AdamW after clip_grad_norm_, one step, in double. */
static void ref_adamw(double *p, double *m, double *v, const float *g, size_t n,
                      const mlm_adamw_args *a) {
    double norm = 0, clip = 1;
    for (size_t i = 0; i < n; i++) norm += (double)g[i] * g[i];
    if (a->grad_clip > 0) clip = fmin(1.0, a->grad_clip / (sqrt(norm) + 1e-6));
    double bc1 = 1 - pow(a->beta1, a->step), bc2 = 1 - pow(a->beta2, a->step);
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * clip;
        m[i] = a->beta1 * m[i] + (1 - a->beta1) * gi;
        v[i] = a->beta2 * v[i] + (1 - a->beta2) * gi * gi;
        p[i] *= 1 - (double)a->lr * a->weight_decay;
        p[i] -= a->lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + a->eps);
    }
}

Test(cpu_ops, adamw_matches_torch_with_clipping) {
    rng = 42;
    size_t n = 1000;
    float *p = rand_buf(n, 0, 1), *m = fbuf(n), *v = fbuf(n), *p0 = fbuf(n), gnorm_sq = 0;
    double *rp = dbuf(n), *rm = dbuf(n), *rv = dbuf(n);
    memcpy(p0, p, n * sizeof(float));
    for (size_t i = 0; i < n; i++) rp[i] = p[i];
    mlm_adamw_args a = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                        .weight_decay = 0.01f, .grad_clip = 1.0f};
    for (int step = 1; step <= 3; step++) {
        float *g = rand_buf(n, 0, step == 3 ? 0.001f : 1.0f);   // step 3: below the clip
        a.step = step;
        be->sum_squares(be, &gnorm_sq, g, n);
        ref_adamw(rp, rm, rv, g, n, &a);
        be->adamw(be, p, p, g, m, v, n, &a, &gnorm_sq);
        for (size_t i = 0; i < n; i++)   // read, then zeroed for the next step's accumulation
            cr_assert(g[i] == 0.0f, "step %d: gradient %zu not zeroed: %g", step, i, g[i]);
    }
    expect_close(m, rm, n, 1e-5, "adamw m");
    expect_close(v, rv, n, 1e-5, "adamw v");
    expect_close(p, rp, n, 1e-6, "adamw params");
    double *moved = dbuf(n);    // the update alone, finer than the parameters
    for (size_t i = 0; i < n; i++) {
        moved[i] = rp[i] - p0[i];
        p0[i] = p[i] - p0[i];
    }
    expect_close(p0, moved, n, 1e-4, "adamw update");
}

/* ================= errors ================= */

Test(cpu_ops, cross_entropy_bad_label_exits, .exit_code = 2) {
    float logits[2 * 3] = {0};
    int32_t labels[2] = {1, 3};
    float stats[2] = {0, 0};
    be->cross_entropy(be, logits, labels, 2, 3, 3, 1.0f, NULL, stats);
}

/* The table holds every op of backend_ops.def; a table with an empty slot is named
 * and refused. */
Test(cpu_ops, the_table_has_every_op) {
    cr_expect_null(mlm_backend_missing_op(be), "%s", mlm_backend_missing_op(be));
    mlm_backend holed = *be;
    holed.attention_bwd = NULL;
    cr_expect_str_eq(mlm_backend_missing_op(&holed), "attention_bwd");
    holed = *be;
    holed.alloc = NULL;
    cr_expect_str_eq(mlm_backend_missing_op(&holed), "alloc");
}

Test(cpu_ops, a_table_with_an_empty_slot_is_refused, .exit_code = 1) {
    mlm_backend holed = *be;
    holed.adamw = NULL;
    mlm_backend_check(&holed);
}
