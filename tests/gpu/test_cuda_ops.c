/*
 * The CUDA backend (src/kernels/) against the CPU backend, the oracle, op by op.
 * Inputs are fresh seeded random numbers rounded to bf16, so both backends start
 * from the same values; shapes include odd ones (d = 72, rows not a multiple of 8,
 * S = 13 with lengths {13, 5, 1}); every output is poisoned with NaN before the op
 * runs; ||gpu - cpu|| / ||cpu|| must stay below 1e-2 on bf16 paths and 1e-5 for
 * fp32 reductions (sum of squares, cross-entropy). Accumulated outputs start from
 * random values and are compared by their increments. Dropout masks must equal
 * the CPU's (zero patterns); bias gradients agree on each path (the GEMM's
 * epilogue, column sums by choice or for want of a cuBLASLt algorithm); a training
 * step of a tiny model must agree in loss (1e-2) and in every gradient tensor
 * (2e-2); the same step twice on the GPU must give bit-identical loss and
 * gradients. Without a usable GPU every test reports itself skipped.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/backend.h"
#include "mlm/backend_cuda.h"
#include "mlm/model.h"
#include "../lcg.h"

static mlm_backend *cpu, *gpu;

/* ---- one tensor on both backends ---- */

typedef enum { ACT, WGT, F32, I32 } kind;   // act, wgt, fp32, int32 buffers
typedef struct {
    void *c, *g;   // CPU and GPU buffers
    size_t n;      // elements
    kind k;
} pair;

enum { MAX_PAIRS = 512, MAX_HOST = 4096, MAX_RAW = 32 };
static pair pairs[MAX_PAIRS];
static int npairs;
static void *host[MAX_HOST];
static int nhost;
static struct { mlm_backend *be; void *p; } raw[MAX_RAW];
static int nraw;

static void need_gpu(void) {
    char err[512];
    gpu = mlm_backend_cuda(0, err, sizeof err);
    if (!gpu) cr_skip_test("no CUDA device: %s", err);
    cpu = mlm_backend_cpu(2);
}

static void teardown(void) {
    if (!gpu) return;
    while (npairs) {
        pair p = pairs[--npairs];
        cpu->free(cpu, p.c);
        gpu->free(gpu, p.g);
    }
    while (nraw) {
        nraw--;
        raw[nraw].be->free(raw[nraw].be, raw[nraw].p);
    }
    while (nhost) free(host[--nhost]);
    gpu->destroy(gpu);
    cpu->destroy(cpu);
}
TestSuite(cuda_ops, .fini = teardown);

static void *hbuf(size_t bytes) {
    cr_assert(nhost < MAX_HOST);
    return host[nhost++] = calloc(1, bytes ? bytes : 1);
}
static float *hf(size_t n) { return hbuf(n * sizeof(float)); }

static void *raw_alloc(mlm_backend *be, size_t bytes) {
    cr_assert(nraw < MAX_RAW);
    raw[nraw].be = be;
    return raw[nraw++].p = be->alloc(be, bytes, "test buffer");
}

/* ---- random inputs ---- */

static uint64_t rng;

static float *rand_buf(size_t n, float center, float spread) {
    float *x = hf(n);
    for (size_t i = 0; i < n; i++) x[i] = bf16r(center + spread * lcg_uniform(&rng));
    return x;
}
static int32_t *rand_ints(size_t n, int hi) {
    int32_t *x = hbuf(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) x[i] = (int32_t)(lcg_next(&rng) % (uint32_t)hi);
    return x;
}

/* ---- pairs: made from host values, or poisoned with NaN when host is NULL ---- */

static void fill(pair p, const void *values) {
    cpu->upload(cpu, p.c, values, p.n * 4);
    if (p.k == ACT) {
        gpu->upload_f32_as_act(gpu, p.g, values, p.n);
    } else if (p.k == WGT) {
        float *master = gpu->alloc(gpu, p.n * sizeof(float), "test master");
        gpu->upload(gpu, master, values, p.n * sizeof(float));
        gpu->copy_master_to_wgt(gpu, p.g, master, p.n);
        gpu->sync(gpu);
        gpu->free(gpu, master);
    } else {
        gpu->upload(gpu, p.g, values, p.n * 4);
    }
}

static pair make(kind k, size_t n, const void *values) {
    cr_assert(npairs < MAX_PAIRS);
    size_t elem = k == ACT ? gpu->act_size : k == WGT ? gpu->wgt_size : 4;
    pair p = {cpu->alloc(cpu, n * 4, "test"), gpu->alloc(gpu, n * elem, "test"), n, k};
    pairs[npairs++] = p;
    if (!values) {
        float *nan = hf(n);
        for (size_t i = 0; i < n; i++) nan[i] = NAN;
        values = nan;
    }
    fill(p, values);
    return p;
}
static pair act(size_t n, const float *v) { return make(ACT, n, v); }
static pair wgt(size_t n, const float *v) { return make(WGT, n, v); }
static pair f32(size_t n, const float *v) { return make(F32, n, v); }
static pair i32(size_t n, const int32_t *v) { return make(I32, n, v); }

/* Host copies of both sides. */
static void fetch(pair p, float **c, float **g) {
    *c = hf(p.n);
    *g = hf(p.n);
    cpu->download(cpu, *c, p.c, p.n * 4);
    if (p.k == ACT || p.k == WGT) gpu->download_act_as_f32(gpu, *g, p.g, p.n);
    else gpu->download(gpu, *g, p.g, p.n * 4);
}

/* ---- comparisons ---- */

static char shape[160];   // the case under test, for messages
#define CASE(...) snprintf(shape, sizeof shape, __VA_ARGS__)

/* ||g - c|| / ||c|| after subtracting base (the start of an accumulation) from
 * both; the absolute norm when c is all zero; NaN when g has a non-finite value. */
static double rel_l2(const float *c, const float *g, const float *base, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(g[i])) return NAN;
        double b = base ? base[i] : 0, x = c[i] - b, y = g[i] - b;
        num += (y - x) * (y - x);
        den += x * x;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ||got - ref|| / ||ref|| over columns [c0, c1) of (rows, cols) tensors. */
static void expect_close_cols(const float *ref, const float *got, size_t rows, int cols, int c0, int c1,
                              double tol, const char *what) {
    double num = 0, den = 0;
    int finite = 1;
    for (size_t r = 0; r < rows; r++)
        for (int c = c0; c < c1; c++) {
            double x = ref[r * cols + c], y = got[r * cols + c];
            finite &= isfinite(y) != 0;
            num += (y - x) * (y - x);
            den += x * x;
        }
    double e = !finite ? NAN : den > 0 ? sqrt(num / den) : sqrt(num);
    cr_expect(e < tol, "%s [%s]: ||got - ref|| / ||ref|| = %.3g, limit %.3g", what, shape, e, tol);
}

static void expect_close(pair p, const float *base, double tol, const char *what) {
    float *c, *g;
    fetch(p, &c, &g);
    double e = rel_l2(c, g, base, p.n);
    cr_expect(e < tol, "%s [%s]: ||gpu - cpu|| / ||cpu|| = %.3g, limit %.3g", what, shape, e, tol);
}

/* Logits rows of V columns, ldl apart, on both backends. */
static size_t logits_ld(int V) { return ((size_t)V + 127) / 128 * 128; }

/* A logits pair: the first V columns of each row as values gives them (bf16-exact),
 * the rest NaN, which no op may read or write. */
static pair logits_pair(int M, int V, const float *values) {
    size_t ld = logits_ld(V);
    float *x = hf((size_t)M * ld);
    for (size_t i = 0; i < (size_t)M * ld; i++) x[i] = NAN;
    if (values)
        for (int r = 0; r < M; r++) memcpy(x + r * ld, values + (size_t)r * V, (size_t)V * sizeof(float));
    return act((size_t)M * ld, x);
}

