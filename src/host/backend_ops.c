/*
 * What is written once over the op list (include/mlm/backend_ops.def): the check
 * that a backend's table has every op (mlm_backend_check, called by the CPU and
 * CUDA constructors), and the wrapping backend of backend_wrap.h, whose every op
 * reports to the hooks and then runs on the inner backend (the profiler,
 * profile.c; the replay recorder of tests/test_replay.c).
 */
#include "mlm/backend_wrap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/log.h"

/* ---------------------------------------------------------------- the check */

const char *mlm_backend_missing_op(const mlm_backend *be) {
#define MLM_OP(ret, op, ...) \
    if (!be->op) return #op;
#include "mlm/backend_ops.def"
    return NULL;
}

void mlm_backend_check(const mlm_backend *be) {
    const char *op = mlm_backend_missing_op(be);
    if (op) mlm_die(MLM_EXIT_RUNTIME, "%s backend: op %s is not implemented (a NULL slot in its table)", be->name, op);
}

/* ---------------------------------------------------------------- the wrapper */

typedef struct {
    mlm_backend *inner;
    mlm_wrap_hooks hooks;
} wrap_state;

static wrap_state *ws(mlm_backend *be) { return (wrap_state *)be->impl; }

/* An op's arguments as 64-bit words, as a device would receive them. */
typedef struct {
    uint64_t w[MLM_WRAP_MAX_ARGS];
    int n;
} arg_words;

static void word(arg_words *a, uint64_t v) {
    if (a->n == MLM_WRAP_MAX_ARGS) mlm_die(MLM_EXIT_RUNTIME, "backend wrapper: more than %d argument words", a->n);
    a->w[a->n++] = v;
}

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void word_ptr(arg_words *a, const volatile void *p) { word(a, (uint64_t)(uintptr_t)p); }
static void word_int(arg_words *a, long long v) { word(a, (uint64_t)v); }
static void word_uint(arg_words *a, unsigned long long v) { word(a, v); }
static void word_float(arg_words *a, float f) { word(a, float_bits(f)); }

/* A dropout argument by value, as a kernel receives it. */
static void word_dropout(arg_words *a, const mlm_dropout *d) {
    const mlm_dropout off = {0};
    if (!d) d = &off;
    word(a, d->threshold), word(a, float_bits(d->scale)), word(a, d->seed), word(a, d->step);
    word(a, d->site), word(a, d->seq_base), word_ptr(a, d->live);
}

static void word_adamw(arg_words *a, const mlm_adamw_args *x) {
    word_float(a, x->lr), word_float(a, x->beta1), word_float(a, x->beta2), word_float(a, x->eps);
    word_float(a, x->weight_decay), word_int(a, x->step), word_float(a, x->grad_clip);
}

/* Appends argument x's words, chosen by its type. A pointer to a struct whose fields
 * change between calls needs its own case, or only its address is seen. */
#define ARG_WORDS(x)                                                                                       \
    _Generic((x),                                                                                          \
        int: word_int, long: word_int, unsigned: word_uint, unsigned long: word_uint, float: word_float,    \
        const mlm_dropout *: word_dropout, mlm_dropout *: word_dropout,                                     \
        const mlm_adamw_args *: word_adamw, mlm_adamw_args *: word_adamw,                                   \
        default: word_ptr)(&words_, (x));
_Static_assert(_Generic((mlm_act)0, int: 1, unsigned: 1, default: 0), "mlm_act is an int or unsigned for ARG_WORDS");

