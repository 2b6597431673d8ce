/*
 * Checkpoints (include/mlm/checkpoint.h): HF-loadable model directories written
 * atomically, exact resume from the fp32 master weights and AdamW moments, and
 * import of HF BERT and RoBERTa checkpoints by name.
 *
 * The architecture is part of the model's identity: config.json names it (model_type,
 * architectures), the tensor names and the tokenizer files follow it, and a directory
 * whose config.json names another architecture than the run's is refused, as is one
 * whose tensors are the other family's.
 *
 * Fault injection for the crash tests: MLM_FAULT_CHECKPOINT=K kills the process
 * (SIGKILL, as a crash or `kill -9` would) after the K-th file of a checkpoint.
 */
#include "mlm/checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlm/data.h"
#include "mlm/dist.h"
#include "mlm/fileio.h"
#include "mlm/log.h"
#include "mlm/safetensors.h"
#include "mlm/tokenizer.h"

#define MAX_HF_TENSORS 4096
#define PATHBUF (2 * MLM_PATH_MAX)
#define TRAINER_FORMAT "mlmgpu-trainer-1"

/* ---------------------------------------------------------------- small helpers */

static void path_join(char *out, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n)
        mlm_die(MLM_EXIT_INPUT, "path too long: %s/%s", dir, name);
}

static int write_text(const char *dir, const char *name, const char *text, char *err, size_t len) {
    char path[PATHBUF];
    path_join(path, sizeof path, dir, name);
    const void *parts[1] = {text};
    size_t sizes[1] = {strlen(text)};
    return mlm_write_file_atomic(path, parts, sizes, 1, err, len);
}

static void fault_point(void) {
    static int written;
    const char *k = getenv("MLM_FAULT_CHECKPOINT");
    if (k && ++written >= atoi(k)) raise(SIGKILL);
}

static cJSON *read_json(const char *dir, const char *name, char *err, size_t len) {
    char path[PATHBUF], *text;
    size_t bytes;
    path_join(path, sizeof path, dir, name);
    if (mlm_read_file(path, &text, &bytes, err, len) != 0) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, bytes);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        mlm_fail(err, len, "%s: not a JSON object", path);
        return NULL;
    }
    return j;
}

/* ---------------------------------------------------------------- HF config.json */

typedef struct { const char *hf; size_t offset; int is_float; } hf_field;

#define MC(f) offsetof(mlm_model_config, f)
static const hf_field HF_SHAPE[] = {
    {"vocab_size", MC(vocab_size), 0},
    {"hidden_size", MC(hidden_size), 0},
    {"num_hidden_layers", MC(num_layers), 0},
    {"num_attention_heads", MC(num_heads), 0},
    {"intermediate_size", MC(intermediate_size), 0},
    {"max_position_embeddings", MC(max_position), 0},
    {"type_vocab_size", MC(type_vocab_size), 0},
    {"layer_norm_eps", MC(layer_norm_eps), 1},
};
#define N_HF_SHAPE (sizeof HF_SHAPE / sizeof HF_SHAPE[0])

/* The architecture config.json names: model_type, else architectures[0]; BERT when
 * it names neither (older files, hand-written ones). Another model type, or a
 * model_type and architectures that disagree, is an error. */
static int hf_architecture(const char *dir, const cJSON *j, mlm_arch *arch, char *err, size_t len) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    const cJSON *first = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    int from_type = -1, from_class = -1;
    if (cJSON_IsString(type)) {
        if (!strcmp(type->valuestring, "bert")) from_type = MLM_ARCH_BERT;
        else if (!strcmp(type->valuestring, "roberta")) from_type = MLM_ARCH_ROBERTA;
        else
            return mlm_fail(err, len, "%s/config.json: model_type \"%s\": mlmgpu implements \"bert\" and \"roberta\"",
                            dir, type->valuestring);
    }
    if (cJSON_IsString(first)) {
        if (!strncmp(first->valuestring, "Bert", 4)) from_class = MLM_ARCH_BERT;
        else if (!strncmp(first->valuestring, "Roberta", 7)) from_class = MLM_ARCH_ROBERTA;
        else if (from_type < 0)
            return mlm_fail(err, len, "%s/config.json: architectures [\"%s\"]: mlmgpu implements BERT and RoBERTa",
                            dir, first->valuestring);
    }
    if (from_type >= 0 && from_class >= 0 && from_type != from_class)
        return mlm_fail(err, len, "%s/config.json: model_type \"%s\" but architectures [\"%s\"]: they name two "
                        "architectures", dir, type->valuestring, first->valuestring);
    *arch = from_type >= 0 ? (mlm_arch)from_type : from_class >= 0 ? (mlm_arch)from_class : MLM_ARCH_BERT;
    return 0;
}

