/*
 * Run configuration: an INI file (read by config.c, no line limit) plus `--set section.key=value`
 * overrides. Section and key names are fixed; scripts rely on them. Every key has a
 * default (bert-tiny shapes), so a file only names what it changes.
 *
 * Errors (unknown section or key, bad number, impossible value) are reported as
 * `file:line: section.key: what is wrong` before any work, and loading fails.
 */
#ifndef MLM_CONFIG_H
#define MLM_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define MLM_PATH_MAX 1024

typedef enum { MLM_SCHED_LINEAR, MLM_SCHED_COSINE, MLM_SCHED_CONSTANT } mlm_schedule;

/* The model family: HF BertForMaskedLM, or RobertaForMaskedLM (positions counted from
 * padding_idx + 1, one token type, the roberta. / lm_head. names). */
typedef enum { MLM_ARCH_BERT = 0, MLM_ARCH_ROBERTA = 1 } mlm_arch;

/* How the position embeddings start: N(0, init_range) as HF does, or the sinusoids of
 * Vaswani et al. (2017) scaled to the same standard deviation (model.c). */
typedef enum { MLM_POSITION_INIT_NORMAL = 0, MLM_POSITION_INIT_SINUSOIDAL = 1 } mlm_position_init;

typedef struct {
    mlm_arch architecture;   // bert | roberta
    int vocab_size;          // V, rows of the word embedding (and decoder)
    int hidden_size;         // d
    int num_layers;          // L
    int num_heads;           // H, d % H == 0
    int intermediate_size;   // I, FFN width
    int max_position;        // P, rows of the position embedding
    int type_vocab_size;     // T, rows of the token-type embedding
    float layer_norm_eps;
    float hidden_dropout;
    float attention_dropout;
    float init_range;        // std of the N(0, init_range) init
    mlm_position_init position_init;   // normal | sinusoidal
    char init_from[MLM_PATH_MAX]; // HF BERT directory to start from; its config.json sets the shape
} mlm_model_config;

typedef struct {
    char train[MLM_PATH_MAX];  // shard file or directory of *.shard files
    char val[MLM_PATH_MAX];    // may be empty: no validation
    char vocab[MLM_PATH_MAX];  // vocab.txt; may be empty
    int seq_len;               // S, must equal the shards' seq_len
    int cased;                 // 0: the vocab is uncased (lowercase + strip accents)
    float mask_prob;
    float mask_token_prob;
    float random_token_prob;   // mask_token_prob + random_token_prob <= 1
    int whole_word_mask;       // 1: mask whole words (every piece of a chosen word); needs vocab
} mlm_data_config;

typedef struct {
    int micro_batch;           // sequences per forward/backward
    int batch;                 // sequences per optimizer step (multiple of micro_batch)
    int steps;
    uint64_t seed;
    int log_every;
    int eval_every;            // 0: never
    int eval_steps;            // validation micro-batches per evaluation
    int checkpoint_every;      // 0: only at the end
    int checkpoint_keep;
    int threads;               // CPU backend threads; 0 = all cores
    char out_dir[MLM_PATH_MAX];
} mlm_train_config;

typedef struct {
    float lr;
    int warmup_steps;
    mlm_schedule schedule;
    float min_lr;
    float weight_decay;
    float beta1, beta2, eps;
    float grad_clip;           // 0: no clipping
} mlm_optim_config;

typedef struct {
    int timeout_s;             // longest wait for the other ranks in a collective
} mlm_dist_config;

typedef struct {
    mlm_model_config model;
    mlm_data_config data;
    mlm_train_config train;
    mlm_optim_config optim;
    mlm_dist_config dist;
    char source[MLM_PATH_MAX]; // the file it came from ("" for defaults only)
} mlm_config;

/* Fills cfg with the defaults (bert-tiny, S128). */
void mlm_config_defaults(mlm_config *cfg);

/* Loads path (may be NULL: defaults only), then applies the `section.key=value`
 * overrides in order, then validates. On error writes one line
 * `file:line: section.key: what is wrong` (or `--set section.key=value: ...`) into
 * err and returns -1; returns 0 on success. */
int mlm_config_load(mlm_config *cfg, const char *path, const char *const *sets, int nsets,
                    char *err, size_t err_len);

/* Writes the resolved config as an INI file that mlm_config_load reads back to the
 * same values. */
void mlm_config_write(const mlm_config *cfg, FILE *f);

/* Name of a schedule ("linear", ...). */
const char *mlm_schedule_name(mlm_schedule s);
/* Name of an architecture ("bert", "roberta"). */
const char *mlm_arch_name(mlm_arch a);
/* Name of a position initialisation ("normal", "sinusoidal"). */
const char *mlm_position_init_name(mlm_position_init p);

#endif
