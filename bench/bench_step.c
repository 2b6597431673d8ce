/*
 * bench_step: training-step throughput of mlmgpu on one device, for the side-by-side
 * against PyTorch (bench/hf_gpu_bench.py) that bench/gpu_check.sh runs.
 *
 * Random full-length sequences (every token a plain word id, lengths = S), masked
 * by the product's own masking (mlm_mask_sequence: 15% selected, 80/10/10), fed
 * through the product's step (mlm_model_step_micro per micro-batch, then
 * mlm_optim_step: grad norm, clip 1.0, AdamW). The micro-batches are built on the
 * host before the clock starts, so the timing holds the device work and the
 * launches, not the data path. The host waits for the device only at the two
 * timing boundaries (be->sync) and once at the end to read the loss.
 *
 * Prints one JSON line on stdout:
 *   seq_per_s, tokens_per_s, step_ms, flops_per_token, tflops, mfu, peak_gib, loss...
 * with FLOPs/token = 6 L (4 d^2 + 2 d I) + 12 L S d + 6 m (d^2 + d V), m the masked
 * fraction actually used, and MFU against 787 TFLOP/s (the bf16 GEMM ceiling measured
 * on an H100, docs/PERF.md). Peak memory: on CUDA the device memory in use at the end
 * (nothing is freed during the steps, scratch only grows) minus what was in use once
 * the backend existed, so the CUDA context and the cuBLASLt workspace are left out,
 * as torch.cuda.max_memory_allocated leaves out the context; on the CPU the peak
 * resident set.
 *
 *   bench_step --device cuda --config base --seq 128 --batch 256 --dropout 0.1
 *
 * --predict runs nothing: the same steps go through the performance model of the
 * CUDA backend (include/mlm/predict.h) on an H100's ceilings, on any machine, and
 * the table of predicted times per op, the step, seq/s, bytes moved and the peak
 * device memory are printed, ending with the line
 *   predicted step_ms=X seq_per_s=Y gbytes=Z peak_gib=W
 * after one JSON line per (op, shape) and one for the step (MLM_CUDA_GRAPHS=0: every
 * launch costs its overhead, as without CUDA graphs).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "mlm/backend.h"
#include "mlm/config.h"
#include "mlm/data.h"
#include "mlm/log.h"
#include "mlm/model.h"
#include "mlm/optimizer.h"
#include "mlm/predict.h"
#include "mlm/profile.h"
#include "mlm/loader.h"

#ifdef MLM_HAVE_CUDA
#include <cuda_runtime.h>

#include "mlm/backend_cuda.h"
#endif

#define PEAK_FLOPS 787e12   // bf16 GEMM 8192^3 on one H100 (docs/PERF.md, "Reference numbers and ceilings")
#define VOCAB 30522         // the default --vocab: BERT's
#define MAX_POSITION 512
#define STEP_SETS 4         // distinct masked batches, cycled over the steps

static const char USAGE[] =
    "usage: bench_step [--device cpu|cuda] [--config tiny|mini|base|large] [--seq S] [--batch B]\n"
    "                  [--micro B] [--dropout P] [--steps N] [--warmup W] [--threads T] [--seed X]\n"
    "                  [--vocab V] [--layers L] [--mask P]\n"
    "                  [--profile] [--predict [--gemm-tflops T] [--attn-tflops T] [--tbps B]]\n"
    "Times full training steps on random full-length sequences (15% masked) and prints\n"
    "one JSON line: seq/s, tokens/s, step ms, MFU (787 TFLOP/s), peak memory.\n"
    "defaults: --device cuda --config base --seq 128 --batch 256 --micro = batch\n"
    "          --dropout 0.1 --steps 20 --warmup 8 --threads 0 (all cores, CPU only); a warm-up\n"
    "          of 8 visits each of the 4 masking sets twice: its first call (eager, scratch\n"
    "          growth) and its CUDA-graph capture stay out of the timed steps;\n"
    "          --vocab 30522, --layers and heads of the --config, --mask 0.15\n"
    "          (e.g. the quickstart: --device cpu --config tiny --vocab 4096 --seq 64 --batch 32)\n"
    "--profile: time every op of the timed steps (the device waited for around each op,\n"
    "           so the steps are slower); prints the table on stderr and one JSON line per\n"
    "           (op, shape) on stdout before the summary line.\n"
    "--predict: run nothing; predict the steps on the CUDA backend of an H100 from the\n"
    "           performance model (FLOPs and bytes of every kernel) and print its table,\n"
    "           ending with: predicted step_ms=X seq_per_s=Y gbytes=Z peak_gib=W;\n"
    "           --gemm-tflops, --attn-tflops, --tbps replace its ceilings (427, 393.5, 3.0)\n";

typedef struct { const char *name; int L, d, H, I; } shape;

static const shape SHAPES[] = {
    {"tiny", 2, 128, 2, 512},
    {"mini", 4, 256, 4, 1024},
    {"base", 12, 768, 12, 3072},
    {"large", 24, 1024, 16, 4096},
};

typedef struct {
    const char *device;
    const shape *sh;
    int S, B, micro, steps, warmup, threads, profile, predict, V, L;
    float dropout, mask;
    unsigned long long seed;
    double gemm_tflops, attn_tflops, tbps;   // --predict: ceilings in place of the H100's (0: keep)
} options;

static _Noreturn void usage_error(const char *what, const char *arg) {
    fprintf(stderr, "bench_step: error: %s '%s'\n\n%s", what, arg, USAGE);
    exit(MLM_EXIT_INPUT);
}

static long parse_int(const char *flag, const char *text, long lo, long hi) {
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == 0 || *end != 0 || v < lo || v > hi) usage_error(flag, text);
    return v;
}

/* A positive number for flag, or a usage error. */
static double parse_positive(const char *flag, const char *text) {
    char *end;
    double v = strtod(text, &end);
    if (*text == 0 || *end != 0 || !(v > 0 && v < 1e6)) usage_error(flag, text);
    return v;
}

