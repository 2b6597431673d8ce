/*
 * bench_attention: the attention kernels alone, forward + backward, for the
 * side-by-side with torch SDPA (bench/hf_gpu_bench.py --attention) that
 * bench/gpu_check.sh runs on the same card.
 *
 * The shapes and inputs of the SDPA benchmark: bf16 q, k, v and dout from N(0, 1),
 * half of the sequences (chosen at random) at a random length in [1, S), the rest
 * full, no dropout. Each repetition is one attention_fwd and one attention_bwd
 * through the backend's op table, timed between two device syncs; the median of
 * --reps repetitions after --warmup is reported. On CUDA both attention paths
 * run: the flash kernels and the cuBLAS path (GEMMs around a softmax kernel);
 * --flash-only skips the latter (bench/gpu_check.sh's second run, MLM_FLASH_BWD=wide:
 * the flash backward's other variant, reported as backend "flash-wide").
 *
 * One JSON line per (shape, path) on stdout:
 *   {"impl":"mlmgpu_attention","backend":"flash","B":256,"H":12,"S":128,"dh":64,"ms":...}
 *
 *   bench_attention [--device cuda|cpu] [--tiny] [--flash-only] [--reps N] [--warmup W] [--seed X]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lcg.h"
#include "mlm/backend.h"
#include "mlm/log.h"

#ifdef MLM_HAVE_CUDA
#include "mlm/backend_cuda.h"
#endif

static const char USAGE[] =
    "usage: bench_attention [--device cuda|cpu] [--tiny] [--flash-only] [--reps N] [--warmup W] [--seed X]\n"
    "Times attention forward + backward (median of N) on B256 H12 S128 d64 and B64 H12\n"
    "S512 d64 (--tiny: small shapes for a smoke test), half the sequences shorter; on CUDA\n"
    "the flash kernels (backward as MLM_FLASH_BWD: narrow, the default, or wide) and the\n"
    "cuBLAS path (not with --flash-only).\n";

static uint64_t rng;
static float normal(void) {   // Box-Muller; lcg_next gives 31 bits
    double u = (lcg_next(&rng) + 0.5) / 2147483648.0, v = (lcg_next(&rng) + 0.5) / 2147483648.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int parse_int(const char *flag, const char *v, int lo, int hi) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *v == 0 || *end != 0 || x < lo || x > hi) {
        fprintf(stderr, "bench_attention: error: %s '%s'\n\n%s", flag, v ? v : "", USAGE);
        exit(MLM_EXIT_INPUT);
    }
    return (int)x;
}

/* Median ms of reps forward + backward passes on be. */
static double time_attention(mlm_backend *be, int B, int S, int H, int dh, const void *qkv, const void *dout,
                             const int32_t *lengths, void *out, void *dqkv, int warmup, int reps) {
    void *saved = be->alloc(be, be->attention_saved_bytes(be, B, S, H), "attention saved");
    double *ms = mlm_xmalloc(reps * sizeof(double), "timings");
    for (int r = -warmup; r < reps; r++) {
        be->sync(be);
        double t0 = mlm_now_s();
        be->attention_fwd(be, out, saved, qkv, lengths, B, S, H, dh, NULL);
        be->attention_bwd(be, dqkv, dout, qkv, out, saved, lengths, B, S, H, dh, NULL);
        be->sync(be);
        if (r >= 0) ms[r] = (mlm_now_s() - t0) * 1e3;
    }
    qsort(ms, reps, sizeof(double), cmp_double);
    double med = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
    free(ms);
    be->free(be, saved);
    return med;
}

