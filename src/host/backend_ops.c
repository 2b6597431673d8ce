/* The wrapping backend of backend_wrap.h: every op reports to the hooks, then
 * runs on the inner backend. */
#include "mlm/backend_wrap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/log.h"

typedef struct {
    mlm_backend *inner;
    mlm_wrap_hooks hooks;
} wrap_state;

static wrap_state *ws(mlm_backend *be) { return (wrap_state *)be->impl; }

mlm_backend *mlm_backend_wrapped(mlm_backend *wrapper) { return ws(wrapper)->inner; }

static uint64_t P(const void *p) { return (uint64_t)(uintptr_t)p; }

static uint64_t FB(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The words of a dropout argument, by value as a kernel receives it. */
#define DROP(d)                                                                                       \
    (d) ? (d)->threshold : 0, (d) ? FB((d)->scale) : 0, (d) ? (d)->seed : 0, (d) ? (d)->step : 0,     \
        (d) ? (d)->site : 0, (d) ? (d)->seq_base : 0, (d) ? P((d)->live) : 0

/* Tells the hooks about op (shape printf-style after the words), then runs CALL. */
#define OP(op, CALL, WORDS, ...)                                                                      \
    do {                                                                                              \
        wrap_state *s_ = ws(be);                                                                      \
        const uint64_t w_[] = {WORDS};                                                                \
        char shape_[128];                                                                             \
        snprintf(shape_, sizeof shape_, __VA_ARGS__);                                                 \
        s_->hooks.before(s_->hooks.ctx, op, shape_, w_, (int)(sizeof w_ / sizeof w_[0]));             \
        mlm_backend *in = s_->inner;                                                                  \
        CALL;                                                                                         \
        if (s_->hooks.after) s_->hooks.after(s_->hooks.ctx, op);                                      \
    } while (0)
#define W(...) __VA_ARGS__

static void *w_alloc(mlm_backend *be, size_t bytes, const char *what) {
    void *p = NULL;
    OP("alloc", p = in->alloc(in, bytes, what), W(bytes), "%zu bytes", bytes);
    return p;
}
static void w_free(mlm_backend *be, void *p) { OP("free", in->free(in, p), W(P(p)), "-"); }
static void w_upload(mlm_backend *be, void *dst, const void *src, size_t bytes) {
    OP("upload", in->upload(in, dst, src, bytes), W(P(dst), bytes), "%zu bytes", bytes);
}
static void w_download(mlm_backend *be, void *dst, const void *src, size_t bytes) {
    OP("download", in->download(in, dst, src, bytes), W(P(src), bytes), "%zu bytes", bytes);
}
static void w_download_start(mlm_backend *be, void *dst, const void *src, size_t bytes) {
    OP("download_start", in->download_start(in, dst, src, bytes), W(P(src), bytes), "%zu bytes", bytes);
}
static void w_download_finish(mlm_backend *be) { OP("download_finish", in->download_finish(in), W(0), "-"); }
static void w_zero(mlm_backend *be, void *p, size_t bytes) {
    OP("zero", in->zero(in, p, bytes), W(P(p), bytes), "%zu bytes", bytes);
}
static void w_sync(mlm_backend *be) { OP("sync", in->sync(in), W(0), "-"); }
static size_t w_mem_free(mlm_backend *be) {
    size_t n = 0;
    OP("mem_free", n = in->mem_free ? in->mem_free(in) : 0, W(0), "-");
    return n;
}
static void w_upload_f32(mlm_backend *be, void *dst, const float *src, size_t n) {
    OP("upload_f32_as_act", in->upload_f32_as_act(in, dst, src, n), W(P(dst), n), "n=%zu", n);
}
static void w_download_f32(mlm_backend *be, float *dst, const void *src, size_t n) {
    OP("download_act_as_f32", in->download_act_as_f32(in, dst, src, n), W(P(src), n), "n=%zu", n);
}
static void w_master(mlm_backend *be, void *dst, const float *master, size_t n) {
    OP("copy_master_to_wgt", in->copy_master_to_wgt(in, dst, master, n), W(P(dst), P(master), n), "n=%zu", n);
}
static void w_embed_fwd(mlm_backend *be, void *out, void *sum, float *mean, float *rstd, const int32_t *ids,
                        const int32_t *types, const void *wte, const void *wpe, const void *wtt, const void *ln_w,
                        const void *ln_b, int B, int S, int d, float eps, const mlm_dropout *drop) {
    OP("embed_fwd", in->embed_fwd(in, out, sum, mean, rstd, ids, types, wte, wpe, wtt, ln_w, ln_b, B, S, d, eps, drop),
       W(P(out), P(sum), P(mean), P(rstd), P(ids), P(types), P(wte), P(wpe), P(wtt), P(ln_w), P(ln_b), B, S, d,
         FB(eps), DROP(drop)),
       "B=%d S=%d d=%d", B, S, d);
}
static void w_embed_bwd(mlm_backend *be, float *dwte, float *dwpe, float *dwtt, float *dln_w, float *dln_b,
                        const void *dout, const void *sum, const float *mean, const float *rstd,
                        const int32_t *ids, const int32_t *types, const void *ln_w, int B, int S, int d,
                        const mlm_dropout *drop) {
    OP("embed_bwd",
       in->embed_bwd(in, dwte, dwpe, dwtt, dln_w, dln_b, dout, sum, mean, rstd, ids, types, ln_w, B, S, d, drop),
       W(P(dwte), P(dwpe), P(dwtt), P(dln_w), P(dln_b), P(dout), P(sum), P(mean), P(rstd), P(ids), P(types),
         P(ln_w), B, S, d, DROP(drop)),
       "B=%d S=%d d=%d", B, S, d);
}
static void w_linear_fwd(mlm_backend *be, void *out, void *pre, const void *x, const void *Wt, const void *b,
                         int N, int I, int O, mlm_act act) {
    OP("linear_fwd", in->linear_fwd(in, out, pre, x, Wt, b, N, I, O, act),
       W(P(out), P(pre), P(x), P(Wt), P(b), N, I, O, act), "N=%d I=%d O=%d act=%d", N, I, O, act);
}
static void w_linear_bwd(mlm_backend *be, void *din, float *dW, float *db, void *dout, const void *x,
                         const void *Wt, const void *pre, int N, int I, int O, mlm_act act, int acc) {
    OP("linear_bwd", in->linear_bwd(in, din, dW, db, dout, x, Wt, pre, N, I, O, act, acc),
       W(P(din), P(dW), P(db), P(dout), P(x), P(Wt), P(pre), N, I, O, act, acc), "N=%d I=%d O=%d act=%d", N, I,
       O, act);
}
static void w_res_fwd(mlm_backend *be, void *out, void *s, float *mean, float *rstd, const void *x,
                      const void *res, const void *ln_w, const void *ln_b, int B, int S, int d, float eps,
                      const mlm_dropout *drop) {
    OP("residual_ln_fwd", in->residual_ln_fwd(in, out, s, mean, rstd, x, res, ln_w, ln_b, B, S, d, eps, drop),
       W(P(out), P(s), P(mean), P(rstd), P(x), P(res), P(ln_w), P(ln_b), B, S, d, FB(eps), DROP(drop)),
       "B=%d S=%d d=%d", B, S, d);
}
static void w_res_bwd(mlm_backend *be, void *dx, void *dres, float *dln_w, float *dln_b, const void *dout,
                      const void *s, const float *mean, const float *rstd, const void *ln_w, int B, int S, int d,
                      const mlm_dropout *drop) {
    OP("residual_ln_bwd", in->residual_ln_bwd(in, dx, dres, dln_w, dln_b, dout, s, mean, rstd, ln_w, B, S, d, drop),
       W(P(dx), P(dres), P(dln_w), P(dln_b), P(dout), P(s), P(mean), P(rstd), P(ln_w), B, S, d, DROP(drop)),
       "B=%d S=%d d=%d", B, S, d);
}
static void w_ln_fwd(mlm_backend *be, void *out, float *mean, float *rstd, const void *x, const void *ln_w,
                     const void *ln_b, int M, int d, float eps) {
    OP("layernorm_fwd", in->layernorm_fwd(in, out, mean, rstd, x, ln_w, ln_b, M, d, eps),
       W(P(out), P(mean), P(rstd), P(x), P(ln_w), P(ln_b), M, d, FB(eps)), "M=%d d=%d", M, d);
}
static void w_ln_bwd(mlm_backend *be, void *dx, float *dln_w, float *dln_b, const void *dout, const void *x,
                     const float *mean, const float *rstd, const void *ln_w, int M, int d) {
    OP("layernorm_bwd", in->layernorm_bwd(in, dx, dln_w, dln_b, dout, x, mean, rstd, ln_w, M, d),
       W(P(dx), P(dln_w), P(dln_b), P(dout), P(x), P(mean), P(rstd), P(ln_w), M, d), "M=%d d=%d", M, d);
}
static size_t w_att_saved(mlm_backend *be, int B, int S, int H) {
    return ws(be)->inner->attention_saved_bytes(ws(be)->inner, B, S, H);   // a size, no work
}
static void w_att_fwd(mlm_backend *be, void *out, void *saved, const void *qkv, const int32_t *lengths, int B,
                      int S, int H, int dh, const mlm_dropout *drop) {
    OP("attention_fwd", in->attention_fwd(in, out, saved, qkv, lengths, B, S, H, dh, drop),
       W(P(out), P(saved), P(qkv), P(lengths), B, S, H, dh, DROP(drop)), "B=%d S=%d H=%d dh=%d", B, S, H, dh);
}
static void w_att_bwd(mlm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                      const void *saved, const int32_t *lengths, int B, int S, int H, int dh,
                      const mlm_dropout *drop) {
    OP("attention_bwd", in->attention_bwd(in, dqkv, dout, qkv, out, saved, lengths, B, S, H, dh, drop),
       W(P(dqkv), P(dout), P(qkv), P(out), P(saved), P(lengths), B, S, H, dh, DROP(drop)),
       "B=%d S=%d H=%d dh=%d", B, S, H, dh);
}
static void w_gather(mlm_backend *be, void *out, const void *x, const int32_t *rows, int M, int d) {
    OP("gather_rows", in->gather_rows(in, out, x, rows, M, d), W(P(out), P(x), P(rows), M, d), "M=%d d=%d", M, d);
}
static void w_scatter(mlm_backend *be, void *dfull, const void *drows, const int32_t *rows, int M, int N, int d) {
    OP("scatter_rows", in->scatter_rows(in, dfull, drows, rows, M, N, d), W(P(dfull), P(drows), P(rows), M, N, d),
       "M=%d N=%d d=%d", M, N, d);
}
static void w_dec_fwd(mlm_backend *be, float *logits, const void *x, const void *Wt, const void *b, int M, int d,
                      int V) {
    OP("decoder_fwd", in->decoder_fwd(in, logits, x, Wt, b, M, d, V), W(P(logits), P(x), P(Wt), P(b), M, d, V),
       "M=%d d=%d V=%d", M, d, V);
}
static void w_dec_bwd(mlm_backend *be, void *din, float *dW, float *db, const float *dlogits, const void *x,
                      const void *Wt, int M, int d, int V) {
    OP("decoder_bwd", in->decoder_bwd(in, din, dW, db, dlogits, x, Wt, M, d, V),
       W(P(din), P(dW), P(db), P(dlogits), P(x), P(Wt), M, d, V), "M=%d d=%d V=%d", M, d, V);
}
static void w_ce(mlm_backend *be, float *logits, const int32_t *labels, int M, int V, float scale,
                 const mlm_live *live, float *stats) {
    OP("cross_entropy", in->cross_entropy(in, logits, labels, M, V, scale, live, stats),
       W(P(logits), P(labels), M, V, FB(scale), P(live), P(stats)), "M=%d V=%d", M, V);
}
static void w_sumsq(mlm_backend *be, float *out, const float *g, size_t n) {
    OP("sum_squares", in->sum_squares(in, out, g, n), W(P(out), P(g), n), "n=%zu", n);
}
static void w_adamw(mlm_backend *be, float *master, void *wgt, const float *g, float *m, float *v, size_t n,
                    const mlm_adamw_args *a, const float *gnorm_sq) {
    OP("adamw", in->adamw(in, master, wgt, g, m, v, n, a, gnorm_sq),
       W(P(master), P(wgt), P(g), P(m), P(v), n, FB(a->lr), a->step, P(gnorm_sq)), "n=%zu", n);
}

static void w_replay(mlm_backend *be, uint64_t key, void (*fn)(void *), void *fn_ctx) {
    wrap_state *s = ws(be);
    s->hooks.replay(s->hooks.ctx, be, key, fn, fn_ctx);
}

static void w_destroy(mlm_backend *be) {
    wrap_state *s = ws(be);
    s->inner->destroy(s->inner);
    free(s);
    free(be);
}

mlm_backend *mlm_backend_wrap(mlm_backend *inner, const mlm_wrap_hooks *hooks) {
    wrap_state *s = mlm_xcalloc(1, sizeof *s, "backend wrapper");
    s->inner = inner;
    s->hooks = *hooks;
    mlm_backend *be = mlm_xcalloc(1, sizeof *be, "backend wrapper");
    *be = (mlm_backend){
        .name = inner->name, .act_size = inner->act_size, .wgt_size = inner->wgt_size, .impl = s,
        .alloc = w_alloc, .free = w_free, .upload = w_upload, .download = w_download,
        .download_start = w_download_start, .download_finish = w_download_finish, .zero = w_zero,
        .sync = w_sync, .mem_free = inner->mem_free ? w_mem_free : NULL, .upload_f32_as_act = w_upload_f32,
        .download_act_as_f32 = w_download_f32, .copy_master_to_wgt = w_master, .embed_fwd = w_embed_fwd,
        .embed_bwd = w_embed_bwd, .linear_fwd = w_linear_fwd, .linear_bwd = w_linear_bwd,
        .residual_ln_fwd = w_res_fwd, .residual_ln_bwd = w_res_bwd, .layernorm_fwd = w_ln_fwd,
        .layernorm_bwd = w_ln_bwd, .attention_saved_bytes = w_att_saved, .attention_fwd = w_att_fwd,
        .attention_bwd = w_att_bwd, .gather_rows = w_gather, .scatter_rows = w_scatter,
        .decoder_fwd = w_dec_fwd, .decoder_bwd = w_dec_bwd, .cross_entropy = w_ce, .sum_squares = w_sumsq,
        .adamw = w_adamw, .replay = hooks->replay ? w_replay : NULL,
        .rows_align = hooks->rows_align ? hooks->rows_align : inner->rows_align, .destroy = w_destroy,
    };
    return be;
}