static options parse_args(int argc, char **argv) {
    options o = {.device = "cuda", .sh = &SHAPES[2], .S = 128, .B = 256, .micro = 0, .steps = 20,
                 .warmup = 2 * STEP_SETS, .threads = 0, .profile = 0, .dropout = 0.1f, .seed = 1234,
                 .V = VOCAB, .L = 0, .mask = 0.15f};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--profile")) {
            o.profile = 1;
            continue;
        }
        if (!strcmp(a, "--predict")) {
            o.predict = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            exit(0);
        }
        if (i + 1 >= argc) usage_error("missing value after", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) usage_error("--device: expected cpu or cuda, got", v);
            o.device = v;
        } else if (!strcmp(a, "--config")) {
            o.sh = NULL;
            for (size_t k = 0; k < sizeof SHAPES / sizeof SHAPES[0]; k++)
                if (!strcmp(v, SHAPES[k].name)) o.sh = &SHAPES[k];
            if (!o.sh) usage_error("--config: expected tiny, mini, base or large, got", v);
        } else if (!strcmp(a, "--seq")) o.S = (int)parse_int(a, v, 1, MAX_POSITION);
        else if (!strcmp(a, "--batch")) o.B = (int)parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--micro")) o.micro = (int)parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--steps")) o.steps = (int)parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--warmup")) o.warmup = (int)parse_int(a, v, 0, 1 << 20);
        else if (!strcmp(a, "--threads")) o.threads = (int)parse_int(a, v, 0, 4096);
        else if (!strcmp(a, "--vocab")) o.V = (int)parse_int(a, v, 16, 1 << 24);
        else if (!strcmp(a, "--layers")) o.L = (int)parse_int(a, v, 1, 1024);
        else if (!strcmp(a, "--mask")) {
            o.mask = (float)parse_positive(a, v);
            if (o.mask >= 1) usage_error("--mask: expected 0 < p < 1, got", v);
        } else if (!strcmp(a, "--seed")) o.seed = (unsigned long long)parse_int(a, v, 0, 0x7fffffffL);
        else if (!strcmp(a, "--dropout")) {
            char *end;
            o.dropout = strtof(v, &end);
            if (*v == 0 || *end != 0 || !(o.dropout >= 0 && o.dropout < 1)) usage_error("--dropout: expected 0 <= p < 1, got", v);
        } else if (!strcmp(a, "--gemm-tflops")) o.gemm_tflops = parse_positive(a, v);
        else if (!strcmp(a, "--attn-tflops")) o.attn_tflops = parse_positive(a, v);
        else if (!strcmp(a, "--tbps")) o.tbps = parse_positive(a, v);
        else usage_error("unknown option", a);
    }
    if (o.warmup < 2 * STEP_SETS && !o.predict)
        mlm_log("warning: --warmup %d: the timed steps include first calls or CUDA-graph captures of the %d masking "
                "sets (each needs two visits: --warmup %d)", o.warmup, STEP_SETS, 2 * STEP_SETS);
    if (o.L) {   // --layers: the config's shape with another depth
        static shape custom;
        custom = *o.sh;
        custom.L = o.L;
        o.sh = &custom;
    }
    if (o.micro == 0) o.micro = o.B;
    if (o.B % o.micro != 0) {
        char b[32];
        snprintf(b, sizeof b, "%d", o.micro);
        usage_error("--micro must divide --batch; got", b);
    }
    return o;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- devices */

