/*
 * BERT WordPiece tokenizer with the ids of HF BertTokenizerFast (the Rust
 * `tokenizers` pipeline): BertNormalizer (clean_text, handle_chinese_chars,
 * lowercase + strip_accents for uncased), BertPreTokenizer (split on whitespace
 * and punctuation), WordPiece with "##" continuations, at most 100 characters per
 * word, [UNK] for words it cannot split. Unicode data from utf8proc. Invalid
 * UTF-8 bytes are read as U+FFFD, which clean_text then drops (as HF does after
 * Python's decode(errors="replace")).
 */
#ifndef MLM_TOKENIZER_H
#define MLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "mlm/data.h"

typedef struct mlm_tokenizer mlm_tokenizer;

/* Builds a tokenizer over a loaded vocabulary (which must outlive it). cased = 0
 * lowercases and strips accents (bert-base-uncased), 1 keeps text as is. */
mlm_tokenizer *mlm_tokenizer_new(const mlm_vocab *vocab, int cased, char *err, size_t err_len);
void mlm_tokenizer_free(mlm_tokenizer *t);

/* Tokenizes len bytes of UTF-8 text (no special tokens added) and appends the ids
 * to *ids (grown with realloc; *n ids, *cap capacity). Thread-safe for concurrent
 * calls on one tokenizer. Returns the number of ids appended. */
size_t mlm_tokenize(const mlm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap);

/* Special ids of the tokenizer's vocabulary. */
mlm_special_ids mlm_tokenizer_special(const mlm_tokenizer *t);

/* Normalisation and pre-tokenisation alone (for the vocab trainer): calls
 * word(ctx, utf8, bytes) for every pre-token of text, after normalisation. */
void mlm_pretokenize(const char *text, size_t len, int cased, void (*word)(void *ctx, const char *w, size_t n),
                     void *ctx);

#endif