/* The V columns as expect_close, and the padding columns still NaN on both. */
static void expect_logits(pair p, int M, int V, double tol, const char *what) {
    size_t ld = logits_ld(V), touched = 0;
    float *c, *g;
    fetch(p, &c, &g);
    expect_close_cols(c, g, M, (int)ld, 0, V, tol, what);
    for (int r = 0; r < M; r++)
        for (size_t j = V; j < ld; j++) touched += !isnan(c[r * ld + j]) + !isnan(g[r * ld + j]);
    cr_expect(touched == 0, "%s [%s]: %zu padding columns written", what, shape, touched);
}


/* The elements that are exactly 0 must be the same on both; returns how many. */
static size_t expect_same_zeros(pair p, const char *what) {
    float *c, *g;
    fetch(p, &c, &g);
    size_t zeros = 0, differ = 0;
    for (size_t i = 0; i < p.n; i++) {
        zeros += c[i] == 0.0f;
        differ += (c[i] == 0.0f) != (g[i] == 0.0f);
    }
    cr_expect(differ == 0, "%s [%s]: %zu of %zu elements dropped on one backend only", what, shape, differ, p.n);
    return zeros;
}

/* ---- dropout ---- */

static mlm_dropout drop_at(float p, uint32_t site) {
    mlm_dropout d = {0, 1.0f, 0x9e3779b97f4a7c15ull, 11, site, 5, NULL};
    if (p > 0) {
        d.threshold = (uint32_t)(p * 4294967296.0);
        d.scale = 1.0f / (1.0f - p);
    }
    return d;
}

/* ================= ops ================= */

Test(cuda_ops, linear) {
    need_gpu();
    rng = 101;
    const int shapes[][3] = {{39, 72, 216}, {64, 128, 512}, {7, 72, 72}, {37, 72, 997}};   // N, I, O
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
        for (int a = MLM_ACT_NONE; a <= MLM_ACT_GELU; a++) {
            CASE("N=%d I=%d O=%d act=%d", N, I, O, a);
            pair in = act((size_t)N * I, rand_buf((size_t)N * I, 0, 1));
            pair W = wgt((size_t)O * I, rand_buf((size_t)O * I, 0, 0.2f));
            pair b = wgt(O, rand_buf(O, 0, 0.5f));
            pair out = act((size_t)N * O, NULL), pre = act((size_t)N * O, NULL);
            for (mlm_backend *be = cpu;; be = gpu) {
                int g = be == gpu;
                be->linear_fwd(be, g ? out.g : out.c, a ? (g ? pre.g : pre.c) : NULL, g ? in.g : in.c,
                               g ? W.g : W.c, g ? b.g : b.c, N, I, O, (mlm_act)a);
                if (g) break;
            }
            expect_close(out, NULL, 1e-2, "linear_fwd out");
            if (a) expect_close(pre, NULL, 1e-2, "linear_fwd pre");

            // backward, with and without bias gradient and din accumulation
            for (int variant = 0; variant < 3; variant++) {
                int acc = variant == 1, with_db = variant != 2, with_din = variant != 2;
                CASE("N=%d I=%d O=%d act=%d variant=%d", N, I, O, a, variant);
                float *dW0 = rand_buf((size_t)O * I, 0, 1), *db0 = rand_buf(O, 0, 1);
                pair dout = act((size_t)N * O, rand_buf((size_t)N * O, 0, 1));
                pair dW = f32((size_t)O * I, dW0), db = f32(O, db0);
                float *din0 = acc ? rand_buf((size_t)N * I, 0, 1) : NULL;
                pair din = act((size_t)N * I, din0);
                for (mlm_backend *be = cpu;; be = gpu) {
                    int g = be == gpu;
                    be->linear_bwd(be, with_din ? (g ? din.g : din.c) : NULL, g ? dW.g : dW.c,
                                   with_db ? (g ? db.g : db.c) : NULL, g ? dout.g : dout.c, g ? in.g : in.c,
                                   g ? W.g : W.c, a ? (g ? pre.g : pre.c) : NULL, N, I, O, (mlm_act)a, acc);
                    if (g) break;
                }
                expect_close(dW, dW0, 1e-2, "linear_bwd dW");
                if (with_db) expect_close(db, db0, 1e-2, "linear_bwd db");
                if (with_din) expect_close(din, din0, 1e-2, "linear_bwd din");
                if (a) expect_close(dout, NULL, 1e-2, "linear_bwd dout * gelu'(pre)");
            }
        }
    }
}

/* Weight and bias gradients of a linear layer and of the decoder against the CPU's,
 * on whichever path the backend takes for the bias gradient. */
static void weight_grads_against_cpu(void) {
    rng = 107;
    const int shapes[][3] = {{39, 72, 216}, {37, 72, 997}};   // N, I, O
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
        CASE("linear N=%d I=%d O=%d", N, I, O);
        pair in = act((size_t)N * I, rand_buf((size_t)N * I, 0, 1));
        pair W = wgt((size_t)O * I, rand_buf((size_t)O * I, 0, 0.2f));
        pair dout = act((size_t)N * O, rand_buf((size_t)N * O, 0, 1));
        float *dW0 = rand_buf((size_t)O * I, 0, 1), *db0 = rand_buf(O, 0, 1);
        pair dW = f32((size_t)O * I, dW0), db = f32(O, db0), din = act((size_t)N * I, NULL);
        cpu->linear_bwd(cpu, din.c, dW.c, db.c, dout.c, in.c, W.c, NULL, N, I, O, MLM_ACT_NONE, 0);
        gpu->linear_bwd(gpu, din.g, dW.g, db.g, dout.g, in.g, W.g, NULL, N, I, O, MLM_ACT_NONE, 0);
        expect_close(dW, dW0, 1e-2, "linear_bwd dW");
        expect_close(db, db0, 1e-5, "linear_bwd db (fp32 sums)");
        expect_close(din, NULL, 1e-2, "linear_bwd din");
    }
    int M = 13, d = 64, V = 1000, ldl = (int)logits_ld(V);
    CASE("decoder M=%d d=%d V=%d", M, d, V);
    pair in = act((size_t)M * d, rand_buf((size_t)M * d, 0, 1));
    pair W = wgt((size_t)V * d, rand_buf((size_t)V * d, 0, 0.2f));
    pair dlogits = logits_pair(M, V, rand_buf((size_t)M * V, 0, 0.01f));
    float *dW0 = rand_buf((size_t)V * d, 0, 1), *db0 = rand_buf(V, 0, 1);
    pair dW = f32((size_t)V * d, dW0), db = f32(V, db0), din = act((size_t)M * d, NULL);
    cpu->decoder_bwd(cpu, din.c, dW.c, db.c, dlogits.c, in.c, W.c, M, d, V, ldl);
    gpu->decoder_bwd(gpu, din.g, dW.g, db.g, dlogits.g, in.g, W.g, M, d, V, ldl);
    expect_close(dW, dW0, 1e-2, "decoder_bwd dW");
    expect_close(db, db0, 1e-5, "decoder_bwd db (fp32 sums)");
}

/* The bias gradients come from the weight-gradient GEMM's epilogue by default (the
 * linear and decoder tests); MLM_BIAS_GRAD=colsum sums them in separate passes. */
Test(cuda_ops, bias_grads_by_column_sums) {
    setenv("MLM_BIAS_GRAD", "colsum", 1);
    need_gpu();
    weight_grads_against_cpu();
}

/* Where cuBLASLt has no algorithm with the bias-gradient epilogue, or refuses the one
 * its heuristic offered, the backend falls back to the column sums. The emulated
 * cuBLASLt does either with EMU_LT_NO_BGRAD; a real one ignores the variable, and
 * these repeat the default path. */
Test(cuda_ops, bias_grads_without_an_epilogue_algorithm) {
    setenv("EMU_LT_NO_BGRAD", "heuristic", 1);
    need_gpu();
    weight_grads_against_cpu();
}

Test(cuda_ops, bias_grads_when_the_epilogue_is_refused) {
    setenv("EMU_LT_NO_BGRAD", "matmul", 1);
    need_gpu();
    weight_grads_against_cpu();
    weight_grads_against_cpu();   // again, the refusal remembered
}