typedef struct {
    mlm_backend *be;
    char name[256];       // device name for the report
    size_t used_at_start; // CUDA: device bytes in use once the backend exists
} device;

#ifdef MLM_HAVE_CUDA
static size_t cuda_used_bytes(void) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
    return total_b - free_b;
}
#endif

static device open_device(const options *o) {
    device dv = {0};
    if (!strcmp(o->device, "cpu")) {
        dv.be = mlm_backend_cpu(o->threads);
        char what[256];
        snprintf(dv.name, sizeof dv.name, "%s", mlm_cpu_describe(what, sizeof what));
        return dv;
    }
#ifdef MLM_HAVE_CUDA
    char err[512];
    dv.be = mlm_backend_cuda(0, err, sizeof err);
    if (!dv.be) mlm_die(MLM_EXIT_INPUT, "--device cuda: %s", err);
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) snprintf(dv.name, sizeof dv.name, "%s", prop.name);
    dv.used_at_start = cuda_used_bytes();
    return dv;
#else
    mlm_die(MLM_EXIT_INPUT, "--device cuda: this build has no CUDA backend (configure with -Dcuda=enabled)");
#endif
}

/* Peak bytes this run added: device memory on CUDA, resident set on the CPU. */
static double peak_gib(const device *dv) {
#ifdef MLM_HAVE_CUDA
    if (strcmp(dv->be->name, "cuda") == 0) return (cuda_used_bytes() - dv->used_at_start) / 1073741824.0;
#endif
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1048576.0;   // KiB
}

/* ---------------------------------------------------------------- batches */

/* One step's micro-batches: random plain-word sequences of full length S, masked
 * with the product's masking for optimizer step `step`. */
typedef struct {
    mlm_microbatch *micro;  // (nmicro)
    long masked;            // masked tokens of the whole step
} step_data;

static void build_step(step_data *sd, int nmicro, const options *o, const mlm_data_config *dc,
                       const mlm_special_ids *sp, int max_M, uint32_t step, uint64_t *rng) {
    int S = o->S, first_plain = sp->mask + 1;
    sd->micro = mlm_xcalloc(nmicro, sizeof *sd->micro, "benchmark micro-batches");
    sd->masked = 0;
    for (int j = 0; j < nmicro; j++) {
        mlm_microbatch *mb = &sd->micro[j];
        mlm_microbatch_init(mb, o->micro, S, max_M);
        int M = 0;
        uint32_t seq_base = (uint32_t)(j * o->micro);
        for (int b = 0; b < o->micro; b++) {
            int32_t *ids = mb->ids + (size_t)b * S;
            for (int s = 0; s < S; s++)
                ids[s] = first_plain + (int32_t)(splitmix64(rng) % (uint64_t)(sp->vocab_size - first_plain));
            mb->lengths[b] = S;
            M += mlm_mask_sequence(ids, S, dc, sp, o->seed, step, seq_base + (uint32_t)b, b * S, mb->rows + M,
                                   mb->labels + M);
            if (M > max_M) M = max_M;   // as mlm_microbatch_fill: the excess is not scored
        }
        mb->batch = (mlm_batch){o->micro, S, M, mb->ids, NULL, mb->lengths, mb->rows, mb->labels, seq_base, step};
        sd->masked += M;
    }
}

