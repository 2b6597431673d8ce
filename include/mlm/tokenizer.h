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
 *
 * The same mlm_tokenizer can instead be RoBERTa's byte-level BPE (vocab.json +
 * merges.txt, opened by mlm_tokenizer_open; src/host/text/bpe.c): the ids of HF
 * RobertaTokenizerFast (add_prefix_space false, <mask> lstrip as roberta-base's),
 * with invalid UTF-8 read as Python's errors="replace" reads it. mlm_tokenize,
 * mlm_encode (<s> ... </s>), mlm_tokenizer_special and mlm_tokenizer_free work on
 * either kind.
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

/* ---- Either kind: WordPiece (above) or byte-level BPE (RoBERTa's, src/host/text/bpe.c) ---- */

typedef enum { MLM_TOK_WORDPIECE = 0, MLM_TOK_BPE = 1 } mlm_tok_kind;

/* Opens the tokenizer a vocabulary path names: a vocab.txt (WordPiece), a
 * vocab.json with merges.txt in the same directory (byte-level BPE, RoBERTa's), or
 * a directory holding one of them (vocab.json first). cased applies to WordPiece
 * only. NULL with err naming the file and the line or byte offset of what is wrong. */
mlm_tokenizer *mlm_tokenizer_open(const char *path, int cased, char *err, size_t err_len);
/* The files mlm_tokenizer_open reads for path, without reading them: *vocab (vocab.txt
 * or vocab.json) and, for byte-level BPE, *merges (else NULL); both malloc'd. 0, or
 * -1 with err as mlm_tokenizer_open's for a path that names no vocabulary. */
int mlm_vocab_paths(const char *path, char **vocab, char **merges, char *err, size_t err_len);
mlm_tok_kind mlm_tokenizer_kind(const mlm_tokenizer *t);
/* Tokens in the vocabulary. */
int mlm_tokenizer_size(const mlm_tokenizer *t);
/* Vocabulary form of id ("##ing", "\u0120the" as UTF-8); NULL if out of range. */
const char *mlm_tokenizer_token(const mlm_tokenizer *t, int id);
/* Id of a token in its vocabulary form, or -1. */
int mlm_tokenizer_find(const mlm_tokenizer *t, const char *token);
/* 1 when id can begin a word: WordPiece: not a "##" piece; BPE: a token that
 * starts with the byte-level space marker U+0120; special tokens: 1. (Whole-word
 * masking also treats the token after a special token as a word start.) */
int mlm_tokenizer_word_start(const mlm_tokenizer *t, int id);
/* Readable text of ids, NUL-terminated into out (at most cap bytes, cap > 0):
 * WordPiece joins "##" pieces, BPE maps the byte-level characters back to bytes.
 * Returns the length it wanted (without the NUL). */
size_t mlm_tokenizer_decode(const mlm_tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap);
/* The vocabulary files it was read from (1 for WordPiece, 2 for BPE: vocab.json
 * then merges.txt), for hashing and for copying into checkpoints. Returns how many. */
int mlm_tokenizer_files(const mlm_tokenizer *t, const char *paths[2]);

/* Byte-level BPE pre-tokenization alone (for the BPE vocab trainer): calls
 * word(ctx, w, n) for every pre-token of text (the GPT-2/RoBERTa split pattern,
 * add_prefix_space false), as raw UTF-8 bytes before the byte-to-unicode mapping.
 * Invalid UTF-8 is read as Python's errors="replace" does (one U+FFFD per maximal
 * ill-formed subsequence), so w is always valid UTF-8. Special tokens are not
 * recognised (HF's trainer does not either). */
void mlm_bpe_pretokenize(const char *text, size_t len, void (*word)(void *ctx, const char *w, size_t n),
                         void *ctx);
/* The byte-to-unicode map of GPT-2 (byte b -> code point); and its inverse (-1 if
 * cp is not in it). */
uint32_t mlm_bpe_byte_char(uint8_t b);
int mlm_bpe_char_byte(uint32_t cp);

#endif