/* MLM_GEMM_TUNE=1: each GEMM problem's first call times cuBLASLt's candidates and
 * keeps the fastest; the timing runs write elsewhere, so results stay the CPU's and
 * accumulations (beta 1) happen once. The emulated cuBLASLt offers three algorithms
 * and makes its first slow (EMU_LT_SLOW_ALGO=0): there every problem moves off it. */
Test(cuda_ops, gemm_tuning) {
    setenv("MLM_GEMM_TUNE", "1", 1);
    setenv("EMU_LT_SLOW_ALGO", "0", 1);
    need_gpu();
    rng = 109;
    int N = 39, I = 72, O = 216;
    CASE("linear_fwd N=%d I=%d O=%d", N, I, O);
    pair in = act((size_t)N * I, rand_buf((size_t)N * I, 0, 1));
    pair W = wgt((size_t)O * I, rand_buf((size_t)O * I, 0, 0.2f));
    pair b = wgt(O, rand_buf(O, 0, 0.5f));
    pair out = act((size_t)N * O, NULL), pre = act((size_t)N * O, NULL);
    cpu->linear_fwd(cpu, out.c, pre.c, in.c, W.c, b.c, N, I, O, MLM_ACT_GELU);
    gpu->linear_fwd(gpu, out.g, pre.g, in.g, W.g, b.g, N, I, O, MLM_ACT_GELU);
    expect_close(out, NULL, 1e-2, "linear_fwd out");
    weight_grads_against_cpu();
    int tuned = 0, changed = 0;
    mlm_cuda_gemm_tuning(gpu, &tuned, &changed);
#ifdef MLM_TEST_EMU
    // the forward GEMM, and the dW (bias-gradient epilogue) and din GEMMs of three shapes
    cr_expect_eq(tuned, 7, "%d GEMM problems timed", tuned);
    cr_expect_eq(changed, tuned, "%d of %d timed problems left the slow algorithm", changed, tuned);
#else
    cr_expect_gt(tuned, 0, "no GEMM problem was timed: cuBLASLt offered one algorithm for each");
#endif
}

Test(cuda_ops, decoder) {
    need_gpu();
    rng = 102;
    // M, d, V: odd and even vocabularies, BERT's 30522 (rows padded to 30592)
    const int shapes[][3] = {{5, 72, 997}, {37, 72, 1000}, {64, 128, 4096}, {13, 64, 30522}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], d = shapes[s][1], V = shapes[s][2], ldl = (int)logits_ld(V);
        CASE("M=%d d=%d V=%d", M, d, V);
        pair in = act((size_t)M * d, rand_buf((size_t)M * d, 0, 1));
        pair W = wgt((size_t)V * d, rand_buf((size_t)V * d, 0, 0.2f));
        pair b = wgt(V, rand_buf(V, 0, 0.5f));
        pair logits = logits_pair(M, V, NULL);
        cpu->decoder_fwd(cpu, logits.c, in.c, W.c, b.c, M, d, V, ldl);
        gpu->decoder_fwd(gpu, logits.g, in.g, W.g, b.g, M, d, V, ldl);
        expect_logits(logits, M, V, 1e-2, "decoder_fwd logits");

        float *dW0 = rand_buf((size_t)V * d, 0, 1), *db0 = rand_buf(V, 0, 1);
        // the gradient as the cross-entropy leaves it: bf16, NaN past V (never read)
        pair dlogits = logits_pair(M, V, rand_buf((size_t)M * V, 0, 0.01f));
        pair dW = f32((size_t)V * d, dW0), db = f32(V, db0), din = act((size_t)M * d, NULL);
        cpu->decoder_bwd(cpu, din.c, dW.c, db.c, dlogits.c, in.c, W.c, M, d, V, ldl);
        gpu->decoder_bwd(gpu, din.g, dW.g, db.g, dlogits.g, in.g, W.g, M, d, V, ldl);
        expect_close(din, NULL, 1e-2, "decoder_bwd din");
        expect_close(dW, dW0, 1e-2, "decoder_bwd dW");
        expect_close(db, db0, 1e-5, "decoder_bwd db (fp32 column sums)");
    }
}

Test(cuda_ops, embeddings) {
    need_gpu();
    rng = 103;
    const int shapes[][2] = {{3, 13}, {24, 13}};   // B, S; the second has runs of id 0 across chunks
    int d = 72, V = 50, P = 16, T = 2;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], S = shapes[s][1], N = B * S;
        for (int variant = 0; variant < 4; variant++) {
            int with_types = variant & 1, dropping = variant >> 1;
            CASE("B=%d S=%d d=%d types=%d dropout=%d", B, S, d, with_types, dropping);
            int32_t *ids_h = rand_ints(N, V);
            for (int r = 0; r < N; r++)
                if (lcg_next(&rng) % 10 < 6) ids_h[r] = 0;   // a frequent id, as [PAD]
            pair ids = i32(N, ids_h), types = i32(N, rand_ints(N, T));
            pair wte = wgt((size_t)V * d, rand_buf((size_t)V * d, 0, 1));
            pair wpe = wgt((size_t)P * d, rand_buf((size_t)P * d, 0, 1));
            pair wtt = wgt((size_t)T * d, rand_buf((size_t)T * d, 0, 1));
            pair lw = wgt(d, rand_buf(d, 1, 0.2f)), lb = wgt(d, rand_buf(d, 0, 0.2f));
            pair out = act((size_t)N * d, NULL), sum = act((size_t)N * d, NULL);
            pair mean = f32(N, NULL), rstd = f32(N, NULL);
            mlm_dropout drop = drop_at(dropping ? 0.1f : 0.0f, 0);
            float *dwte0 = rand_buf((size_t)V * d, 0, 1), *dwpe0 = rand_buf((size_t)P * d, 0, 1);
            float *dwtt0 = rand_buf((size_t)T * d, 0, 1), *dlw0 = rand_buf(d, 0, 1), *dlb0 = rand_buf(d, 0, 1);
            pair dout = act((size_t)N * d, rand_buf((size_t)N * d, 0, 1));
            pair dwte = f32((size_t)V * d, dwte0), dwpe = f32((size_t)P * d, dwpe0), dwtt = f32((size_t)T * d, dwtt0);
            pair dlw = f32(d, dlw0), dlb = f32(d, dlb0);
            for (mlm_backend *be = cpu;; be = gpu) {
                int g = be == gpu;
                const int32_t *ty = with_types ? (g ? types.g : types.c) : NULL;
                be->embed_fwd(be, g ? out.g : out.c, g ? sum.g : sum.c, g ? mean.g : mean.c, g ? rstd.g : rstd.c,
                              g ? ids.g : ids.c, ty, g ? wte.g : wte.c, g ? wpe.g : wpe.c, g ? wtt.g : wtt.c,
                              g ? lw.g : lw.c, g ? lb.g : lb.c, B, S, d, 1e-12f, &drop);
                be->embed_bwd(be, g ? dwte.g : dwte.c, g ? dwpe.g : dwpe.c, g ? dwtt.g : dwtt.c, g ? dlw.g : dlw.c,
                              g ? dlb.g : dlb.c, g ? dout.g : dout.c, g ? sum.g : sum.c, g ? mean.g : mean.c,
                              g ? rstd.g : rstd.c, g ? ids.g : ids.c, ty, g ? lw.g : lw.c, B, S, d, &drop);
                if (g) break;
            }
            expect_close(sum, NULL, 1e-2, "embed_fwd sum");
            expect_close(out, NULL, 1e-2, "embed_fwd out");
            expect_close(mean, NULL, 1e-2, "embed_fwd mean");
            expect_close(rstd, NULL, 1e-2, "embed_fwd rstd");
            size_t dropped = expect_same_zeros(out, "embed_fwd dropout mask");
            if (dropping) cr_expect(dropped > 0, "embed_fwd [%s]: nothing dropped", shape);
            expect_close(dwte, dwte0, 1e-2, "embed_bwd dwte");
            expect_close(dwpe, dwpe0, 1e-2, "embed_bwd dwpe");
            expect_close(dwtt, dwtt0, 1e-2, "embed_bwd dwtt");
            expect_close(dlw, dlw0, 1e-2, "embed_bwd dln_w");
            expect_close(dlb, dlb0, 1e-2, "embed_bwd dln_b");
        }
    }
}