int mlm_hf_read_config(const char *dir, mlm_model_config *mc, char *err, size_t len) {
    cJSON *j = read_json(dir, "config.json", err, len);
    if (!j) return -1;
    int rc = hf_architecture(dir, j, &mc->architecture, err, len);
    for (size_t i = 0; i < N_HF_SHAPE && rc == 0; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, HF_SHAPE[i].hf);
        char *p = (char *)mc + HF_SHAPE[i].offset;
        if (!cJSON_IsNumber(v) || (HF_SHAPE[i].is_float ? v->valuedouble <= 0 : v->valuedouble < 1 ||
                                   v->valuedouble > 1e9 || v->valuedouble != (int)v->valuedouble))
            rc = mlm_fail(err, len, "%s/config.json: %s is missing or not a valid number", dir, HF_SHAPE[i].hf);
        else if (HF_SHAPE[i].is_float) *(float *)p = (float)v->valuedouble;
        else *(int *)p = v->valueint;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    if (rc == 0 && cJSON_IsString(act) && strcmp(act->valuestring, "gelu") != 0)
        rc = mlm_fail(err, len, "%s/config.json: hidden_act \"%s\": mlmgpu implements only \"gelu\" (erf)", dir,
                      act->valuestring);
    const cJSON *pos = cJSON_GetObjectItemCaseSensitive(j, "position_embedding_type");
    if (rc == 0 && cJSON_IsString(pos) && strcmp(pos->valuestring, "absolute") != 0)
        rc = mlm_fail(err, len, "%s/config.json: position_embedding_type \"%s\": only \"absolute\" is supported",
                      dir, pos->valuestring);
    if (rc == 0 && mc->hidden_size % mc->num_heads != 0)
        rc = mlm_fail(err, len, "%s/config.json: hidden_size %d is not a multiple of num_attention_heads %d", dir,
                      mc->hidden_size, mc->num_heads);
    // RoBERTa's positions are numbered from padding_idx + 1: ours is fixed at <pad> = 1
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(j, "pad_token_id");
    if (rc == 0 && mc->architecture == MLM_ARCH_ROBERTA && cJSON_IsNumber(pad) && pad->valuedouble != MLM_ROBERTA_PAD_ID)
        rc = mlm_fail(err, len, "%s/config.json: pad_token_id %g: mlmgpu's RoBERTa pads with id %d (<pad>), from "
                      "which its positions are numbered", dir, pad->valuedouble, MLM_ROBERTA_PAD_ID);
    if (rc == 0 && mc->max_position <= mlm_position_offset(mc))
        rc = mlm_fail(err, len, "%s/config.json: max_position_embeddings %d leaves no position after RoBERTa's "
                      "padding_idx %d", dir, mc->max_position, MLM_ROBERTA_PAD_ID);
    cJSON_Delete(j);
    return rc;
}

int mlm_hf_read_cased(const char *dir, int *cased, char *err, size_t len) {
    char path[PATHBUF];
    path_join(path, sizeof path, dir, "tokenizer_config.json");
    *cased = 0;
    if (access(path, F_OK) != 0) return 0;
    cJSON *j = read_json(dir, "tokenizer_config.json", err, len);
    if (!j) return -1;
    const cJSON *lower = cJSON_GetObjectItemCaseSensitive(j, "do_lower_case");
    *cased = cJSON_IsFalse(lower);
    cJSON_Delete(j);
    return 0;
}

/* config.json as HF's BertConfig / RobertaConfig writes it for the MLM model. */
static char *hf_config_json(const mlm_model_config *mc) {
    int roberta = mc->architecture == MLM_ARCH_ROBERTA;
    cJSON *j = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(roberta ? "RobertaForMaskedLM" : "BertForMaskedLM"));
    cJSON_AddStringToObject(j, "model_type", roberta ? "roberta" : "bert");
    for (size_t i = 0; i < N_HF_SHAPE; i++) {
        const char *p = (const char *)mc + HF_SHAPE[i].offset;
        cJSON_AddNumberToObject(j, HF_SHAPE[i].hf, HF_SHAPE[i].is_float ? *(const float *)p : *(const int *)p);
    }
    cJSON_AddStringToObject(j, "hidden_act", "gelu");
    cJSON_AddNumberToObject(j, "hidden_dropout_prob", mc->hidden_dropout);
    cJSON_AddNumberToObject(j, "attention_probs_dropout_prob", mc->attention_dropout);
    cJSON_AddNumberToObject(j, "initializer_range", mc->init_range);
    if (roberta) {   // <s> <pad> </s>: HF numbers positions from pad_token_id + 1
        cJSON_AddNumberToObject(j, "bos_token_id", 0);
        cJSON_AddNumberToObject(j, "pad_token_id", MLM_ROBERTA_PAD_ID);
        cJSON_AddNumberToObject(j, "eos_token_id", 2);
    } else {
        cJSON_AddNumberToObject(j, "pad_token_id", 0);
        cJSON_AddStringToObject(j, "position_embedding_type", "absolute");
    }
    cJSON_AddBoolToObject(j, "tie_word_embeddings", 1);
    cJSON_AddStringToObject(j, "dtype", "float32");
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    return text;
}

/* ---------------------------------------------------------------- HF weights */

/* The tensor of file f stored under our HF name or one of its older spellings (no
 * "bert." / "roberta." prefix, LayerNorm gamma/beta, the decoder's own bias name). */
