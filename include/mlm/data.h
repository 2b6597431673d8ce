/*
 * Token shards (docs/FORMATS.md) and masking.
 *
 * A shard is a 64-byte little-endian header followed by count fixed-length
 * sequences of seq_len token ids (uint16 or uint32). Padding only trails, so a
 * sequence's length is the index after its last id that is not the pad id. Version 1
 * pads with id 0 ([PAD] of a BERT vocabulary); version 2 records the pad id in the
 * header (RoBERTa's <pad> is 1). Writers use version 1 when the pad id is 0, so
 * BERT data stays readable by older readers; both versions are read.
 */
#ifndef MLM_DATA_H
#define MLM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mlm/config.h"

#define MLM_SHARD_MAGIC "MLMSHARD"
#define MLM_SHARD_VERSION 2u     // the newest version read and written
#define MLM_SHARD_HEADER_BYTES 64

typedef struct {
    char magic[8];        // "MLMSHARD"
    uint32_t version;     // 1 or 2 (MLM_SHARD_VERSION)
    uint32_t dtype_bytes; // 2 (uint16 ids) or 4 (uint32 ids)
    uint32_t seq_len;
    uint32_t pad_id;      // version 2: the padding id (not 0); version 1: 0 (reserved), padding is id 0
    uint64_t count;       // sequences
    uint64_t vocab_hash;  // mlm_vocab_hash of the vocabulary files used; 0 = unknown
    uint64_t checksum;    // FNV-1a 64 of the payload bytes
    uint8_t pad[16];      // 0
} mlm_shard_header;

/* FNV-1a 64 over bytes, continuing from h (start with MLM_FNV_OFFSET). */
#define MLM_FNV_OFFSET 0xcbf29ce484222325ull
uint64_t mlm_fnv1a(uint64_t h, const void *p, size_t n);
/* Hash of the bytes of a vocabulary's files, in order (vocab.txt; or vocab.json then
 * merges.txt), as FNV-1a over their concatenation: one file hashes as it always
 * did. 0 and an error message in err when one is unreadable. */
uint64_t mlm_vocab_hash_files(const char *const *paths, int n, char *err, size_t err_len);
/* Hash of the vocabulary a data.vocab path names, found as mlm_tokenizer_open finds
 * it: a vocab.txt; a *.json file with merges.txt beside it; a directory holding
 * vocab.json + merges.txt, else vocab.txt. */
uint64_t mlm_vocab_hash(const char *path, char *err, size_t err_len);

/* Writes count sequences of seq_len ids (int32, each < 2^16 when dtype_bytes == 2)
 * as a shard at path: to a temporary file, fsynced, then renamed into place.
 * Padding is id 0 (a version 1 shard). Returns 0 or -1 with err. */
int mlm_shard_write(const char *path, const int32_t *ids, uint64_t count, int seq_len, int dtype_bytes,
                    uint64_t vocab_hash, char *err, size_t err_len);
/* As mlm_shard_write, padding with pad_id: version 1 when it is 0, else version 2. */
int mlm_shard_write_padded(const char *path, const int32_t *ids, uint64_t count, int seq_len, int dtype_bytes,
                           uint64_t vocab_hash, int pad_id, char *err, size_t err_len);

/* A set of shards, read by global sequence index (the loader, loader.h, orders them). */
typedef struct {
    int nfiles;
    char **paths;
    int seq_len, dtype_bytes;
    int pad_id;           // the padding id (0 for version 1 files)
    uint64_t vocab_hash;
    uint64_t total;       // sequences in all files
    uint64_t *first;      // first[i] = global index of file i's first sequence
    const uint8_t **maps; // mmapped files
    size_t *map_bytes;
    uint64_t pos;         // next sequence to read (wraps around)
    uint32_t max_id;      // the largest id in all files, first found in file max_file
    int max_file;         // at flat position max_at (sequence * seq_len + position)
    uint64_t max_at;
} mlm_shards;

/* Opens a shard file or every *.shard file of a directory (sorted by name), checks
 * each header and checksum, and that all agree on seq_len, dtype, pad id and vocab hash.
 * expect_vocab_hash != 0 must match. Returns 0, or -1 with `path: what is wrong`. */
int mlm_shards_open(mlm_shards *sh, const char *path, int expect_seq_len, uint64_t expect_vocab_hash,
                    char *err, size_t err_len);
void mlm_shards_close(mlm_shards *sh);
/* 0, or -1 with `file: sequence n, position s: token id X is outside the vocabulary
 * (size V)` when an id of the shards (scanned at open) is not below vocab_size: a
 * check before any work, where mlm_shards_get would find it steps into a run. */
int mlm_shards_check_ids(const mlm_shards *sh, int vocab_size, char *err, size_t err_len);
/* Copies sequence idx (mod total) into ids (seq_len) and returns its length (the
 * index after its last id other than pad_id), or -1 with `file: sequence n,
 * position s: ...` when an id is not below vocab_size. */