Test(cuda_ops, residual_layernorm) {
    need_gpu();
    rng = 104;
    // B, S, d: one backward block of 32 rows and a part; 4 whole blocks; 6 and a part
    const int shapes[][3] = {{3, 13, 72}, {2, 64, 768}, {5, 41, 136}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], S = shapes[s][1], d = shapes[s][2], N = B * S;
        for (int variant = 0; variant < 3; variant++) {
            int dropping = variant > 0, with_dres = variant < 2, with_bias = variant != 1;
            CASE("B=%d S=%d d=%d dropout=%d dres=%d dbias=%d", B, S, d, dropping, with_dres, with_bias);
            pair x = act((size_t)N * d, rand_buf((size_t)N * d, 0, 1));
            pair res = act((size_t)N * d, rand_buf((size_t)N * d, 0.3f, 1));
            pair lw = wgt(d, rand_buf(d, 1, 0.2f)), lb = wgt(d, rand_buf(d, 0, 0.2f));
            pair out = act((size_t)N * d, NULL), sv = act((size_t)N * d, NULL);
            pair mean = f32(N, NULL), rstd = f32(N, NULL);
            float *dlw0 = rand_buf(d, 0, 1), *dlb0 = rand_buf(d, 0, 1);
            pair dout = act((size_t)N * d, rand_buf((size_t)N * d, 0, 1));
            pair dx = act((size_t)N * d, NULL), dres = act((size_t)N * d, NULL);
            pair dlw = f32(d, dlw0), dlb = f32(d, dlb0);
            float *dbias0 = rand_buf(d, 0, 1);
            pair dbias = f32(d, dbias0);
            mlm_dropout drop = drop_at(dropping ? 0.1f : 0.0f, 4);
            for (mlm_backend *be = cpu;; be = gpu) {
                int g = be == gpu;
                be->residual_ln_fwd(be, g ? out.g : out.c, g ? sv.g : sv.c, g ? mean.g : mean.c,
                                    g ? rstd.g : rstd.c, g ? x.g : x.c, g ? res.g : res.c, g ? lw.g : lw.c,
                                    g ? lb.g : lb.c, B, S, d, 1e-12f, &drop);
                be->residual_ln_bwd(be, g ? dx.g : dx.c, with_dres ? (g ? dres.g : dres.c) : NULL,
                                    g ? dlw.g : dlw.c, g ? dlb.g : dlb.c,
                                    with_bias ? (g ? dbias.g : dbias.c) : NULL, g ? dout.g : dout.c, g ? sv.g : sv.c,
                                    g ? mean.g : mean.c, g ? rstd.g : rstd.c, g ? lw.g : lw.c, B, S, d, &drop);
                if (g) break;
            }
            expect_close(sv, NULL, 1e-2, "residual_ln_fwd s");
            expect_close(out, NULL, 1e-2, "residual_ln_fwd out");
            expect_close(mean, NULL, 1e-2, "residual_ln_fwd mean");
            expect_close(rstd, NULL, 1e-2, "residual_ln_fwd rstd");
            expect_close(dx, NULL, 1e-2, "residual_ln_bwd dx");
            if (with_dres) expect_close(dres, NULL, 1e-2, "residual_ln_bwd dres");
            expect_close(dlw, dlw0, 1e-2, "residual_ln_bwd dln_w");
            expect_close(dlb, dlb0, 1e-2, "residual_ln_bwd dln_b");
            expect_close(dbias, dbias0, 1e-2, "residual_ln_bwd dbias");
            if (!with_bias) {   // untouched on both
                float *bc, *bg;
                fetch(dbias, &bc, &bg);
                for (int c = 0; c < d; c++)
                    cr_expect(bc[c] == dbias0[c] && bg[c] == dbias0[c], "dbias[%d] changed without dbias", c);
            }
            size_t dropped = expect_same_zeros(dx, "residual_ln_bwd dropout mask");
            if (dropping) cr_expect(dropped > 0, "residual_ln_bwd [%s]: nothing dropped", shape);
        }
    }
}

Test(cuda_ops, layernorm) {
    need_gpu();
    rng = 105;
    const int shapes[][2] = {{5, 72}, {37, 72}, {37, 768}};   // M, d
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], d = shapes[s][1];
        CASE("M=%d d=%d", M, d);
        pair x = act((size_t)M * d, rand_buf((size_t)M * d, 0.5f, 2));
        pair lw = wgt(d, rand_buf(d, 1, 0.2f)), lb = wgt(d, rand_buf(d, 0, 0.2f));
        pair out = act((size_t)M * d, NULL), mean = f32(M, NULL), rstd = f32(M, NULL);
        float *dlw0 = rand_buf(d, 0, 1), *dlb0 = rand_buf(d, 0, 1);
        pair dout = act((size_t)M * d, rand_buf((size_t)M * d, 0, 1)), dx = act((size_t)M * d, NULL);
        pair dlw = f32(d, dlw0), dlb = f32(d, dlb0);
        for (mlm_backend *be = cpu;; be = gpu) {
            int g = be == gpu;
            be->layernorm_fwd(be, g ? out.g : out.c, g ? mean.g : mean.c, g ? rstd.g : rstd.c, g ? x.g : x.c,
                              g ? lw.g : lw.c, g ? lb.g : lb.c, M, d, 1e-12f);
            be->layernorm_bwd(be, g ? dx.g : dx.c, g ? dlw.g : dlw.c, g ? dlb.g : dlb.c, g ? dout.g : dout.c,
                              g ? x.g : x.c, g ? mean.g : mean.c, g ? rstd.g : rstd.c, g ? lw.g : lw.c, M, d);
            if (g) break;
        }
        expect_close(out, NULL, 1e-2, "layernorm_fwd out");
        expect_close(mean, NULL, 1e-2, "layernorm_fwd mean");
        expect_close(rstd, NULL, 1e-2, "layernorm_fwd rstd");
        expect_close(dx, NULL, 1e-2, "layernorm_bwd dx");
        expect_close(dlw, dlw0, 1e-2, "layernorm_bwd dln_w");
        expect_close(dlb, dlb0, 1e-2, "layernorm_bwd dln_b");
    }
}

Test(cuda_ops, attention) {
    need_gpu();
    rng = 106;
    struct { int B, S, H, dh; int32_t lengths[3]; } cases[] = {
        {3, 13, 6, 12, {13, 5, 1}},
        {2, 64, 2, 64, {64, 40, 0}},
    };
    for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
        int B = cases[s].B, S = cases[s].S, H = cases[s].H, dh = cases[s].dh, N = B * S, d = H * dh;
        for (int dropping = 0; dropping < 2; dropping++) {
            CASE("B=%d S=%d H=%d dh=%d dropout=%d", B, S, H, dh, dropping);
            pair qkv = act((size_t)N * 3 * d, rand_buf((size_t)N * 3 * d, 0, 1));
            pair lengths = i32(B, cases[s].lengths);
            pair out = act((size_t)N * d, NULL), dqkv = act((size_t)N * 3 * d, NULL);
            pair dout = act((size_t)N * d, rand_buf((size_t)N * d, 0, 1));
            mlm_dropout drop = drop_at(dropping ? 0.1f : 0.0f, 1);
            for (mlm_backend *be = cpu;; be = gpu) {
                int g = be == gpu;
                void *saved = raw_alloc(be, be->attention_saved_bytes(be, B, S, H));
                be->attention_fwd(be, g ? out.g : out.c, saved, g ? qkv.g : qkv.c, g ? lengths.g : lengths.c, B, S,
                                  H, dh, &drop);
                be->attention_bwd(be, g ? dqkv.g : dqkv.c, g ? dout.g : dout.c, g ? qkv.g : qkv.c, g ? out.g : out.c,
                                  saved, g ? lengths.g : lengths.c, B, S, H, dh, &drop);
                if (g) break;
            }
            expect_close(out, NULL, 1e-2, "attention_fwd out");
            expect_close(dqkv, NULL, 1e-2, "attention_bwd dqkv");
        }
    }
}

