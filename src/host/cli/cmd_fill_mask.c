/*
 * `mlmgpu fill-mask`: the top-k tokens and probabilities the model gives each
 * [MASK] (RoBERTa: <mask>) of a text, as HF's fill-mask pipeline reports them
 * (softmax over the vocabulary at the masked position, [CLS] text [SEP] or
 * <s> text </s> as input). The model directory's config.json says which
 * architecture it is, and its tokenizer files must be that architecture's
 * (vocab.txt for BERT, vocab.json + merges.txt for RoBERTa).
 */
#include <ctype.h>
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
    "[MASK] of each text (<mask> for a RoBERTa model). DIR holds config.json,\n"
    "model.safetensors and the tokenizer: vocab.txt (BERT) or vocab.json + merges.txt\n"
    "(RoBERTa); a checkpoint, or an HF BertForMaskedLM / RobertaForMaskedLM directory.\n";

typedef struct {
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

/* What the pipeline's token_str shows of a token: WordPiece the vocabulary form;
 * BPE the decoded text without its leading space, or the vocabulary form when that
 * is blank or not printable on one line (a newline, a byte of a longer character). */
static void token_text(const filler *f, int id, char *out, size_t cap) {
    const char *form = mlm_tokenizer_token(f->tok, id);
    snprintf(out, cap, "%s", form ? form : "[?]");
    if (!form || mlm_tokenizer_kind(f->tok) != MLM_TOK_BPE) return;
    char text[256];
    int32_t one = id;
    size_t n = mlm_tokenizer_decode(f->tok, &one, 1, text, sizeof text);
    if (n >= sizeof text) return;
    char *s = text, *e = text + n;
    while (s < e && isspace((unsigned char)*s)) s++;
    while (e > s && isspace((unsigned char)e[-1])) e--;
    if (s == e) return;
    for (const unsigned char *c = (const unsigned char *)s; c < (const unsigned char *)e;) {   // valid UTF-8, no controls
        int len = *c < 0x80 ? 1 : (*c & 0xe0) == 0xc0 ? 2 : (*c & 0xf0) == 0xe0 ? 3 : (*c & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || *c < 0x20 || *c == 0x7f || (*c & 0xfe) == 0xc0 || c + len > (const unsigned char *)e) return;
        for (int k = 1; k < len; k++)
            if ((c[k] & 0xc0) != 0x80) return;
        c += len;
    }
    snprintf(out, cap, "%.*s", (int)(e - s), s);
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
        char tok[256];
        token_text(f, best[i], tok, sizeof tok);
        printf("  %-16s %.6f\n", tok, exp((double)logits[best[i]] - mx) / z);
    }
    free(best);
}

static int fill_one(filler *f, const char *text) {
    int S = mlm_max_seq_len(&f->model.lay.cfg), V = f->model.lay.cfg.vocab_size;
    const char *mask_name = mlm_tokenizer_token(f->tok, mlm_tokenizer_special(f->tok).mask);
    int32_t *rows = mlm_xmalloc(S * sizeof(int32_t), "mask rows"), *ids;
    size_t n;
    int M = encode(f, text, &ids, &n, rows, S);
    if (M == 0 || (int)n > S) {
        // the text named, not echoed: it may be a megabyte long
        char shown[96];
        size_t tl = strlen(text), cut = tl > 60 ? 60 : tl;
        while (cut < tl && cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80) cut--;   // whole UTF-8 characters
        snprintf(shown, sizeof shown, "%.*s%s", (int)cut, text, cut < tl ? "..." : "");
        if (M == 0) fprintf(stderr, "mlmgpu: error: \"%s\": no %s in the text\n", shown, mask_name);
        else
            fprintf(stderr, "mlmgpu: error: \"%s\" (%zu bytes): %zu tokens with %s, longer than the model's %d "
                    "positions\n", shown, tl, n, mlm_tokenizer_kind(f->tok) == MLM_TOK_BPE ? "<s> and </s>" :
                    "[CLS] and [SEP]", S);
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
        printf(" %s #%d:\n", mask_name, i + 1);
        print_top_k(f, logits + (size_t)i * V, V);
    }
    free(logits), free(labels), free(ids), free(rows);
    return 0;
}

/* Everything is checked before the model is loaded: config.json, the tokenizer
 * files, and that the two are the same architecture. */
static void open_filler(filler *f, const char *dir, const char *device) {
    char err[2048];
    int cased;
    mlm_config defaults;
    mlm_config_defaults(&defaults);
    mlm_model_config shape = defaults.model;   // the architecture and shape are config.json's
    if (mlm_hf_read_config(dir, &shape, err, sizeof err) != 0 || mlm_hf_read_cased(dir, &cased, err, sizeof err) != 0 ||
        !(f->tok = mlm_tokenizer_open(dir, cased, err, sizeof err)))
        mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
    const char *files[2];
    mlm_tokenizer_files(f->tok, files);
    int bpe = mlm_tokenizer_kind(f->tok) == MLM_TOK_BPE;
    if (bpe != (shape.architecture == MLM_ARCH_ROBERTA))
        mlm_die(MLM_EXIT_INPUT, "--model: %s/config.json names a %s model, but its tokenizer is %s (%s): %s takes %s",
                dir, mlm_arch_name(shape.architecture), bpe ? "byte-level BPE" : "WordPiece", files[0],
                mlm_arch_name(shape.architecture), bpe ? "vocab.txt" : "vocab.json + merges.txt");
    if (mlm_tokenizer_size(f->tok) > shape.vocab_size)
        mlm_die(MLM_EXIT_INPUT, "--model: %s has %d tokens but the model only %d rows", files[0],
                mlm_tokenizer_size(f->tok), shape.vocab_size);
    f->be = mlm_choose_backend(device, 0);
    // the arena holds one sequence as long as the positions allow, every token maskable
    int S = mlm_max_seq_len(&shape);
    if (mlm_model_load_dir(&f->model, dir, &shape, f->be, 1, S, S, 0, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
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
    if (!ntexts) mlm_usage_error(FILL_USAGE, "%s", "give at least one text with [MASK] (RoBERTa: <mask>)");
    open_filler(&f, dir, device);
    if (f.k > f.model.lay.cfg.vocab_size) f.k = f.model.lay.cfg.vocab_size;
    int rc = 0;
    for (int i = 0; i < ntexts; i++) rc |= fill_one(&f, texts[i]);
    mlm_model_destroy(&f.model);
    f.be->destroy(f.be);
    mlm_tokenizer_free(f.tok);
    free(texts);
    return rc;
}