static const mlm_st_tensor *find_hf(const mlm_st_file *f, const char *name) {
    const mlm_st_tensor *t = mlm_st_find(f, name);
    if (t) return t;
    char alt[160];
    const char *bare = !strncmp(name, "bert.", 5) ? name + 5 : !strncmp(name, "roberta.", 8) ? name + 8 : NULL;
    if (bare && (t = mlm_st_find(f, bare))) return t;
    if (!strcmp(name, "cls.predictions.bias")) return mlm_st_find(f, "cls.predictions.decoder.bias");
    if (!strcmp(name, "lm_head.bias")) return mlm_st_find(f, "lm_head.decoder.bias");
    const char *ln = strstr(name, "LayerNorm.");
    if (!ln) return NULL;
    const char *old = !strcmp(ln, "LayerNorm.weight") ? "gamma" : !strcmp(ln, "LayerNorm.bias") ? "beta" : NULL;
    if (!old) return NULL;
    snprintf(alt, sizeof alt, "%.*sLayerNorm.%s", (int)(ln - name), name, old);
    if ((t = mlm_st_find(f, alt))) return t;
    return bare ? mlm_st_find(f, alt + 5) : NULL;
}

/* Reads dir/model.safetensors into host (lay->num_params fp32, our layout). Accepts
 * names with or without "bert.", the older LayerNorm.gamma/beta, a decoder bias
 * under cls.predictions.decoder.bias; ignores the pooler, the NSP head, position_ids
 * and the tied decoder weight. An encoder tensor missing or of the wrong shape is an
 * error; a missing MLM head leaves host's values there and sets *head_missing. */
static int read_hf_weights(const char *dir, const mlm_layout *lay, float *host, int *head_missing, char *err,
                           size_t len) {
    char path[PATHBUF];
    path_join(path, sizeof path, dir, "model.safetensors");
    mlm_st_file f;
    if (mlm_st_open(&f, path, err, len) != 0) return -1;
    mlm_hf_tensor *names = mlm_xmalloc(MAX_HF_TENSORS * sizeof *names, "tensor names");
    int n = mlm_hf_tensors(lay, names, MAX_HF_TENSORS), rc = 0;
    *head_missing = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const mlm_hf_tensor *h = &names[i];
        const mlm_st_tensor *t = find_hf(&f, h->name);
        size_t numel = h->rows * (h->cols ? h->cols : 1);
        if (!t && lay->t[h->id].part == MLM_PART_HEAD) {
            *head_missing = 1;
            continue;
        }
        if (!t) {
            // the other family's weights under a config.json that names this one
            const char *other = lay->cfg.architecture == MLM_ARCH_ROBERTA ? "bert.embeddings.word_embeddings.weight"
                                                                          : "roberta.embeddings.word_embeddings.weight";
            if (mlm_st_find(&f, other))
                rc = mlm_fail(err, len, "%s: holds %s tensors (%s) but config.json names a %s model", path,
                              lay->cfg.architecture == MLM_ARCH_ROBERTA ? "BERT" : "RoBERTa", other,
                              mlm_arch_name(lay->cfg.architecture));
            else
                rc = mlm_fail(err, len, "%s: tensor %s is missing", path, h->name);
        } else if (t->numel != numel || t->ndim != (h->cols ? 2 : 1) || t->shape[0] != (int64_t)h->rows) {
            rc = mlm_fail(err, len, "%s: tensor %s has %zu elements in %d dims, the model needs %zu x %zu", path,
                          t->name, t->numel, t->ndim, h->rows, h->cols ? h->cols : 1);
        } else if ((rc = mlm_st_read_f32(&f, t->name, host + h->offset, numel, err, len)) == 0) {
            // NaN or Inf weights would train or predict nothing but NaN, far from here
            for (size_t k = 0; k < numel && rc == 0; k++)
                if (!isfinite(host[h->offset + k]))
                    rc = mlm_fail(err, len, "%s: tensor %s holds %g at element %zu: the weights are not finite", path,
                                  t->name, (double)host[h->offset + k], k);
        }
    }
    free(names);
    mlm_st_close(&f);
    return rc;
}

int mlm_model_load_dir(mlm_model *m, const char *dir, const mlm_model_config *base, mlm_backend *be, int max_B,
                       int S, int max_M, uint64_t seed, char *err, size_t len) {
    mlm_model_config mc = *base;
    if (mlm_hf_read_config(dir, &mc, err, len) != 0) return -1;
    if (mc.architecture != base->architecture)
        return mlm_fail(err, len, "%s/config.json: a %s model (model_type \"%s\"), but model.architecture is %s", dir,
                        mc.architecture == MLM_ARCH_ROBERTA ? "RoBERTa" : "BERT", mlm_arch_name(mc.architecture),
                        mlm_arch_name(base->architecture));
    if (S > mlm_max_seq_len(&mc))
        return mlm_fail(err, len, "%s: max_position_embeddings %d is shorter than seq_len %d%s", dir, mc.max_position,
                        S, mlm_position_offset(&mc) ? " + 2 (RoBERTa's positions start at 2)" : "");
    mlm_model_create(m, &mc, be, max_B, S, max_M, seed);
    mlm_model_init_params(m, seed);   // the head's values when the checkpoint has none
    float *host = mlm_xmalloc(m->lay.num_params * sizeof(float), "imported weights");
    be->download(be, host, m->master, m->lay.num_params * sizeof(float));
    int head_missing = 0, rc = read_hf_weights(dir, &m->lay, host, &head_missing, err, len);
    if (rc == 0) {
        if (head_missing) mlm_log("warning: %s has no MLM head; it starts from a fresh initialisation", dir);
        mlm_model_set_params(m, host);
    } else {
        mlm_model_destroy(m);
    }
    free(host);
    return rc;
}