/* The first n masking sets of a run, from the seed. */
static void build_sets(step_data *sets, int n, int nmicro, const options *o, const mlm_data_config *dc, int max_M) {
    mlm_special_ids sp = mlm_special_ids_default(o->V);
    uint64_t rng = o->seed;
    for (int k = 0; k < n; k++) build_step(&sets[k], nmicro, o, dc, &sp, max_M, (uint32_t)(k + 1), &rng);
}

/* Training FLOPs per token, the head on the masked fraction m only (docs/PERF.md). */
static double flops_per_token(const shape *sh, double S, double m, double V) {
    double L = sh->L, d = sh->d, I = sh->I;
    return 6 * L * (4 * d * d + 2 * d * I) + 12 * L * S * d + 6 * m * (d * d + d * V);
}

static void free_step(step_data *sd, int nmicro) {
    for (int j = 0; j < nmicro; j++) mlm_microbatch_free(&sd->micro[j]);
    free(sd->micro);
}

/* One optimizer step as mlm_train does it, without reading anything back. */
static void train_step(mlm_model *m, const step_data *sd, int nmicro, const mlm_optim_config *oc, int step) {
    float scale = sd->masked ? 1.0f / (float)sd->masked : 0.0f;
    for (int j = 0; j < nmicro; j++) {
        mlm_batch b = sd->micro[j].batch;
        b.step = (uint32_t)step;   // keys dropout; the masking of a cycled set stays as built
        mlm_model_step_micro(m, &b, scale);
    }
    mlm_optim_step(m, oc, step, oc->lr);
}

/* ---------------------------------------------------------------- prediction */

/* --predict: STEP_SETS steps through the performance model, one per masking set;
 * nothing runs and the parameters are never initialised. Prints the table and the
 * summary on stdout. */