/* gather_rows and scatter_rows on both backends for rows (-1: padding). */
static void rows_case(const int32_t *rows_h, int M, int N, int d) {
    pair rows = i32(M, rows_h);
    pair full = act((size_t)N * d, rand_buf((size_t)N * d, 0, 1)), got = act((size_t)M * d, NULL);
    pair drows = act((size_t)M * d, rand_buf((size_t)M * d, 0, 1)), dfull = act((size_t)N * d, NULL);
    CASE("N=%d M=%d d=%d rows[1]=%d", N, M, d, rows_h[1]);
    for (mlm_backend *be = cpu;; be = gpu) {
        int g = be == gpu;
        be->gather_rows(be, g ? got.g : got.c, g ? full.g : full.c, g ? rows.g : rows.c, M, d);
        be->scatter_rows(be, g ? dfull.g : dfull.c, g ? drows.g : drows.c, g ? rows.g : rows.c, M, N, d);
        if (g) break;
    }
    expect_close(got, NULL, 1e-6, "gather_rows");
    expect_close(dfull, NULL, 1e-6, "scatter_rows");
}

Test(cuda_ops, masked_rows) {
    need_gpu();
    rng = 107;
    int32_t rows_h[] = {0, 3, 12, 13, 20, 31, 38};
    rows_case(rows_h, 7, 39, 72);
}

/* Logits are bf16 on the GPU: both backends get the same bf16-exact values; the
 * gradient comes back in bf16 (1e-2), the statistics in fp32 (1e-5). V = 997 and
 * 1000 hold one 8-column run a thread, 30522 eight, 70001 the re-reading path. */
Test(cuda_ops, cross_entropy) {
    need_gpu();
    rng = 108;
    const int shapes[][2] = {{1, 997}, {37, 1000}, {13, 30522}, {3, 70001}};   // M, V
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], V = shapes[s][1], ldl = (int)logits_ld(V);
        for (int eval = 0; eval < 2; eval++) {
            CASE("M=%d V=%d scale=%s", M, V, eval ? "0" : "1/M");
            float stats0[2] = {1.5f, 2.0f};
            pair logits = logits_pair(M, V, rand_buf((size_t)M * V, 0, 6.0f));
            pair labels = i32(M, rand_ints(M, V)), stats = f32(2, stats0);
            float scale = eval ? 0.0f : 1.0f / M;
            cpu->cross_entropy(cpu, logits.c, labels.c, M, V, ldl, scale, NULL, stats.c);
            gpu->cross_entropy(gpu, logits.g, labels.g, M, V, ldl, scale, NULL, stats.g);
            expect_logits(logits, M, V, eval ? 1e-5 : 1e-2, "cross_entropy dlogits");
            expect_close(stats, stats0, 1e-5, "cross_entropy stats");
        }
    }
}

/* Small uploads go through a ring of pinned slots and return before the device has
 * copied: the host buffer is rewritten right after each call, more calls than slots,
 * and every destination must still get what the buffer held at its call; an upload
 * over the slot size takes the pageable path. */
Test(cuda_ops, uploads_keep_what_the_host_held_at_the_call) {
    need_gpu();
    enum { CALLS = 20, BIG = 3 << 20 };
    int32_t *host_buf = hbuf(BIG), *back = hbuf(BIG);
    int32_t *dst[CALLS];
    for (int i = 0; i < CALLS; i++) {
        size_t n = 1000 + 517 * (size_t)i;
        dst[i] = raw_alloc(gpu, n * sizeof(int32_t));
        for (size_t k = 0; k < n; k++) host_buf[k] = (int32_t)(i * 1000003 + k);
        gpu->upload(gpu, dst[i], host_buf, n * sizeof(int32_t));
    }
    for (size_t k = 0; k < BIG / 4; k++) host_buf[k] = (int32_t)(7 * k + 1);
    int32_t *big = raw_alloc(gpu, BIG);
    gpu->upload(gpu, big, host_buf, BIG);
    memset(host_buf, 0, BIG);
    for (int i = 0; i < CALLS; i++) {
        size_t n = 1000 + 517 * (size_t)i, wrong = 0;
        gpu->download(gpu, back, dst[i], n * sizeof(int32_t));
        for (size_t k = 0; k < n; k++) wrong += back[k] != (int32_t)(i * 1000003 + k);
        cr_expect_eq(wrong, 0, "upload %d: %zu of %zu values are not what the host held", i, wrong, n);
    }
    gpu->download(gpu, back, big, BIG);
    size_t wrong = 0;
    for (size_t k = 0; k < BIG / 4; k++) wrong += back[k] != (int32_t)(7 * k + 1);
    cr_expect_eq(wrong, 0, "the %d-byte upload: %zu values wrong", BIG, wrong);
}

Test(cuda_ops, sum_squares) {
    need_gpu();
    rng = 109;
    const size_t sizes[] = {1, 1000003, 3u << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        CASE("n=%zu", n);
        float *g = hf(n);
        for (size_t i = 0; i < n; i++) g[i] = 1e-3f * lcg_uniform(&rng);
        pair grads = f32(n, g), out = f32(1, NULL);
        cpu->sum_squares(cpu, out.c, grads.c, n);
        gpu->sum_squares(gpu, out.g, grads.g, n);
        expect_close(out, NULL, 1e-5, "sum_squares");
    }
}

Test(cuda_ops, adamw) {
    need_gpu();
    rng = 110;
    size_t n = 1003, off = 3;   // off: a slice that is not 16-byte aligned
    for (int clip = 0; clip < 2; clip++)
        for (int sliced = 0; sliced < 2; sliced++) {
            size_t o = sliced ? off : 0, len = n - o;
            CASE("n=%zu offset=%zu clip=%d", len, o, clip);
            float *p0 = rand_buf(n, 0, 1), *gnorm_h = hf(1);
            gnorm_h[0] = 4.0f;
            pair master = f32(n, p0), w = wgt(n, p0), g = f32(n, rand_buf(n, 0, 1));
            pair m = f32(n, rand_buf(n, 0, 0.1f)), v = f32(n, rand_buf(n, 0.5f, 0.4f)), gnorm = f32(1, gnorm_h);
            mlm_adamw_args a = {1e-3f, 0.9f, 0.999f, 1e-6f, 0.01f, 3, clip ? 1.0f : 0.0f};
            cpu->adamw(cpu, (float *)master.c + o, (float *)w.c + o, (float *)g.c + o, (float *)m.c + o,
                       (float *)v.c + o, len, &a, gnorm.c);
            gpu->adamw(gpu, (float *)master.g + o, (char *)w.g + o * gpu->wgt_size, (float *)g.g + o, (float *)m.g + o,
                       (float *)v.g + o, len, &a, gnorm.g);
            expect_close(master, NULL, 1e-5, "adamw master");
            expect_close(m, NULL, 1e-5, "adamw m");
            expect_close(v, NULL, 1e-5, "adamw v");
            expect_close(w, NULL, 1e-2, "adamw bf16 weights");
            expect_close(g, NULL, 1e-30, "adamw zeroes the gradient it read, and nothing before the slice");
        }
}

