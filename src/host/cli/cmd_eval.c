/*
 * `mlmgpu eval`: masked-LM loss, accuracy and perplexity of a model directory (a
 * checkpoint, or an HF BERT or RoBERTa directory) on shards, with the fixed masking of
 * validation (step 0, the run's seed). --dump writes the first micro-batch and its
 * loss as safetensors, so another implementation can score the same batch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlm/checkpoint.h"
#include "mlm/cli.h"
#include "mlm/eval.h"
#include "mlm/fileio.h"
#include "mlm/loader.h"
#include "mlm/log.h"
#include "mlm/safetensors.h"

static const char *EVAL_USAGE =
    "usage: mlmgpu eval --model DIR --data PATH [--steps N] [--micro-batch B] [--device auto|cpu|cuda]\n"
    "                   [--dump FILE]\n"
    "\n"
    "Scores a model directory (a checkpoint or an HF BERT or RoBERTa directory) on token shards with\n"
    "fixed masking: masked-LM loss, accuracy and perplexity.\n"
    "\n"
    "  --model DIR        config.json + model.safetensors (+ mlmgpu.ini for masking and seed)\n"
    "  --data PATH        a shard file or a directory of *.shard files\n"
    "  --steps N          micro-batches to score (default: the whole set, at most 1000)\n"
    "  --micro-batch B    sequences per micro-batch (default 32)\n"
    "  --device D         auto, cpu or cuda (default auto)\n"
    "  --dump FILE        also write the first micro-batch and its loss to FILE (safetensors)\n";

typedef struct {
    const char *model, *data, *device, *dump;
    int steps, micro_batch;
} eval_args;

static void parse_args(eval_args *a, int argc, char **argv) {
    *a = (eval_args){NULL, NULL, "auto", NULL, 0, 32};
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(EVAL_USAGE, stdout);
            exit(0);
        }
        if (!v || strncmp(o, "--", 2) != 0) mlm_usage_error(EVAL_USAGE, "unexpected argument '%s'", o);
        if (!strcmp(o, "--model")) a->model = v;
        else if (!strcmp(o, "--data")) a->data = v;
        else if (!strcmp(o, "--device")) a->device = v;
        else if (!strcmp(o, "--dump")) a->dump = v;
        else if (!strcmp(o, "--steps")) a->steps = (int)mlm_cli_int(EVAL_USAGE, o, v, 1, 1000000000);
        else if (!strcmp(o, "--micro-batch")) a->micro_batch = (int)mlm_cli_int(EVAL_USAGE, o, v, 1, 1000000000);
        else mlm_usage_error(EVAL_USAGE, "unknown option '%s'", o);
        i++;
    }
    if (!a->model) mlm_usage_error(EVAL_USAGE, "%s", "--model DIR is required");
    if (!a->data) mlm_usage_error(EVAL_USAGE, "%s", "--data PATH is required");
}

/* The masking settings and seed of the run that wrote dir, when it left them. */
static void load_run_config(mlm_config *cfg, const char *dir) {
    char ini[2 * MLM_PATH_MAX], err[2048];
    snprintf(ini, sizeof ini, "%s/mlmgpu.ini", dir);
    FILE *f = fopen(ini, "r");
    if (!f) {   // an HF directory: its config.json says which architecture it is
        mlm_config_defaults(cfg);
        if (mlm_hf_read_config(dir, &cfg->model, err, sizeof err) != 0) mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
        return;
    }
    fclose(f);
    if (mlm_config_load(cfg, ini, NULL, 0, err, sizeof err) != 0) mlm_die(MLM_EXIT_INPUT, "%s", err);
}

/* The vocabulary a model directory holds (vocab.json + merges.txt, or vocab.txt), or
 * NULL when it holds none; a broken one is an error. */
static mlm_tokenizer *open_model_vocab(const char *dir) {
    char json[2 * MLM_PATH_MAX], txt[2 * MLM_PATH_MAX], err[2048];
    snprintf(json, sizeof json, "%s/vocab.json", dir);
    snprintf(txt, sizeof txt, "%s/vocab.txt", dir);
    if (access(json, F_OK) != 0 && access(txt, F_OK) != 0) return NULL;
    mlm_tokenizer *t = mlm_tokenizer_open(dir, 0, err, sizeof err);   // cased plays no part in ids here
    if (!t) mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
    return t;
}

static void dump_batch(const char *path, const mlm_microbatch *mb, float loss) {
    const mlm_batch *b = &mb->batch;
    mlm_st_out out[5] = {
        {"batch.ids", MLM_ST_I32, 2, {b->B, b->S}, b->ids},
        {"batch.lengths", MLM_ST_I32, 1, {b->B}, b->lengths},
        {"batch.rows", MLM_ST_I32, 1, {b->M}, b->rows},
        {"batch.labels", MLM_ST_I32, 1, {b->M}, b->labels},
        {"loss", MLM_ST_F32, 1, {1}, &loss},
    };
    char err[1024];
    if (mlm_st_write(path, out, 5, NULL, NULL, 0, err, sizeof err) != 0) mlm_die(MLM_EXIT_INPUT, "--dump: %s", err);
}