/* ---------------------------------------------------------------- writing */

static int write_model(const char *dir, const mlm_layout *lay, const float *master, char *err, size_t len) {
    mlm_hf_tensor *names = mlm_xmalloc(MAX_HF_TENSORS * sizeof *names, "tensor names");
    int n = mlm_hf_tensors(lay, names, MAX_HF_TENSORS);
    mlm_st_out *out = mlm_xcalloc(n, sizeof *out, "checkpoint tensors");
    for (int i = 0; i < n; i++) {
        out[i] = (mlm_st_out){names[i].name, MLM_ST_F32, names[i].cols ? 2 : 1, {0}, master + names[i].offset};
        out[i].shape[0] = (int64_t)names[i].rows;
        out[i].shape[1] = (int64_t)names[i].cols;
    }
    char path[PATHBUF];
    path_join(path, sizeof path, dir, "model.safetensors");
    const char *keys[] = {"format"}, *values[] = {"pt"};
    int rc = mlm_st_write(path, out, n, keys, values, 1, err, len);
    free(out);
    free(names);
    return rc;
}

static int write_optimizer(const char *dir, const mlm_model *m, const float *mom, const float *vel, int step,
                           char *err, size_t len) {
    char path[PATHBUF], steps[32], nparams[32];
    path_join(path, sizeof path, dir, "optimizer.safetensors");
    snprintf(steps, sizeof steps, "%d", step);
    snprintf(nparams, sizeof nparams, "%zu", m->lay.num_params);
    mlm_st_out out[2] = {{"adam_m", MLM_ST_F32, 1, {(int64_t)m->lay.num_params}, mom},
                         {"adam_v", MLM_ST_F32, 1, {(int64_t)m->lay.num_params}, vel}};
    const char *keys[] = {"format", "step", "num_params"}, *values[] = {TRAINER_FORMAT, steps, nparams};
    return mlm_st_write(path, out, 2, keys, values, 3, err, len);
}

/* failure_missing: NULL for a regular checkpoint; for one written on failure, the
 * ranks that did not answer ("" when not known). */