static int predict(const options *o, const mlm_model_config *mc, const mlm_data_config *dc,
                   const mlm_optim_config *oc) {
    static const char *const graphs_choices[] = {"1", "0", NULL};   // as the CUDA backend reads it
    int graphs = mlm_env_choice("MLM_CUDA_GRAPHS", graphs_choices) == 0;
    mlm_ceilings c = mlm_ceilings_h100();
    if (o->gemm_tflops) c.gemm_flops = o->gemm_tflops * 1e12;
    if (o->attn_tflops) c.attn_flops = o->attn_tflops * 1e12;
    if (o->tbps) c.device_bw = o->tbps * 1e12;
    mlm_predict *pred;
    mlm_backend *be = mlm_predict_backend(&c, graphs, &pred);
    int nmicro = o->B / o->micro, max_M = mlm_max_masked(o->micro * o->S, dc->mask_prob);
    mlm_model model;
    mlm_model_create(&model, mc, be, o->micro, o->S, max_M, o->seed);
    step_data sets[STEP_SETS];
    build_sets(sets, STEP_SETS, nmicro, o, dc, max_M);
    mlm_predict_reset(pred);   // the step alone: not the set-up's uploads
    long masked = 0;
    for (int t = 1; t <= STEP_SETS; t++) {
        train_step(&model, &sets[t - 1], nmicro, oc, t);
        masked += sets[t - 1].masked;
    }
    const shape *sh = o->sh;
    printf("predicted: %s L%d d%d H%d I%d V%d, S%d, batch %d in %d micro-batch(es), dropout %g; CUDA graphs %s;\n"
           "GEMM %.0f TFLOP/s, attention %.1f TFLOP/s, %.2f TB/s (per step, the mean of %d steps)\n\n",
           sh->name, sh->L, sh->d, sh->H, sh->I, o->V, o->S, o->B, nmicro, o->dropout, graphs ? "on" : "off",
           c.gemm_flops / 1e12, c.attn_flops / 1e12, c.device_bw / 1e12, STEP_SETS);
    mlm_predict_print(pred, stdout, STEP_SETS, 60);
    mlm_op_cost all = mlm_predict_get(pred, NULL, NULL);
    double step_s = all.seconds / STEP_SETS, gbytes = all.bytes / STEP_SETS / 1e9;
    double peak_gib = mlm_predict_peak_bytes(pred) / 1073741824.0;
    double m = (double)masked / ((double)STEP_SETS * o->B * o->S);
    double flops_tok = flops_per_token(sh, o->S, m, o->V), tps = (double)o->B * o->S / step_s;
    printf("\nstep %.2f ms, %.0f seq/s, %.0f tokens/s, MFU %.3f (787 TFLOP/s), %.1f GB moved, %.1f TFLOP, "
           "peak device memory %.2f GiB\n",
           step_s * 1e3, o->B / step_s, tps, flops_tok * tps / PEAK_FLOPS, gbytes, all.flops / STEP_SETS / 1e12,
           peak_gib);
    printf("of which bound by FLOPs (GEMMs, attention) %.2f ms, by bytes and launches %.2f ms\n",
           all.flops_bound_s / STEP_SETS * 1e3, (all.seconds - all.flops_bound_s) / STEP_SETS * 1e3);
    mlm_predict_json(pred, stdout, STEP_SETS);
    printf("{\"impl\":\"mlmgpu_predicted\",\"config\":\"%s\",\"L\":%d,\"d\":%d,\"H\":%d,\"I\":%d,\"V\":%d,\"seq\":%d,"
           "\"batch\":%d,\"micro\":%d,\"dropout\":%g,\"graphs\":%d,\"step_ms\":%.3f,\"seq_per_s\":%.1f,"
           "\"gbytes\":%.3f,\"peak_gib\":%.3f,\"mfu\":%.4f}\n",
           sh->name, sh->L, sh->d, sh->H, sh->I, o->V, o->S, o->B, o->micro, o->dropout, graphs, step_s * 1e3,
           o->B / step_s, gbytes, peak_gib, flops_tok * tps / PEAK_FLOPS);
    printf("predicted step_ms=%.3f seq_per_s=%.1f gbytes=%.3f peak_gib=%.3f\n", step_s * 1e3, o->B / step_s, gbytes,
           peak_gib);
    for (int k = 0; k < STEP_SETS; k++) free_step(&sets[k], nmicro);
    mlm_model_destroy(&model);
    be->destroy(be);
    mlm_predict_free(pred);
    return 0;
}

/* ---------------------------------------------------------------- report */

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++)
        if (*s == '"' || *s == '\\') printf("\\%c", *s);
        else if ((unsigned char)*s >= 0x20) putchar(*s);
    putchar('"');
}

static void json_number(const char *key, double v, const char *fmt) {
    printf(",\"%s\":", key);
    if (isfinite(v)) printf(fmt, v);
    else printf("null");
}