/* EACH(f, (a, b, c)) is f(a) f(b) f(c); at most 20 arguments. */
#define UNPAREN(...) __VA_ARGS__
#define EACH(f, args) EACH_(f, UNPAREN args)
#define EACH_(f, ...) CAT(EACH_N, COUNT(__VA_ARGS__))(f, __VA_ARGS__)
#define CAT(a, b) CAT_(a, b)
#define CAT_(a, b) a##b
#define COUNT(...) COUNT_(__VA_OPT__(__VA_ARGS__, ) 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define COUNT_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, n, ...) n
#define EACH_N0(f, ...)
#define EACH_N1(f, x) f(x)
#define EACH_N2(f, x, ...) f(x) EACH_N1(f, __VA_ARGS__)
#define EACH_N3(f, x, ...) f(x) EACH_N2(f, __VA_ARGS__)
#define EACH_N4(f, x, ...) f(x) EACH_N3(f, __VA_ARGS__)
#define EACH_N5(f, x, ...) f(x) EACH_N4(f, __VA_ARGS__)
#define EACH_N6(f, x, ...) f(x) EACH_N5(f, __VA_ARGS__)
#define EACH_N7(f, x, ...) f(x) EACH_N6(f, __VA_ARGS__)
#define EACH_N8(f, x, ...) f(x) EACH_N7(f, __VA_ARGS__)
#define EACH_N9(f, x, ...) f(x) EACH_N8(f, __VA_ARGS__)
#define EACH_N10(f, x, ...) f(x) EACH_N9(f, __VA_ARGS__)
#define EACH_N11(f, x, ...) f(x) EACH_N10(f, __VA_ARGS__)
#define EACH_N12(f, x, ...) f(x) EACH_N11(f, __VA_ARGS__)
#define EACH_N13(f, x, ...) f(x) EACH_N12(f, __VA_ARGS__)
#define EACH_N14(f, x, ...) f(x) EACH_N13(f, __VA_ARGS__)
#define EACH_N15(f, x, ...) f(x) EACH_N14(f, __VA_ARGS__)
#define EACH_N16(f, x, ...) f(x) EACH_N15(f, __VA_ARGS__)
#define EACH_N17(f, x, ...) f(x) EACH_N16(f, __VA_ARGS__)
#define EACH_N18(f, x, ...) f(x) EACH_N17(f, __VA_ARGS__)
#define EACH_N19(f, x, ...) f(x) EACH_N18(f, __VA_ARGS__)
#define EACH_N20(f, x, ...) f(x) EACH_N19(f, __VA_ARGS__)

/* in->op(in, args...). __VA_OPT__ (C23) drops the comma of an op with no arguments
 * but be; GCC and Clang take it in C11 too. */
#define CALL_INNER(in, op, args) CALL_INNER_(in, op, UNPAREN args)
#define CALL_INNER_(in, op, ...) in->op(in __VA_OPT__(, ) __VA_ARGS__)

/* Tells the hooks about the op (its words, and the shape label made from the
 * format and values after args), and returns the inner backend to run it on. */
#define BEFORE(op, flags, args, ...)                                                                       \
    wrap_state *s_ = ws(be);                                                                               \
    arg_words words_ = {.n = 0};                                                                           \
    EACH(ARG_WORDS, args)                                                                                  \
    char shape_[128];                                                                                      \
    snprintf(shape_, sizeof shape_, __VA_ARGS__);                                                          \
    s_->hooks.before(s_->hooks.ctx, #op, flags, shape_, words_.w, words_.n);                               \
    mlm_backend *in_ = s_->inner;
#define AFTER(op) \
    if (s_->hooks.after) s_->hooks.after(s_->hooks.ctx, #op);

#define MLM_OP(ret, op, flags, params, args, ...)                                                   \
    _Static_assert(_Generic((ret *)0, void *: 1, default: 0), #op " returns a value: MLM_OP_VALUE"); \
    static void w_##op params {                                                                     \
        BEFORE(op, flags, args, __VA_ARGS__)                                                        \
        CALL_INNER(in_, op, args);                                                                  \
        AFTER(op)                                                                                   \
    }
#define MLM_OP_VALUE(ret, op, flags, params, args, ...) \
    static ret w_##op params {                          \
        BEFORE(op, flags, args, __VA_ARGS__)            \
        ret r_ = CALL_INNER(in_, op, args);             \
        AFTER(op)                                       \
        return r_;                                      \
    }
#include "mlm/backend_ops.def"

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
#define MLM_OP(ret, op, ...) .op = w_##op,
#include "mlm/backend_ops.def"
        .replay = hooks->replay ? w_replay : NULL,
        .rows_align = hooks->rows_align ? hooks->rows_align : inner->rows_align,
        .logits_align = inner->logits_align, .destroy = w_destroy,
    };
    mlm_backend_check(be);
    return be;
}
