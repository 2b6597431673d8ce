/*
 * BERT WordPiece tokenizer with the ids of HF BertTokenizerFast (the Rust
 * `tokenizers` pipeline): BertNormalizer (clean_text, handle_chinese_chars,
 * lowercase + strip_accents for uncased), BertPreTokenizer (split on whitespace
 * and punctuation), WordPiece with "##" continuations, at most 100 characters per
 * word, [UNK] for words it cannot split. Special tokens written in the text
 * ("[MASK]", case-sensitive) become their ids, as HF's added tokens do. Unicode
 * data from utf8proc, corrected to HF's older and newer tables (see
 * src/host/text/tokenizer_unicode.h); tests/test_tokenizer.c checks every code point.
 *
 * Invalid UTF-8: every byte that does not begin a well-formed sequence (RFC 3629:
 * no overlongs, surrogates or code points above U+10FFFF; a sequence cut short is
 * ill-formed) is read as one U+FFFD, and decoding goes on at the next byte. Python's
 * bytes.decode("utf-8", errors="replace") makes one U+FFFD of a maximal ill-formed
 * subsequence instead ("\xe2\x82" gives two here, one there), but both decode the
 * same characters around it and clean_text drops every U+FFFD, so the ids equal
 * HF's on the Python-decoded text, byte for byte.
 *
 * Known limit: more than 64 consecutive combining marks that survive uncased
 * normalisation (Mn ones are dropped, so only spacing marks of nonzero class) are
 * reordered in groups of 64, where NFD would sort the whole run.
 */
#ifndef MLM_TOKENIZER_H
#define MLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "mlm/data.h"

typedef struct mlm_tokenizer mlm_tokenizer;

/* Builds a tokenizer over a loaded vocabulary (which must outlive it). cased = 0
 * lowercases and strips accents (bert-base-uncased), 1 keeps text as is. NULL with
 * err when the vocabulary lacks one of [PAD] (at id 0) [UNK] [CLS] [SEP] [MASK]. */
mlm_tokenizer *mlm_tokenizer_new(const mlm_vocab *vocab, int cased, char *err, size_t err_len);
void mlm_tokenizer_free(mlm_tokenizer *t);

/* Tokenizes len bytes of UTF-8 text (no special tokens added) and appends the ids
 * to *ids (grown with realloc; *n ids, *cap capacity). Thread-safe for concurrent
 * calls on one tokenizer; allocates nothing but the growth of *ids. Returns the
 * number of ids appended. */
size_t mlm_tokenize(const mlm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap);

/* As mlm_tokenize, with [CLS] before and [SEP] after (HF's encode with
 * add_special_tokens=True for one sequence). */
size_t mlm_encode(const mlm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap);

/* Special ids of the tokenizer's vocabulary. */
mlm_special_ids mlm_tokenizer_special(const mlm_tokenizer *t);

/* Normalisation and pre-tokenisation alone (for the vocab trainer): calls
 * word(ctx, utf8, bytes) for every pre-token of text, after normalisation, whatever
 * its length. Special tokens are not recognised (HF's trainer does not either). */
void mlm_pretokenize(const char *text, size_t len, int cased, void (*word)(void *ctx, const char *w, size_t n),
                     void *ctx);

#endif
