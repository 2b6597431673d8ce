/*
 * Byte-level BPE (src/host/text/bpe.c), internal to the tokenizer: tokenizer.c
 * wraps it in an mlm_tokenizer of kind MLM_TOK_BPE (include/mlm/tokenizer.h).
 */
#ifndef MLM_BPE_H
#define MLM_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "mlm/data.h"

typedef struct mlm_bpe mlm_bpe;

/* Reads vocab.json and merges.txt. NULL with `file: byte N: ...` or `file:line: ...`
 * in err for a malformed file, a merge naming an unknown token or making one not in
 * the vocabulary, or a missing <s> </s> <pad> <unk> <mask>. */
mlm_bpe *mlm_bpe_load(const char *vocab_json, const char *merges_txt, char *err, size_t err_len);
void mlm_bpe_free(mlm_bpe *b);

/* As mlm_tokenize: appends the ids of text (special tokens in it recognised, none
 * added). Thread-safe. */
size_t mlm_bpe_tokenize(const mlm_bpe *b, const char *text, size_t len, int32_t **ids, size_t *n,
                        size_t *cap);
mlm_special_ids mlm_bpe_special(const mlm_bpe *b);
int mlm_bpe_size(const mlm_bpe *b);
const char *mlm_bpe_token(const mlm_bpe *b, int id);
int mlm_bpe_find(const mlm_bpe *b, const char *token);
int mlm_bpe_word_start(const mlm_bpe *b, int id);
size_t mlm_bpe_decode(const mlm_bpe *b, const int32_t *ids, size_t n, char *out, size_t cap);

/* Appends id to *ids (n used, cap allocated; grown with realloc): both tokenizers'
 * output (tokenizer.c). */
void mlm_ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id);

#endif