int mlm_shards_get(const mlm_shards *sh, uint64_t idx, int32_t *ids, int vocab_size, char *err,
                   size_t err_len);

/* Special ids of a vocabulary, and its size. BERT: [PAD] [UNK] [CLS] [SEP] [MASK];
 * RoBERTa (byte-level BPE): <pad> <unk> <s> </s> <mask> in the same fields. */
typedef struct {
    int vocab_size;
    int pad, unk, cls, sep, mask;
} mlm_special_ids;

/* The standard BERT vocab order: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103
 * when vocab_size > 103, else 0..4. */
mlm_special_ids mlm_special_ids_default(int vocab_size);
/* The special ids of an architecture's standard vocabulary when none is given:
 * BERT's above; RoBERTa's <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=vocab_size-1
 * (roberta-base: 50264 of 50265). */
mlm_special_ids mlm_special_ids_arch(mlm_arch arch, int vocab_size);

/* A vocab.txt: one token per line, id = line number. */
typedef struct {
    int count;
    char **tokens;
    char *text;           // the file's bytes, tokens point into it
} mlm_vocab;

/* Loads path; fails with `path:line: ...` on an empty file, an empty token, or a
 * NUL byte. A token listed twice keeps both lines (the tokenizer, like HF, maps it
 * to the later id). Returns 0 or -1 with err. */
int mlm_vocab_load(mlm_vocab *v, const char *path, char *err, size_t err_len);
void mlm_vocab_free(mlm_vocab *v);
/* Id of token, or -1. */
int mlm_vocab_find(const mlm_vocab *v, const char *token);
/* Special ids from a vocabulary: all five of [PAD] [UNK] [CLS] [SEP] [MASK] must be
 * present and the vocabulary must fit model_vocab_size rows. */
int mlm_special_ids_from_vocab(const mlm_vocab *v, int model_vocab_size, mlm_special_ids *out,
                               const char *path, char *err, size_t err_len);

/* Masks one sequence in place. Each non-special, non-padding token is selected with
 * probability mask_prob; a selected token becomes [MASK] with mask_token_prob, a
 * random non-special token with random_token_prob, else stays. Randomness from
 * philox(seed, step, seq = global index, MLM_SITE_MASKING). Appends the flat
 * positions (offset + s) and original ids of the selected tokens to rows/labels
 * and returns how many. */
int mlm_mask_sequence(int32_t *ids, int len, const mlm_data_config *dc, const mlm_special_ids *sp,
                      uint64_t seed, uint32_t step, uint32_t seq, int offset, int32_t *rows,
                      int32_t *labels);

/* Whole-word masking (data.whole_word_mask = 1), as HF's whole-word collator chooses
 * words: a word is a token that can begin one (word_start[id], from the vocabulary:
 * mlm_word_starts in loader.h), or any token right after a special token or at the
 * sequence start, followed by the continuation pieces after it. Each word is chosen
 * with probability mask_prob, so every token is masked with probability mask_prob;
 * [PAD] [CLS] [SEP] [MASK] are never chosen and end a word ([UNK] is a word of its
 * own). A chosen word takes ONE 80/10/10 decision for all its pieces; a random
 * replacement draws each piece's token as mlm_mask_sequence does. Randomness: the
 * word's first position s keys Philox block s of MLM_SITE_MASKING (selection and
 * action), each piece its own block (the random token), so a sequence without
 * continuation pieces masks exactly as mlm_mask_sequence. A word whose pieces would
 * take the count past cap is left unmasked and its pieces added to *dropped (the
 * static bound below). Returns the tokens selected, rows and labels as
 * mlm_mask_sequence.
 * HF transformers 5's collator (whole_word_mask=True) finds words from character
 * offsets instead: it agrees with this rule for BPE on plain ASCII text, but joins
 * punctuation to the word before it for WordPiece ("hello," is one word there, two
 * here, as in BERT's own whole-word masking), starts a word at every byte token
 * inside a multi-byte character, and always replaces with [MASK] (it forces
 * mask_replace_prob = 1). tests/fixtures/wwm_words.* record both rules. */
int mlm_mask_words(int32_t *ids, int len, const mlm_data_config *dc, const mlm_special_ids *sp,
                   const uint8_t *word_start, uint64_t seed, uint32_t step, uint32_t seq, int offset, int cap,
                   int32_t *rows, int32_t *labels, int *dropped);

/* Upper bound on masked tokens among n maskable ones: mean + 10 standard deviations,
 * so a micro-batch exceeds it with probability below 1e-20 (the excess is then
 * dropped, with a warning). Static, so the arena and the CUDA graphs are fixed.
 * Whole-word masking moves the count by whole words, so its variance is larger,
 * by E[L^2]/E[L] for words of L pieces (near 1 for ordinary English WordPiece text;
 * text of long unspaced strings, URLs or code, raises it and with it the chance of
 * reaching the bound). The bound stays the same; at it a whole word is dropped
 * (neither masked nor scored, with a warning), never part of one. */
int mlm_max_masked(int n, float mask_prob);

#endif