int main(int argc, char **argv) {
    mlm_cpu_blas_reexec(argv);   // as mlmgpu's main: OpenBLAS's AVX kernels where it misread the CPU
    options o = parse_args(argc, argv);
    const shape *sh = o.sh;
    mlm_config cfg;
    mlm_config_defaults(&cfg);
    mlm_model_config *mc = &cfg.model;
    mc->vocab_size = o.V;
    mc->hidden_size = sh->d;
    mc->num_layers = sh->L;
    mc->num_heads = sh->H;
    mc->intermediate_size = sh->I;
    mc->max_position = MAX_POSITION;
    mc->type_vocab_size = 2;
    mc->layer_norm_eps = 1e-12f;
    mc->hidden_dropout = mc->attention_dropout = o.dropout;
    mc->init_range = 0.02f;
    mlm_data_config dc = cfg.data;
    dc.seq_len = o.S;
    dc.mask_prob = o.mask;
    dc.mask_token_prob = 0.8f;
    dc.random_token_prob = 0.1f;
    mlm_optim_config oc = cfg.optim;
    oc.lr = 1e-4f;
    oc.warmup_steps = 0;
    oc.schedule = MLM_SCHED_CONSTANT;
    oc.weight_decay = 0.01f;
    oc.grad_clip = 1.0f;

    if (o.predict) return predict(&o, mc, &dc, &oc);
    device dv = open_device(&o);
    mlm_profile *prof = NULL;
    if (o.profile) dv.be = mlm_profile_wrap(dv.be, &prof);
    mlm_backend *be = dv.be;
    int nmicro = o.B / o.micro;
    int max_M = mlm_max_masked(o.micro * o.S, dc.mask_prob);
    mlm_log("bench: %s L%d d%d H%d I%d, S%d, batch %d in %d micro-batch(es) of %d, dropout %g, on %s (%s)",
            sh->name, sh->L, sh->d, sh->H, sh->I, o.S, o.B, nmicro, o.micro, o.dropout, be->name, dv.name);

    mlm_model model;
    mlm_model_create(&model, mc, be, o.micro, o.S, max_M, o.seed);
    mlm_model_init_params(&model, o.seed);

    int total = o.warmup + o.steps, nsets = total < STEP_SETS ? total : STEP_SETS;
    step_data sets[STEP_SETS];
    build_sets(sets, nsets, nmicro, &o, &dc, max_M);

    double t0 = mlm_now_s(), t_warm = 0;
    long masked_timed = 0;
    for (int t = 1; t <= total; t++) {
        if (t == o.warmup + 1) {
            be->zero(be, model.stats, 4 * sizeof(float));
            be->sync(be);
            if (prof) mlm_profile_reset(prof);
            t_warm = mlm_now_s() - t0;
            t0 = mlm_now_s();
        }
        const step_data *sd = &sets[(t - 1) % nsets];
        train_step(&model, sd, nmicro, &oc, t);
        if (t > o.warmup) masked_timed += sd->masked;
    }
    be->sync(be);
    double dt = mlm_now_s() - t0;
    float stats[4];
    be->download(be, stats, model.stats, sizeof stats);
    double peak = peak_gib(&dv);

    double tokens = (double)o.steps * o.B * o.S, m = masked_timed / tokens;
    double flops_tok = flops_per_token(sh, o.S, m, o.V);
    double tps = tokens / dt, loss = masked_timed ? stats[0] / masked_timed : NAN;

    if (prof) {
        mlm_profile_print(prof, stderr, o.steps, 40);
        mlm_profile_json(prof, stdout, o.steps);
    }
    printf("{\"impl\":\"mlmgpu\",\"device\":");
    json_string(be->name);
    printf(",\"device_name\":");
    json_string(dv.name);
    printf(",\"config\":\"%s\",\"L\":%d,\"d\":%d,\"H\":%d,\"I\":%d,\"V\":%d,\"seq\":%d,\"batch\":%d,\"micro\":%d",
           sh->name, sh->L, sh->d, sh->H, sh->I, o.V, o.S, o.B, o.micro);
    printf(",\"dropout\":%g,\"steps\":%d,\"warmup\":%d,\"profiled\":%d", o.dropout, o.steps, o.warmup, o.profile);
    json_number("masked_frac", m, "%.5f");
    json_number("step_ms", dt / o.steps * 1e3, "%.3f");
    json_number("seq_per_s", o.steps * o.B / dt, "%.1f");
    json_number("tokens_per_s", tps, "%.0f");
    json_number("flops_per_token", flops_tok, "%.6g");
    json_number("tflops", flops_tok * tps / 1e12, "%.2f");
    json_number("mfu", flops_tok * tps / PEAK_FLOPS, "%.4f");
    json_number("peak_gib", peak, "%.3f");
    json_number("warmup_s", t_warm, "%.2f");
    json_number("loss", loss, "%.4f");
    json_number("grad_norm", sqrt(stats[2]), "%.4f");
    printf("}\n");
    fflush(stdout);

    for (int k = 0; k < nsets; k++) free_step(&sets[k], nmicro);
    mlm_model_destroy(&model);
    be->destroy(be);
    if (prof) mlm_profile_free(prof);
    if (!isfinite(loss)) {
        mlm_log("error: the loss is not finite over the timed steps");
        return MLM_EXIT_RUNTIME;
    }
    return 0;
}