Test(cuda_ops, dropout_masks_match_cpu) {
    need_gpu();
    rng = 111;
    int B = 4, S = 128, d = 768, N = B * S;
    CASE("B=%d S=%d d=%d p=0.3", B, S, d);
    float *zeros = hf((size_t)N * d);
    pair x = act((size_t)N * d, rand_buf((size_t)N * d, 2, 1)), res = act((size_t)N * d, zeros);
    pair lw = wgt(d, rand_buf(d, 1, 0.2f)), lb = wgt(d, rand_buf(d, 0, 0.2f));
    pair out = act((size_t)N * d, NULL), sv = act((size_t)N * d, NULL), mean = f32(N, NULL), rstd = f32(N, NULL);
    mlm_dropout drop = drop_at(0.3f, 7);
    cpu->residual_ln_fwd(cpu, out.c, sv.c, mean.c, rstd.c, x.c, res.c, lw.c, lb.c, B, S, d, 1e-12f, &drop);
    gpu->residual_ln_fwd(gpu, out.g, sv.g, mean.g, rstd.g, x.g, res.g, lw.g, lb.g, B, S, d, 1e-12f, &drop);
    size_t dropped = expect_same_zeros(sv, "dropout(x) + 0");
    double frac = (double)dropped / ((double)N * d);
    cr_expect(fabs(frac - 0.3) < 0.01, "dropped fraction %.4f, expected 0.3", frac);
}

/* ================= a training step of a tiny model ================= */

static const mlm_model_config tiny = {
    .vocab_size = 101, .hidden_size = 72, .num_layers = 2, .num_heads = 6, .intermediate_size = 144,
    .max_position = 16, .type_vocab_size = 2, .layer_norm_eps = 1e-12f, .hidden_dropout = 0.1f,
    .attention_dropout = 0.1f, .init_range = 0.02f,
};
enum { TB = 3, TS = 13, TM = 6 };

typedef struct {
    int32_t ids[TB * TS], lengths[TB], rows[TM], labels[TM];
    mlm_batch b;
} tiny_batch;

static void make_batch(tiny_batch *t) {
    const int32_t lengths[TB] = {13, 5, 1}, rows[TM] = {1, 4, 7, 11, 13 + 2, 26};
    memcpy(t->lengths, lengths, sizeof lengths);
    memcpy(t->rows, rows, sizeof rows);
    for (int r = 0; r < TB * TS; r++) t->ids[r] = r % TS < lengths[r / TS] ? 5 + (int32_t)(lcg_next(&rng) % 96) : 0;
    for (int i = 0; i < TM; i++) {
        t->labels[i] = t->ids[rows[i]];
        t->ids[rows[i]] = 4;   // [MASK]
    }
    t->b = (mlm_batch){TB, TS, TM, t->ids, NULL, t->lengths, t->rows, t->labels, 2, 9};
}

/* Parameters with enough spread that attention is far from uniform, bf16-exact. */
static float *tiny_params(const mlm_layout *lay) {
    float *p = hf(lay->num_params);
    for (int id = 0; id < MLM_T_COUNT; id++) {
        const mlm_tensor_info *t = &lay->t[id];
        float center = t->init == MLM_INIT_ONE ? 1.0f : 0.0f;   // LayerNorm weights about 1
        for (size_t i = 0; i < t->numel; i++) p[t->offset + i] = bf16r(center + 0.1f * lcg_uniform(&rng));
    }
    return p;
}

/* One micro-step from params: the loss sum and the gradients (host). */
static void train_step(mlm_backend *be, const float *params, const tiny_batch *t, float *loss, float *grads) {
    mlm_model m;
    mlm_model_create(&m, &tiny, be, TB, TS, TM, 77);
    mlm_model_set_params(&m, params);
    mlm_model_step_micro(&m, &t->b, 1.0f / TM);
    float stats[4];
    be->download(be, stats, m.stats, sizeof stats);
    be->download(be, grads, m.grads, m.lay.num_params * sizeof(float));
    *loss = stats[0];
    mlm_model_destroy(&m);
}

Test(cuda_ops, train_step_matches_cpu) {
    need_gpu();
    rng = 112;
    mlm_layout lay;
    mlm_layout_init(&lay, &tiny);
    tiny_batch t;
    make_batch(&t);
    float *params = tiny_params(&lay), *gc = hf(lay.num_params), *gg = hf(lay.num_params), lc, lg;
    train_step(cpu, params, &t, &lc, gc);
    train_step(gpu, params, &t, &lg, gg);
    CASE("tiny model, B=%d S=%d M=%d", TB, TS, TM);
    cr_expect(isfinite(lg) && fabs(lg - lc) < 1e-2 * fabs(lc), "loss: gpu %.6g, cpu %.6g", lg, lc);
    for (int id = 0; id < MLM_T_COUNT; id++) {
        const mlm_tensor_info *ti = &lay.t[id];
        double e = rel_l2(gc + ti->offset, gg + ti->offset, NULL, ti->numel);
        cr_expect(e < 2e-2, "gradient of %s: ||gpu - cpu|| / ||cpu|| = %.3g, limit 2e-2", ti->name, e);
    }
}

Test(cuda_ops, train_step_is_deterministic) {
    need_gpu();
    rng = 113;
    mlm_layout lay;
    mlm_layout_init(&lay, &tiny);
    tiny_batch t;
    make_batch(&t);
    float *params = tiny_params(&lay), *g1 = hf(lay.num_params), *g2 = hf(lay.num_params), l1, l2;
    train_step(gpu, params, &t, &l1, g1);
    train_step(gpu, params, &t, &l2, g2);
    cr_expect(memcmp(&l1, &l2, sizeof l1) == 0, "loss differs between runs: %.9g vs %.9g", l1, l2);
    size_t differ = 0;
    for (size_t i = 0; i < lay.num_params; i++) differ += memcmp(&g1[i], &g2[i], sizeof(float)) != 0;
    cr_expect(differ == 0, "%zu of %zu gradient elements differ between runs", differ, lay.num_params);
}

/* ================= flash attention =================
 * The table's attention ops run the flash kernels (src/kernels/flash_attention.cu)
 * for every S <= 512, so the attention and training-step tests above already use
 * them (dh = 12 and 64). Here, on fresh random inputs: the flash kernels against the
 * CPU backend and against the cuBLAS path (attention.cu, through the test hook
 * below), at S = 128 and 512, dh = 64 and 128 and head sizes the kernels pad (40,
 * 72), S and lengths that are not multiples of the tiles, sequences of length 1,
 * one head and hundreds; the dropout mask against the CPU's and its rate; a
 * bit-identical backward. The flash kernels write zeros for out and dq in query
 * tiles with no valid row and never read dout there, so dout is zero on padded rows
 * (as in training, where they never reach the loss), out and dq are compared on
 * valid rows only, and dk, dv everywhere (padded keys get 0 on every path); every
 * element must still be written (finite after the NaN poison). Inputs are uniform
 * in [-1, 1): the flash backward takes D = rowsum(dout o out) from the bf16 out (as
 * FlashAttention does), and dq = dS k subtracts D times the probability-weighted
 * mean of k, so on same-sign data (lcg_uniform, the inputs of the tests above, lies
 * in [-1, 0)) dq alone is off by a few 1e-2, while dk, dv and the whole dqkv stay near
 * 2e-3 (docs/ATTENTION.md). */


/* n values uniform in [-1, 1), bf16-exact. */
static float *sym_buf(size_t n) { return rand_buf(n, 1.0f, 2.0f); }

/* Forward then backward on one backend, with a saved buffer of its own. */
static void attention_step(mlm_backend *be, void *out, void *dqkv, const void *qkv, const void *dout,
                           const int32_t *lengths, int B, int S, int H, int dh, const mlm_dropout *drop) {
    void *saved = be->alloc(be, be->attention_saved_bytes(be, B, S, H), "attention saved");
    be->attention_fwd(be, out, saved, qkv, lengths, B, S, H, dh, drop);
    be->attention_bwd(be, dqkv, dout, qkv, out, saved, lengths, B, S, H, dh, drop);
    be->sync(be);
    be->free(be, saved);
}