static char *trainer_state_json(const mlm_config *cfg, int step, uint64_t vocab_hash, const char *failure_missing) {
    cJSON *j = cJSON_CreateObject();
    char hex[32];
    cJSON_AddStringToObject(j, "format", TRAINER_FORMAT);
    cJSON_AddNumberToObject(j, "step", step);
    snprintf(hex, sizeof hex, "%" PRIu64, cfg->train.seed);
    cJSON_AddStringToObject(j, "seed", hex);
    snprintf(hex, sizeof hex, "%016" PRIx64, vocab_hash);
    cJSON_AddStringToObject(j, "vocab_hash", hex);
    cJSON_AddNumberToObject(j, "world_size", mlm_dist_world());
    cJSON_AddNumberToObject(j, "batch", cfg->train.batch);
    cJSON *loader = cJSON_AddObjectToObject(j, "loader");
    cJSON_AddNumberToObject(loader, "next_step", step + 1);
    if (failure_missing) {   // a collective failed: written by rank 0 before the job was aborted
        cJSON_AddBoolToObject(j, "written_on_failure", 1);
        cJSON *ranks = cJSON_AddArrayToObject(j, "unanswered_ranks");
        for (const char *p = failure_missing; *p;) {
            char *end;
            long r = strtol(p, &end, 10);
            if (end == p) { p++; continue; }
            cJSON_AddItemToArray(ranks, cJSON_CreateNumber((double)r));
            p = end;
        }
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    return text;
}

static const char *SPECIAL_TOKENS_MAP =
    "{\n  \"unk_token\": \"[UNK]\",\n  \"sep_token\": \"[SEP]\",\n  \"pad_token\": \"[PAD]\",\n"
    "  \"cls_token\": \"[CLS]\",\n  \"mask_token\": \"[MASK]\"\n}\n";

static const char *ROBERTA_SPECIAL_TOKENS_MAP =
    "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\",\n"
    "  \"sep_token\": \"</s>\",\n  \"pad_token\": \"<pad>\",\n  \"cls_token\": \"<s>\",\n"
    "  \"mask_token\": \"<mask>\"\n}\n";

/* The files of the vocabulary data.vocab names, found as mlm_tokenizer_open and
 * mlm_vocab_hash find them: a directory holds vocab.json + merges.txt, else
 * vocab.txt; a *.json file has merges.txt beside it; any other file is a vocab.txt.
 * Returns how many (1 or 2). */
static int vocab_files(const char *vocab, char files[2][PATHBUF]) {
    struct stat st;
    size_t n = strlen(vocab);
    if (stat(vocab, &st) == 0 && S_ISDIR(st.st_mode)) {
        path_join(files[0], PATHBUF, vocab, "vocab.json");
        if (access(files[0], F_OK) != 0) {
            path_join(files[0], PATHBUF, vocab, "vocab.txt");
            return 1;
        }
        path_join(files[1], PATHBUF, vocab, "merges.txt");
        return 2;
    }
    snprintf(files[0], PATHBUF, "%s", vocab);
    if (n < 5 || strcmp(vocab + n - 5, ".json") != 0) return 1;
    const char *slash = strrchr(vocab, '/');
    if (slash) snprintf(files[1], PATHBUF, "%.*s/merges.txt", (int)(slash - vocab), vocab);
    else snprintf(files[1], PATHBUF, "merges.txt");
    return 2;
}

static int copy_file(const char *from, const char *dir, const char *name, char *err, size_t len) {
    char *text, path[PATHBUF];
    size_t bytes;
    if (mlm_read_file(from, &text, &bytes, err, len) != 0) return -1;
    path_join(path, sizeof path, dir, name);
    const void *parts[1] = {text};
    int rc = mlm_write_file_atomic(path, parts, &bytes, 1, err, len);
    free(text);
    return rc;
}

/* RoBERTa's tokenizer files: AutoTokenizer.from_pretrained builds a
 * RobertaTokenizerFast from them (byte-level BPE, no prefix space, <s> text </s>).
 * The special tokens are listed with their ids, <mask> with lstrip as roberta-base
 * has it ("a <mask>" is "a" <mask>: the blank before it goes with it), which is how
 * mlmgpu's tokenizer reads a <mask> in text. */
static int write_roberta_tokenizer(const char *dir, const mlm_config *cfg, char files[2][PATHBUF], char *err,
                                   size_t len) {
    static const char *const specials[] = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"};
    mlm_tokenizer *tok = mlm_tokenizer_open(files[0], 0, err, len);
    if (!tok) return -1;
    cJSON *j = cJSON_CreateObject(), *added = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tokenizer_class", "RobertaTokenizer");
    cJSON_AddBoolToObject(j, "add_prefix_space", 0);
    cJSON_AddStringToObject(j, "errors", "replace");
    cJSON_AddBoolToObject(j, "trim_offsets", 1);
    cJSON_AddNumberToObject(j, "model_max_length", mlm_max_seq_len(&cfg->model));
    static const char *const roles[][2] = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"},
                                           {"sep_token", "</s>"}, {"pad_token", "<pad>"}, {"cls_token", "<s>"},
                                           {"mask_token", "<mask>"}};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) cJSON_AddStringToObject(j, roles[i][0], roles[i][1]);
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        int id = mlm_tokenizer_find(tok, specials[i]);
        if (id < 0) continue;   // the trainer refused a vocabulary without it
        char key[16];
        snprintf(key, sizeof key, "%d", id);
        cJSON *t = cJSON_AddObjectToObject(added, key);
        cJSON_AddStringToObject(t, "content", specials[i]);
        cJSON_AddBoolToObject(t, "lstrip", !strcmp(specials[i], "<mask>"));
        cJSON_AddBoolToObject(t, "normalized", 0);
        cJSON_AddBoolToObject(t, "rstrip", 0);
        cJSON_AddBoolToObject(t, "single_word", 0);
        cJSON_AddBoolToObject(t, "special", 1);
    }
    cJSON_AddItemToObject(j, "added_tokens_decoder", added);
    mlm_tokenizer_free(tok);
    char *json = cJSON_Print(j);
    cJSON_Delete(j);
    int rc = copy_file(files[0], dir, "vocab.json", err, len);
    if (rc == 0) rc = copy_file(files[1], dir, "merges.txt", err, len);
    if (rc == 0) rc = write_text(dir, "tokenizer_config.json", json, err, len);
    free(json);
    if (rc == 0) rc = write_text(dir, "special_tokens_map.json", ROBERTA_SPECIAL_TOKENS_MAP, err, len);
    return rc;
}

