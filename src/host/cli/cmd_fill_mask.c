/*
 * `mlmgpu fill-mask`: the top-k tokens and probabilities the model gives each
 * [MASK] of a text, as HF's fill-mask pipeline reports them (softmax over the
 * vocabulary at the masked position, [CLS] text [SEP] as input).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/checkpoint.h"
#include "mlm/cli.h"
#include "mlm/log.h"
#include "mlm/tokenizer.h"

static const char *FILL_USAGE =
    "usage: mlmgpu fill-mask --model DIR [--top-k K] [--device auto|cpu|cuda] \"text with [MASK]\" ...\n"
    "\n"
    "Prints the K most likely tokens (default 5) and their probabilities for every\n"
    "[MASK] of each text. DIR holds config.json, model.safetensors and vocab.txt\n"
    "(a checkpoint, or an HF BERT directory).\n";

typedef struct {
    mlm_vocab vocab;
    mlm_tokenizer *tok;
    mlm_model model;
    mlm_backend *be;
    int k;
} filler;

/* The ids of [CLS] text [SEP], and the masked positions. */
static int encode(const filler *f, const char *text, int32_t **ids, size_t *n, int32_t *rows, int max_rows) {
    size_t cap = 0;
    *n = 0;
    *ids = NULL;
    mlm_encode(f->tok, text, strlen(text), ids, n, &cap);
    int m = 0;
    int mask = mlm_tokenizer_special(f->tok).mask;
    for (size_t s = 0; s < *n; s++)
        if ((*ids)[s] == mask && m < max_rows) rows[m++] = (int32_t)s;
    return m;
}

static void print_top_k(const filler *f, const float *logits, int V) {
    int *best = mlm_xmalloc(f->k * sizeof(int), "top-k");
    float mx = logits[0];
    for (int v = 1; v < V; v++) mx = fmaxf(mx, logits[v]);
    double z = 0;
    for (int v = 0; v < V; v++) z += exp((double)logits[v] - mx);
    for (int i = 0; i < f->k; i++) {   // k is small: repeated selection
        best[i] = -1;
        for (int v = 0; v < V; v++) {
            int taken = 0;
            for (int j = 0; j < i; j++) taken |= best[j] == v;
            if (!taken && (best[i] < 0 || logits[v] > logits[best[i]])) best[i] = v;
        }
        const char *tok = best[i] < f->vocab.count ? f->vocab.tokens[best[i]] : "[?]";
        printf("  %-16s %.6f\n", tok, exp((double)logits[best[i]] - mx) / z);
    }
    free(best);
}

static int fill_one(filler *f, const char *text) {
    int S = f->model.lay.cfg.max_position, V = f->model.lay.cfg.vocab_size;
    int32_t *rows = mlm_xmalloc(S * sizeof(int32_t), "mask rows"), *ids;
    size_t n;
    int M = encode(f, text, &ids, &n, rows, S);
    if (M == 0 || (int)n > S) {
        fprintf(stderr, "mlmgpu: error: \"%s\": %s\n", text,
                M == 0 ? "no [MASK] in the text" : "longer than the model's max_position tokens");
        free(ids);
        free(rows);
        return MLM_EXIT_INPUT;
    }
    int32_t *labels = mlm_xcalloc(M, sizeof(int32_t), "labels"), len = (int32_t)n;
    float *logits = mlm_xmalloc((size_t)M * V * sizeof(float), "logits");
    mlm_batch b = {1, (int)n, M, ids, NULL, &len, rows, labels, 0, 0};
    mlm_model_forward(&f->model, &b, logits);
    printf("%s\n", text);
    for (int i = 0; i < M; i++) {
        printf(" [MASK] #%d:\n", i + 1);
        print_top_k(f, logits + (size_t)i * V, V);
    }
    free(logits), free(labels), free(ids), free(rows);
    return 0;
}

static void open_filler(filler *f, const char *dir, const char *device) {
    char err[2048], path[2 * MLM_PATH_MAX];
    int cased;
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    if (mlm_vocab_load(&f->vocab, path, err, sizeof err) != 0 || mlm_hf_read_cased(dir, &cased, err, sizeof err) != 0 ||
        !(f->tok = mlm_tokenizer_new(&f->vocab, cased, err, sizeof err)))
        mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
    mlm_model_config base;
    mlm_config defaults;
    mlm_config_defaults(&defaults);
    base = defaults.model;
    f->be = mlm_choose_backend(device, 0);
    // the arena holds one sequence of up to max_position tokens, every one maskable
    mlm_model_config shape = base;
    if (mlm_hf_read_config(dir, &shape, err, sizeof err) != 0) mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
    if (mlm_model_load_dir(&f->model, dir, &base, f->be, 1, shape.max_position, shape.max_position, 0, err,
                           sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
    if (f->vocab.count > f->model.lay.cfg.vocab_size)
        mlm_die(MLM_EXIT_INPUT, "--model: %s has %d tokens but the model only %d rows", path, f->vocab.count,
                f->model.lay.cfg.vocab_size);
}

int mlm_cmd_fill_mask(int argc, char **argv) {
    const char *dir = NULL, *device = "auto";
    filler f = {.k = 5};
    int ntexts = 0;
    char **texts = mlm_xcalloc(argc + 1, sizeof(char *), "arguments");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(FILL_USAGE, stdout);
            free(texts);
            return 0;
        }
        if (!strncmp(a, "--", 2) && !v) mlm_usage_error(FILL_USAGE, "%s needs a value", a);
        if (!strcmp(a, "--model")) dir = argv[++i];
        else if (!strcmp(a, "--device")) device = argv[++i];
        else if (!strcmp(a, "--top-k")) f.k = (int)mlm_cli_int(FILL_USAGE, a, argv[++i], 1, 1000);
        else if (!strncmp(a, "--", 2)) mlm_usage_error(FILL_USAGE, "unknown option '%s'", a);
        else texts[ntexts++] = argv[i];
    }
    if (!dir) mlm_usage_error(FILL_USAGE, "%s", "--model DIR is required");
    if (!ntexts) mlm_usage_error(FILL_USAGE, "%s", "give at least one text with [MASK]");
    open_filler(&f, dir, device);
    if (f.k > f.model.lay.cfg.vocab_size) f.k = f.model.lay.cfg.vocab_size;
    int rc = 0;
    for (int i = 0; i < ntexts; i++) rc |= fill_one(&f, texts[i]);
    mlm_model_destroy(&f.model);
    f.be->destroy(f.be);
    mlm_tokenizer_free(f.tok);
    mlm_vocab_free(&f.vocab);
    free(texts);
    return rc;
}