int main(int argc, char **argv) {
    const char *device = "cuda";
    int tiny = 0, reps = 20, warmup = 3, flash_only = 0;
    rng = 1234;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "--tiny")) {
            tiny = 1;
        } else if (!strcmp(a, "--flash-only")) {
            flash_only = 1;
        } else if (!strcmp(a, "--device") && v && (!strcmp(v, "cuda") || !strcmp(v, "cpu"))) {
            device = argv[++i];
        } else if (!strcmp(a, "--reps")) {
            reps = parse_int(a, v, 1, 100000), i++;
        } else if (!strcmp(a, "--warmup")) {
            warmup = parse_int(a, v, 0, 100000), i++;
        } else if (!strcmp(a, "--seed")) {
            rng = (uint64_t)parse_int(a, v, 0, 0x7fffffff), i++;
        } else {
            fprintf(stderr, "bench_attention: error: unknown or incomplete argument '%s'\n\n%s", a, USAGE);
            return MLM_EXIT_INPUT;
        }
    }
    mlm_backend *be = NULL;
    if (!strcmp(device, "cpu")) {
        be = mlm_backend_cpu(0);
    } else {
#ifdef MLM_HAVE_CUDA
        char err[512];
        be = mlm_backend_cuda(0, err, sizeof err);
        if (!be) mlm_die(MLM_EXIT_INPUT, "--device cuda: %s", err);
#else
        mlm_die(MLM_EXIT_INPUT, "--device cuda: this build has no CUDA backend (configure with -Dcuda=enabled)");
#endif
    }
    const int shapes[2][4] = {{256, 12, 128, 64}, {64, 12, 512, 64}}, tiny_shapes[2][4] = {{4, 2, 16, 8}, {2, 2, 32, 8}};
    for (int k = 0; k < 2; k++) {
        const int *sh = tiny ? tiny_shapes[k] : shapes[k];
        int B = sh[0], H = sh[1], S = sh[2], dh = sh[3], d = H * dh;
        size_t N = (size_t)B * S;
        float *h = mlm_xmalloc(N * 3 * d * sizeof(float), "inputs");
        int32_t *len = mlm_xmalloc(B * sizeof(int32_t), "lengths");
        for (int b = 0; b < B; b++) len[b] = S;
        for (int i = 0, shorter = 0; shorter < B / 2 && i < 100 * B; i++) {   // B/2 distinct sequences
            int b = (int)(lcg_next(&rng) % (uint32_t)B);
            if (len[b] != S) continue;
            len[b] = 1 + (int)(lcg_next(&rng) % (uint32_t)(S - 1));
            shorter++;
        }
        double mean_len = 0;
        for (int b = 0; b < B; b++) mean_len += len[b] / (double)B;
        void *qkv = be->alloc(be, N * 3 * d * be->act_size, "qkv");
        void *dout = be->alloc(be, N * d * be->act_size, "dout");
        void *out = be->alloc(be, N * d * be->act_size, "out");
        void *dqkv = be->alloc(be, N * 3 * d * be->act_size, "dqkv");
        int32_t *lengths = be->alloc(be, B * sizeof(int32_t), "lengths");
        for (size_t i = 0; i < N * 3 * d; i++) h[i] = normal();
        be->upload_f32_as_act(be, qkv, h, N * 3 * d);
        for (size_t i = 0; i < N * d; i++) h[i] = normal();
        be->upload_f32_as_act(be, dout, h, N * d);
        be->upload(be, lengths, len, B * sizeof(int32_t));
        int paths = strcmp(be->name, "cuda") == 0 && !flash_only ? 2 : 1;
        static const char *const bwd[] = {"narrow", "wide", NULL};
        const char *flash = mlm_env_choice("MLM_FLASH_BWD", bwd) == 1 ? "flash-wide" : "flash";
        for (int p = 0; p < paths; p++) {
#ifdef MLM_HAVE_CUDA
            if (paths == 2) mlm_cuda_use_cublas_attention(be, p);
#endif
            const char *path = strcmp(be->name, "cuda") ? "cpu" : p ? "cublas" : flash;
            double ms = time_attention(be, B, S, H, dh, qkv, dout, lengths, out, dqkv, warmup, reps);
            double flops = 4.0 * B * H * S * S * dh * 3.5;   // as hf_gpu_bench.py: nominal at full S
            printf("{\"impl\":\"mlmgpu_attention\",\"device\":\"%s\",\"backend\":\"%s\",\"B\":%d,\"H\":%d,\"S\":%d,"
                   "\"dh\":%d,\"dtype\":\"%s\",\"mean_len\":%.1f,\"mask\":\"lengths\",\"ms\":%.4f,"
                   "\"tflops_nominal\":%.1f}\n",
                   be->name, path, B, H, S, dh, be->act_size == 2 ? "bf16" : "f32", mean_len, ms,
                   flops / ms / 1e9);
            fflush(stdout);
        }
#ifdef MLM_HAVE_CUDA
        if (paths == 2) mlm_cuda_use_cublas_attention(be, 0);
#endif
        be->free(be, qkv);
        be->free(be, dout);
        be->free(be, out);
        be->free(be, dqkv);
        be->free(be, lengths);
        free(h);
        free(len);
    }
    be->destroy(be);
    return 0;
}