/* Host fp32 copy of n elements of an act buffer of be. */
static float *host_act(mlm_backend *be, const void *p, size_t n) {
    float *h = hf(n);
    if (be == cpu) cpu->download(cpu, h, p, n * sizeof(float));
    else gpu->download_act_as_f32(gpu, h, p, n);
    return h;
}

/* Columns [c0, c1) of the rows of padded positions (s >= lengths[b]) of a
 * (B*S, cols) host tensor set to 0. */
static void clear_padded_rows(float *x, int B, int S, int cols, int c0, int c1, const int32_t *lengths) {
    for (int b = 0; b < B; b++)
        for (int s = lengths[b]; s < S; s++)
            for (int c = c0; c < c1; c++) x[((size_t)b * S + s) * cols + c] = 0.0f;
}

static void expect_finite(const float *x, size_t n, const char *what) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(x[i]);
    cr_expect(bad == 0, "%s [%s]: %zu of %zu elements not finite (unwritten?)", what, shape, bad, n);
}

/* One shape: CPU, flash and cuBLAS on the same inputs, compared as said above. */
static void flash_case(int B, int S, int H, int dh, const int32_t *lengths_h, float p) {
    int N = B * S, d = H * dh;
    CASE("B=%d S=%d H=%d dh=%d lengths[0]=%d dropout=%g", B, S, H, dh, lengths_h[0], p);
    float *dout_h = sym_buf((size_t)N * d);
    clear_padded_rows(dout_h, B, S, d, 0, d, lengths_h);
    pair qkv = act((size_t)N * 3 * d, sym_buf((size_t)N * 3 * d)), dout = act((size_t)N * d, dout_h);
    pair lengths = i32(B, lengths_h);
    pair out = act((size_t)N * d, NULL), dqkv = act((size_t)N * 3 * d, NULL);     // CPU, flash
    pair out_b = act((size_t)N * d, NULL), dqkv_b = act((size_t)N * 3 * d, NULL); // cuBLAS (.g only)
    mlm_dropout drop = drop_at(p, 1);
    attention_step(cpu, out.c, dqkv.c, qkv.c, dout.c, lengths.c, B, S, H, dh, &drop);
    attention_step(gpu, out.g, dqkv.g, qkv.g, dout.g, lengths.g, B, S, H, dh, &drop);
    mlm_cuda_use_cublas_attention(gpu, 1);
    attention_step(gpu, out_b.g, dqkv_b.g, qkv.g, dout.g, lengths.g, B, S, H, dh, &drop);
    mlm_cuda_use_cublas_attention(gpu, 0);

    const float *o[3] = {host_act(cpu, out.c, (size_t)N * d), host_act(gpu, out.g, (size_t)N * d),
                         host_act(gpu, out_b.g, (size_t)N * d)};
    const float *g[3] = {host_act(cpu, dqkv.c, (size_t)N * 3 * d), host_act(gpu, dqkv.g, (size_t)N * 3 * d),
                         host_act(gpu, dqkv_b.g, (size_t)N * 3 * d)};
    expect_finite(o[1], (size_t)N * d, "flash out");
    expect_finite(g[1], (size_t)N * 3 * d, "flash dqkv");
    for (int k = 0; k < 3; k++) {
        clear_padded_rows((float *)o[k], B, S, d, 0, d, lengths_h);
        clear_padded_rows((float *)g[k], B, S, 3 * d, 0, d, lengths_h);   // dq
    }
    static const char *vs[3] = {NULL, NULL, "cublas"};
    for (int k = 0; k < 3; k += 2) {   // against the CPU (k = 0), the cuBLAS path (k = 2)
        char what[64];
        snprintf(what, sizeof what, "flash out vs %s", vs[k] ? vs[k] : "cpu");
        expect_close_cols(o[k], o[1], N, d, 0, d, 1e-2, what);
        const char *part[3] = {"dq", "dk", "dv"};
        for (int q = 0; q < 3; q++) {
            snprintf(what, sizeof what, "flash %s vs %s", part[q], vs[k] ? vs[k] : "cpu");
            expect_close_cols(g[k], g[1], N, 3 * d, q * d, (q + 1) * d, 1e-2, what);
        }
    }
}

Test(cuda_ops, flash_attention_matches_cpu_and_cublas) {
    need_gpu();
    rng = 201;
    static const struct { int B, S, H, dh; int32_t lengths[3]; } cases[] = {
        {2, 128, 3, 64, {128, 77}},       // one key tile; a partial query tile
        {3, 512, 2, 64, {512, 300, 1}},   // four key tiles (dq through the fp32 scratch); length 1
        {2, 512, 2, 128, {389, 512}},
        {3, 128, 2, 128, {1, 100, 128}},
        {1, 512, 1, 128, {431}},          // one head
        {2, 33, 4, 64, {33, 17}},         // S % 4 != 0: two Philox blocks per four keys
        {3, 99, 2, 72, {99, 64, 1}},      // dh 72 runs the DH = 128 kernels, element loads
        {2, 200, 3, 40, {200, 130}},      // dh 40 runs the DH = 64 kernels, element loads
    };
    for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++)
        for (int dropping = 0; dropping < 2; dropping++)
            flash_case(cases[s].B, cases[s].S, cases[s].H, cases[s].dh, cases[s].lengths, dropping ? 0.1f : 0.0f);
}

Test(cuda_ops, flash_attention_many_heads) {
    need_gpu();
    rng = 202;
    enum { B = 24 };
    int32_t lengths[B];
    for (int b = 0; b < B; b++) lengths[b] = b % 4 == 0 ? 128 : 1 + (int32_t)(lcg_next(&rng) % 128);
    flash_case(B, 128, 16, 64, lengths, 0.1f);   // 384 heads: many blocks per SM, random padding
}

/* With q = 0 every valid key has probability 1/L; with v_j = e_j (one-hot, S <= dh)
 * out[i][c] = dropout factor of (i, c) / L, and with dout_i = e_i on valid rows
 * dv[j][c] = factor of (c, j) / L: both show the mask itself, forward and backward. */
Test(cuda_ops, flash_attention_dropout_mask) {
    need_gpu();
    rng = 203;
    const int B = 16, H = 16, dh = 64;
    const int shapes[][2] = {{64, 64}, {62, 57}};   // S, length: S % 4 == 0, and not, with padding
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int S = shapes[s][0], L = shapes[s][1], N = B * S, d = H * dh;
        CASE("B=%d S=%d H=%d dh=%d length %d p=0.3", B, S, H, dh, L);
        int32_t lengths_h[16];
        for (int b = 0; b < B; b++) lengths_h[b] = L;
        float *qkv_h = sym_buf((size_t)N * 3 * d), *dout_h = hf((size_t)N * d);
        for (int r = 0; r < N; r++)
            for (int h = 0; h < H; h++)
                for (int c = 0; c < dh; c++) {
                    float *row = qkv_h + (size_t)r * 3 * d + h * dh;
                    row[c] = 0.0f;                                   // q
                    row[2 * d + c] = c == r % S ? 1.0f : 0.0f;       // v
                    dout_h[(size_t)r * d + h * dh + c] = c == r % S && r % S < L ? 1.0f : 0.0f;
                }
        pair qkv = act((size_t)N * 3 * d, qkv_h), dout = act((size_t)N * d, dout_h), lengths = i32(B, lengths_h);
        pair out = act((size_t)N * d, NULL), dqkv = act((size_t)N * 3 * d, NULL);
        mlm_dropout drop = drop_at(0.3f, 2);
        attention_step(cpu, out.c, dqkv.c, qkv.c, dout.c, lengths.c, B, S, H, dh, &drop);
        attention_step(gpu, out.g, dqkv.g, qkv.g, dout.g, lengths.g, B, S, H, dh, &drop);
        float *oc = host_act(cpu, out.c, (size_t)N * d), *og = host_act(gpu, out.g, (size_t)N * d);
        float *gc = host_act(cpu, dqkv.c, (size_t)N * 3 * d), *gg = host_act(gpu, dqkv.g, (size_t)N * 3 * d);
        size_t differ_fwd = 0, differ_bwd = 0, differ_gpu = 0, dropped = 0, total = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < L; i++)
                    for (int j = 0; j < L; j++) {
                        size_t fo = ((size_t)b * S + i) * d + h * dh + j;            // out[i][j]: mask (i, j)
                        size_t bo = ((size_t)b * S + j) * 3 * d + 2 * d + h * dh + i; // dv[j][i]: mask (i, j)
                        differ_fwd += (oc[fo] == 0.0f) != (og[fo] == 0.0f);
                        differ_bwd += (gc[bo] == 0.0f) != (gg[bo] == 0.0f);
                        differ_gpu += (og[fo] == 0.0f) != (gg[bo] == 0.0f);
                        dropped += og[fo] == 0.0f;
                        total++;
                    }
        cr_expect(differ_fwd == 0, "[%s] forward: %zu of %zu mask elements differ from the CPU's", shape, differ_fwd, total);
        cr_expect(differ_bwd == 0, "[%s] backward: %zu of %zu mask elements differ from the CPU's", shape, differ_bwd, total);
        cr_expect(differ_gpu == 0, "[%s] %zu of %zu mask elements differ between forward and backward", shape, differ_gpu,
                  total);
        double frac = (double)dropped / (double)total;
        cr_expect(fabs(frac - 0.3) < 0.01, "[%s] dropped fraction %.4f of %zu, expected 0.3", shape, frac, total);
    }
}