static int write_tokenizer(const char *dir, const mlm_config *cfg, char *err, size_t len) {
    if (!cfg->data.vocab[0]) return 0;
    char files[2][PATHBUF], json[1024];
    int nfiles = vocab_files(cfg->data.vocab, files);
    if ((nfiles == 2) != (cfg->model.architecture == MLM_ARCH_ROBERTA))   // the trainer refused this already
        return mlm_fail(err, len, "data.vocab %s: a %s vocabulary for a %s model", cfg->data.vocab,
                        nfiles == 2 ? "byte-level BPE" : "WordPiece", mlm_arch_name(cfg->model.architecture));
    if (nfiles == 2) return write_roberta_tokenizer(dir, cfg, files, err, len);
    int rc = copy_file(files[0], dir, "vocab.txt", err, len);
    snprintf(json, sizeof json,
             "{\n  \"tokenizer_class\": \"BertTokenizer\",\n  \"do_lower_case\": %s,\n  \"strip_accents\": null,\n"
             "  \"tokenize_chinese_chars\": true,\n  \"model_max_length\": %d,\n  \"unk_token\": \"[UNK]\",\n"
             "  \"sep_token\": \"[SEP]\",\n  \"pad_token\": \"[PAD]\",\n  \"cls_token\": \"[CLS]\",\n"
             "  \"mask_token\": \"[MASK]\"\n}\n",
             cfg->data.cased ? "false" : "true", cfg->model.max_position);
    if (rc == 0) rc = write_text(dir, "tokenizer_config.json", json, err, len);
    if (rc == 0) rc = write_text(dir, "special_tokens_map.json", SPECIAL_TOKENS_MAP, err, len);
    return rc;
}

/* Writes every file of the checkpoint into the (new, empty) directory dir. */
static int write_all_files(const char *dir, mlm_model *m, const mlm_config *cfg, uint64_t vhash, int step,
                           const char *failure_missing, char *err, size_t len) {
    mlm_backend *be = m->be;
    size_t n = m->lay.num_params;
    float *host = mlm_xmalloc(3 * n * sizeof(float), "checkpoint staging");
    be->download(be, host, m->master, n * sizeof(float));
    be->download(be, host + n, m->m, n * sizeof(float));
    be->download(be, host + 2 * n, m->v, n * sizeof(float));
    char *cfg_json = hf_config_json(&cfg->model), *state = trainer_state_json(cfg, step, vhash, failure_missing);
    char ini_path[PATHBUF];
    path_join(ini_path, sizeof ini_path, dir, "mlmgpu.ini");
    int rc = write_model(dir, &m->lay, host, err, len);
    if (rc == 0) fault_point(), rc = write_text(dir, "config.json", cfg_json, err, len);
    if (rc == 0) fault_point(), rc = write_tokenizer(dir, cfg, err, len);
    if (rc == 0) fault_point(), rc = write_optimizer(dir, m, host + n, host + 2 * n, step, err, len);
    if (rc == 0) {
        fault_point();
        FILE *f = fopen(ini_path, "w");
        if (!f) rc = mlm_fail(err, len, "%s: cannot write: %s", ini_path, strerror(errno));
        else {
            mlm_config_write(cfg, f);
            rc = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0
                     ? 0 : mlm_fail(err, len, "%s: cannot write: %s", ini_path, strerror(errno));
            if (fclose(f) != 0 && rc == 0) rc = mlm_fail(err, len, "%s: cannot write: %s", ini_path, strerror(errno));
        }
    }
    if (rc == 0) fault_point(), rc = write_text(dir, "trainer_state.json", state, err, len);
    free(cfg_json);
    free(state);
    free(host);
    return rc;
}