int mlm_cmd_eval(int argc, char **argv) {
    eval_args a;
    parse_args(&a, argc, argv);
    char err[2048];
    if (a.dump) {   // refused before the evaluation, not after it
        char *target;
        if (mlm_output_target(a.dump, &target, err, sizeof err) != 0) mlm_die(MLM_EXIT_INPUT, "--dump: %s", err);
        free(target);
    }
    mlm_config cfg;
    load_run_config(&cfg, a.model);
    mlm_tokenizer *tok = open_model_vocab(a.model);
    uint64_t vhash = 0;
    if (tok) {
        const char *files[2];
        int n = mlm_tokenizer_files(tok, files);
        if (!(vhash = mlm_vocab_hash_files(files, n, err, sizeof err))) mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
    } else if (cfg.data.whole_word_mask) {
        mlm_die(MLM_EXIT_INPUT, "--model: %s: data.whole_word_mask = 1 (mlmgpu.ini) needs the vocabulary in the "
                "model directory (vocab.txt, or vocab.json + merges.txt), for the word starts", a.model);
    }
    mlm_shards sh;
    if (mlm_shards_open(&sh, a.data, 0, vhash, err, sizeof err) != 0) mlm_die(MLM_EXIT_INPUT, "--data: %s", err);
    if (cfg.data.whole_word_mask && sh.vocab_hash == 0)
        mlm_die(MLM_EXIT_INPUT, "--data: %s: data.whole_word_mask = 1 (mlmgpu.ini) needs shards that name their "
                "vocabulary, and these do not (vocab hash 0)", sh.paths[0]);
    cfg.data.seq_len = sh.seq_len;
    cfg.train.micro_batch = a.micro_batch;
    uint64_t avail = (sh.total + a.micro_batch - 1) / a.micro_batch;
    int n = a.steps ? a.steps : (int)(avail < 1000 ? avail : 1000);
    mlm_backend *be = mlm_choose_backend(a.device, cfg.train.threads);
    int max_M = mlm_max_masked(a.micro_batch * sh.seq_len, cfg.data.mask_prob);
    mlm_model m;
    if (mlm_model_load_dir(&m, a.model, &cfg.model, be, a.micro_batch, sh.seq_len, max_M, cfg.train.seed, err,
                           sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "--model: %s", err);
    if (mlm_shards_check_ids(&sh, m.lay.cfg.vocab_size, err, sizeof err) != 0)   // before the evaluation
        mlm_die(MLM_EXIT_INPUT, "--data: %s", err);
    mlm_special_ids sp = mlm_special_ids_arch(m.lay.cfg.architecture, m.lay.cfg.vocab_size);
    uint8_t *word_start = NULL;
    if (tok) {
        sp = mlm_tokenizer_special(tok);
        if (sp.vocab_size > m.lay.cfg.vocab_size)
            mlm_die(MLM_EXIT_INPUT, "--model: %s: the vocabulary's %d tokens do not fit the model's %d rows", a.model,
                    sp.vocab_size, m.lay.cfg.vocab_size);
        if ((mlm_tokenizer_kind(tok) == MLM_TOK_BPE) != (m.lay.cfg.architecture == MLM_ARCH_ROBERTA))
            mlm_die(MLM_EXIT_INPUT, "--model: %s: a %s model with a %s vocabulary", a.model,
                    mlm_arch_name(m.lay.cfg.architecture),
                    mlm_tokenizer_kind(tok) == MLM_TOK_BPE ? "byte-level BPE" : "WordPiece");
        if (cfg.data.whole_word_mask) word_start = mlm_word_starts(tok);
        mlm_tokenizer_free(tok);
    }
    if (sh.pad_id != sp.pad)
        mlm_die(MLM_EXIT_INPUT, "--data: %s: the shards pad with id %d, the model's vocabulary with id %d: they were "
                "prepared for another vocabulary", sh.paths[0], sh.pad_id, sp.pad);
    mlm_eval_result e = mlm_evaluate(&m, &sh, &cfg, &sp, word_start, n);
    if (e.tokens == 0)   // loss 0 and perplexity 1 would read as a perfect score
        mlm_die(MLM_EXIT_INPUT, "--data: %s: nothing to score: %d micro-batch(es) of %d x %d hold no masked tokens "
                "(all padding, or data.mask_prob = %g)", a.data, n, a.micro_batch, sh.seq_len,
                (double)cfg.data.mask_prob);
    printf("eval: %d micro-batches of %d x %d | %ld masked tokens | loss %.4f | acc %.4f | ppl %.2f\n", n,
           a.micro_batch, sh.seq_len, e.tokens, e.loss, e.acc, exp(e.loss));
    if (a.dump) {
        mlm_eval_result first = n == 1 ? e : mlm_evaluate(&m, &sh, &cfg, &sp, word_start, 1);
        mlm_microbatch mb;
        mlm_microbatch_init(&mb, a.micro_batch, sh.seq_len, max_M);
        uint64_t *idx = mlm_xmalloc(a.micro_batch * sizeof(uint64_t), "indices");
        for (int b = 0; b < a.micro_batch; b++) idx[b] = (uint64_t)b;
        mlm_microbatch_fill(&mb, &sh, idx, &cfg.data, &sp, word_start, cfg.train.seed, 0, 0);
        dump_batch(a.dump, &mb, (float)first.loss);
        free(idx);
        mlm_microbatch_free(&mb);
    }
    free(word_start);
    mlm_model_destroy(&m);
    be->destroy(be);
    mlm_shards_close(&sh);
    return 0;
}