Test(cuda_ops, flash_attention_backward_is_deterministic) {
    need_gpu();
    rng = 204;
    static const struct { int B, S, H, dh; int32_t lengths[3]; } cases[] = {
        {3, 512, 4, 64, {512, 333, 70}},
        {2, 384, 4, 128, {384, 201}},
    };
    for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
        int B = cases[s].B, S = cases[s].S, H = cases[s].H, dh = cases[s].dh, N = B * S, d = H * dh;
        CASE("B=%d S=%d H=%d dh=%d dropout=0.1", B, S, H, dh);
        float *dout_h = sym_buf((size_t)N * d);
        clear_padded_rows(dout_h, B, S, d, 0, d, cases[s].lengths);
        pair qkv = act((size_t)N * 3 * d, sym_buf((size_t)N * 3 * d)), dout = act((size_t)N * d, dout_h);
        pair lengths = i32(B, cases[s].lengths);
        pair out = act((size_t)N * d, NULL), dq1 = act((size_t)N * 3 * d, NULL), dq2 = act((size_t)N * 3 * d, NULL);
        mlm_dropout drop = drop_at(0.1f, 3);
        attention_step(gpu, out.g, dq1.g, qkv.g, dout.g, lengths.g, B, S, H, dh, &drop);
        attention_step(gpu, out.g, dq2.g, qkv.g, dout.g, lengths.g, B, S, H, dh, &drop);
        float *a = host_act(gpu, dq1.g, (size_t)N * 3 * d), *b = host_act(gpu, dq2.g, (size_t)N * 3 * d);
        size_t differ = 0;
        for (size_t i = 0; i < (size_t)N * 3 * d; i++) differ += memcmp(&a[i], &b[i], sizeof(float)) != 0;
        cr_expect(differ == 0, "[%s] %zu of %zu dqkv elements differ between runs", shape, differ, (size_t)N * 3 * d);
    }
}

/* ================= replayable micro-batches (backend.h mlm_live, padding rows) ================= */

/* Every dropout path reads step and seq_base from live when given it: the
 * residual LayerNorm (layernorm.cu), flash and cuBLAS attention give the same
 * bits with drop.live as with the values passed by value. */
Test(cuda_ops, dropout_reads_live_values) {
    need_gpu();
    rng = 120;
    int B = 2, S = 40, H = 2, dh = 64, d = H * dh, N = B * S;
    int32_t lengths_h[2] = {40, 23};
    mlm_dropout byval = drop_at(0.1f, 4), live_drop = byval;
    mlm_live live_h = {byval.step, byval.seq_base, 0.0f, 0};
    mlm_live *live_g = raw_alloc(gpu, sizeof live_h);
    gpu->upload(gpu, live_g, &live_h, sizeof live_h);
    live_drop.step = 999;   // ignored: live wins
    live_drop.seq_base = 77;
    live_drop.live = live_g;
    pair x = act((size_t)N * d, rand_buf((size_t)N * d, 0, 1)), res = act((size_t)N * d, rand_buf((size_t)N * d, 0, 1));
    pair lw = wgt(d, rand_buf(d, 1, 0.2f)), lb = wgt(d, rand_buf(d, 0, 0.2f));
    pair qkv = act((size_t)N * 3 * d, sym_buf((size_t)N * 3 * d)), lengths = i32(B, lengths_h);
    pair dout = act((size_t)N * d, rand_buf((size_t)N * d, 0, 1));
    float *got[2][3];
    for (int v = 0; v < 2; v++) {
        const mlm_dropout *drop = v ? &live_drop : &byval;
        pair out = act((size_t)N * d, NULL), sv = act((size_t)N * d, NULL), mean = f32(N, NULL), rstd = f32(N, NULL);
        gpu->residual_ln_fwd(gpu, out.g, sv.g, mean.g, rstd.g, x.g, res.g, lw.g, lb.g, B, S, d, 1e-12f, drop);
        got[v][0] = host_act(gpu, out.g, (size_t)N * d);
        for (int cublas = 0; cublas < 2; cublas++) {
            pair a_out = act((size_t)N * d, NULL), dqkv = act((size_t)N * 3 * d, NULL);
            mlm_cuda_use_cublas_attention(gpu, cublas);
            attention_step(gpu, a_out.g, dqkv.g, qkv.g, dout.g, lengths.g, B, S, H, dh, drop);
            mlm_cuda_use_cublas_attention(gpu, 0);
            got[v][1 + cublas] = host_act(gpu, dqkv.g, (size_t)N * 3 * d);
        }
    }
    const char *what[3] = {"residual_ln_fwd", "flash attention dqkv", "cuBLAS attention dqkv"};
    size_t n[3] = {(size_t)N * d, (size_t)N * 3 * d, (size_t)N * 3 * d};
    for (int k = 0; k < 3; k++)
        cr_expect_eq(memcmp(got[0][k], got[1][k], n[k] * sizeof(float)), 0, "%s: live values give other bits", what[k]);
}

/* Row and label -1 pad the masked rows: gather writes zeros, scatter skips, the
 * cross-entropy gives no loss and a zero gradient, and its scale comes from live. */
Test(cuda_ops, padding_rows_and_live_loss_scale) {
    need_gpu();
    rng = 121;
    int M = 6, V = 997;
    int32_t rows_h[] = {3, -1, 0, 19, -1, -1}, labels_h[] = {5, -1, 996, 0, -1, -1};
    rows_case(rows_h, M, 20, 72);
    pair labels = i32(M, labels_h);
    float stats0[2] = {0, 0};
    pair logits = logits_pair(M, V, rand_buf((size_t)M * V, 0, 6.0f)), stats = f32(2, stats0);
    mlm_live live_h = {0, 0, 1.0f / 3, 0};
    mlm_live *live_g = raw_alloc(gpu, sizeof live_h);
    gpu->upload(gpu, live_g, &live_h, sizeof live_h);
    int ldl = (int)logits_ld(V);
    cpu->cross_entropy(cpu, logits.c, labels.c, M, V, ldl, 1.0f / 3, NULL, stats.c);
    gpu->cross_entropy(gpu, logits.g, labels.g, M, V, ldl, 42.0f, live_g, stats.g);
    expect_logits(logits, M, V, 1e-2, "cross_entropy dlogits with padding and live scale");
    expect_close(stats, stats0, 1e-5, "cross_entropy stats with padding");
    float *lc, *lg;
    fetch(logits, &lc, &lg);
    for (int j = 0; j < V; j++) cr_expect_eq(lg[ldl + j], 0.0f, "padding row 1 has a gradient at %d", j);
}