/* Keeps the newest `keep` step_* directories, and clears leftovers of killed writers. */
static void prune(const char *ckdir, int keep) {
    DIR *d = opendir(ckdir);
    if (!d) return;
    char *steps[4096], path[PATHBUF];
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strncmp(e->d_name, ".tmp.", 5) || !strncmp(e->d_name, ".old.", 5)) {
            path_join(path, sizeof path, ckdir, e->d_name);
            mlm_remove_tree(path);
        } else if (!strncmp(e->d_name, "step_", 5) && n < 4096) {
            steps[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    qsort(steps, n, sizeof steps[0], mlm_cmp_str);
    for (int i = 0; i < n; i++) {
        if (i < n - keep) {
            path_join(path, sizeof path, ckdir, steps[i]);
            mlm_remove_tree(path);
        }
        free(steps[i]);
    }
}

/* Points ckdir/latest at name, atomically. */
static int move_latest(const char *ckdir, const char *name, char *err, size_t len) {
    char link[PATHBUF], tmp[PATHBUF];
    path_join(link, sizeof link, ckdir, "latest");
    char tmpname[48];
    snprintf(tmpname, sizeof tmpname, ".tmp.latest.%d", (int)getpid());
    path_join(tmp, sizeof tmp, ckdir, tmpname);
    unlink(tmp);
    if (symlink(name, tmp) != 0 || rename(tmp, link) != 0) {
        unlink(tmp);
        return mlm_fail(err, len, "%s: cannot update: %s", link, strerror(errno));
    }
    return mlm_fsync_dir(ckdir, err, len);
}

/* mlm_checkpoint_save, and with failure_missing not NULL mlm_checkpoint_save_on_failure. */
static int save(mlm_model *m, const mlm_config *cfg, uint64_t vocab_hash, int step, const char *failure_missing,
                char *err, size_t len) {
    char ckdir[MLM_PATH_MAX + 32], name[32], tmp[PATHBUF], final[PATHBUF],
        old[PATHBUF];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", cfg->train.out_dir);
    snprintf(name, sizeof name, "step_%07d", step);
    snprintf(tmp, sizeof tmp, "%s/.tmp.%s.%d", ckdir, name, (int)getpid());
    path_join(final, sizeof final, ckdir, name);
    snprintf(old, sizeof old, "%s/.old.%s.%d", ckdir, name, (int)getpid());
    if (mlm_mkdir_p(ckdir) != 0) return mlm_fail(err, len, "%s: cannot create: %s", ckdir, strerror(errno));
    mlm_remove_tree(tmp);
    if (mkdir(tmp, 0755) != 0) return mlm_fail(err, len, "%s: cannot create: %s", tmp, strerror(errno));
    int rc = write_all_files(tmp, m, cfg, vocab_hash, step, failure_missing, err, len);
    if (rc == 0) rc = mlm_fsync_dir(tmp, err, len);
    // a checkpoint of the same step (a resume from an older one) is replaced whole
    int replaced = rc == 0 && rename(final, old) == 0;
    if (rc == 0 && rename(tmp, final) != 0) {
        rc = mlm_fail(err, len, "%s: cannot move the checkpoint into place: %s", final, strerror(errno));
        if (replaced) rename(old, final);
    }
    if (rc != 0) {
        mlm_remove_tree(tmp);
        return -1;
    }
    rc = move_latest(ckdir, name, err, len);
    prune(ckdir, cfg->train.checkpoint_keep);
    return rc;
}

int mlm_checkpoint_save(mlm_model *m, const mlm_config *cfg, uint64_t vocab_hash, int step, char *err, size_t len) {
    return save(m, cfg, vocab_hash, step, NULL, err, len);
}

int mlm_checkpoint_save_on_failure(mlm_model *m, const mlm_config *cfg, uint64_t vocab_hash, int step,
                                   const char *missing, char *err, size_t len) {
    return save(m, cfg, vocab_hash, step, missing ? missing : "", err, len);
}

/* ---------------------------------------------------------------- resuming */

/* The newest step_NNNNNNN directory under ckpts into name (empty when none). */
static void newest_step_dir(const char *ckpts, char *name, size_t n) {
    name[0] = 0;
    DIR *d = opendir(ckpts);
    if (!d) return;
    long best = -1;
    for (struct dirent *e; (e = readdir(d));) {
        char path[3 * MLM_PATH_MAX], tail;
        long step;
        struct stat st;
        if (sscanf(e->d_name, "step_%ld%c", &step, &tail) != 1 || step <= best) continue;
        snprintf(path, sizeof path, "%s/%s", ckpts, e->d_name);
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) best = step, snprintf(name, n, "%s", e->d_name);
    }
    closedir(d);
}

int mlm_checkpoint_find(const mlm_config *cfg, const char *resume, char *dir, size_t dir_len, char *err,
                        size_t len) {
    struct stat st;
    if (strcmp(resume, "auto") != 0) {
        if (stat(resume, &st) != 0 || !S_ISDIR(st.st_mode))
            return mlm_fail(err, len, "--resume %s: not a checkpoint directory", resume);
        snprintf(dir, dir_len, "%s", resume);
        return 0;
    }
    // auto: checkpoints/latest, which must be sound. Starting over while checkpoints
    // exist would overwrite them, so a missing, dangling or looping link is an error.
    char ckpts[2 * MLM_PATH_MAX], newest[256];
    snprintf(ckpts, sizeof ckpts, "%s/checkpoints", cfg->train.out_dir);
    snprintf(dir, dir_len, "%s/latest", ckpts);
    newest_step_dir(ckpts, newest, sizeof newest);
    char hint[3 * MLM_PATH_MAX] = "";
    if (newest[0])
        snprintf(hint, sizeof hint, "; the newest checkpoint there is %s: continue from it with --resume %s/%s",
                 newest, ckpts, newest);
    if (lstat(dir, &st) != 0) {
        if (!newest[0]) {
            dir[0] = 0;   // nothing to resume: a fresh start
            return 0;
        }
        return mlm_fail(err, len, "--resume auto: %s is missing although checkpoints exist%s", dir, hint);
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        char target[MLM_PATH_MAX] = "?";
        ssize_t t = readlink(dir, target, sizeof target - 1);
        if (t >= 0) target[t] = 0;
        return mlm_fail(err, len, "--resume auto: %s (-> %s) does not lead to a checkpoint directory (%s)%s", dir,
                        target, errno ? strerror(errno) : "not a directory", hint);
    }
    // latest must be one of this run's checkpoints, not another run's
    char *real_dir = realpath(dir, NULL), *real_ckpts = realpath(ckpts, NULL);
    int inside = 0;
    if (real_dir && real_ckpts) {
        size_t k = strlen(real_ckpts);
        inside = !strncmp(real_dir, real_ckpts, k) && real_dir[k] == '/' && !strchr(real_dir + k + 1, '/');
    }
    int rc = inside ? 0
                    : mlm_fail(err, len, "--resume auto: %s leads to %s, outside this run's %s: name it with "
                               "--resume DIR if that is meant", dir, real_dir ? real_dir : "?", ckpts);
    free(real_dir);
    free(real_ckpts);
    return rc;
}

/* The checkpoint's model shape must be cfg's: compare config.json field by field. */
static int check_shape(const char *dir, const mlm_model_config *want, char *err, size_t len) {
    mlm_model_config got = *want;
    if (mlm_hf_read_config(dir, &got, err, len) != 0) return -1;
    if (got.architecture != want->architecture)
        return mlm_fail(err, len, "%s: the checkpoint is a %s model but the config says model.architecture = %s; "
                        "resume needs the same model", dir, mlm_arch_name(got.architecture),
                        mlm_arch_name(want->architecture));
    for (size_t i = 0; i < N_HF_SHAPE; i++) {
        if (HF_SHAPE[i].is_float) continue;
        int a = *(const int *)((const char *)&got + HF_SHAPE[i].offset);
        int b = *(const int *)((const char *)want + HF_SHAPE[i].offset);
        if (a != b)
            return mlm_fail(err, len, "%s: the checkpoint has %s = %d but the config says %d; resume needs the same model",
                            dir, HF_SHAPE[i].hf, a, b);
    }
    return 0;
}

static int check_state(const char *dir, const mlm_config *cfg, uint64_t vocab_hash, int *step, char *err,
                       size_t len) {
    cJSON *j = read_json(dir, "trainer_state.json", err, len);
    if (!j) return -1;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format"),
                *st = cJSON_GetObjectItemCaseSensitive(j, "step"),
                *vh = cJSON_GetObjectItemCaseSensitive(j, "vocab_hash"),
                *ws = cJSON_GetObjectItemCaseSensitive(j, "world_size"),
                *bt = cJSON_GetObjectItemCaseSensitive(j, "batch");
    int rc = 0;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, TRAINER_FORMAT) != 0 || !cJSON_IsNumber(st) ||
        st->valuedouble < 0 || !cJSON_IsString(vh))
        rc = mlm_fail(err, len, "%s/trainer_state.json: not an %s trainer state", dir, TRAINER_FORMAT);
    else if (!cJSON_IsNumber(ws) || ws->valueint != mlm_dist_world())
        rc = mlm_fail(err, len,
                      "%s: written by a job of %d rank(s) but this job has %d; resume needs the same world size: "
                      "run with mpirun -np %d",
                      dir, cJSON_IsNumber(ws) ? ws->valueint : -1, mlm_dist_world(),
                      cJSON_IsNumber(ws) ? ws->valueint : 1);
    // the data order, the step's sequences and the schedule's meaning depend on it
    else if (cJSON_IsNumber(bt) && bt->valueint != cfg->train.batch)
        rc = mlm_fail(err, len, "%s: trained with train.batch = %d but the config says %d; resume needs the same batch "
                      "(start a new run with --set train.out_dir=... and model.init_from=%s to change it)", dir,
                      bt->valueint, cfg->train.batch, dir);
    if (rc == 0 && vocab_hash) {
        char hex[32];
        snprintf(hex, sizeof hex, "%016" PRIx64, vocab_hash);
        if (strcmp(hex, vh->valuestring) != 0)
            rc = mlm_fail(err, len, "%s: trained with another vocabulary (hash %s) than data.vocab %s (hash %s)", dir,
                          vh->valuestring, cfg->data.vocab, hex);
    }
    if (rc == 0) *step = st->valueint;
    cJSON_Delete(j);
    return rc;
}

static int read_moments(const char *dir, mlm_model *m, float *host, char *err, size_t len) {
    char path[PATHBUF];
    path_join(path, sizeof path, dir, "optimizer.safetensors");
    mlm_st_file f;
    if (mlm_st_open(&f, path, err, len) != 0) return -1;
    size_t n = m->lay.num_params;
    int rc = mlm_st_read_f32(&f, "adam_m", host, n, err, len);
    if (rc == 0) m->be->upload(m->be, m->m, host, n * sizeof(float));
    if (rc == 0) rc = mlm_st_read_f32(&f, "adam_v", host, n, err, len);
    if (rc == 0) m->be->upload(m->be, m->v, host, n * sizeof(float));
    if (rc != 0 && !strstr(err, path)) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", err);
        mlm_fail(err, len, "%s: %s", path, inner);
    }
    mlm_st_close(&f);
    return rc;
}

int mlm_checkpoint_resume(mlm_model *m, const mlm_config *cfg, uint64_t vocab_hash, const char *dir, int *step,
                          char *err, size_t len) {
    if (check_shape(dir, &cfg->model, err, len) != 0 || check_state(dir, cfg, vocab_hash, step, err, len) != 0)
        return -1;
    float *host = mlm_xmalloc(m->lay.num_params * sizeof(float), "checkpoint weights");
    int head_missing = 0;
    int rc = read_hf_weights(dir, &m->lay, host, &head_missing, err, len);
    if (rc == 0 && head_missing) rc = mlm_fail(err, len, "%s/model.safetensors: the MLM head is missing", dir);
    if (rc == 0) mlm_model_set_params(m, host);
    if (rc == 0) rc = read_moments(dir, m, host, err, len);
    free(host);
    return rc;
}
