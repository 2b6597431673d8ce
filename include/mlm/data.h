/*
 * Token shards (docs/FORMATS.md) and masking.
 *
 * A shard is a 64-byte little-endian header followed by count fixed-length
 * sequences of seq_len token ids (uint16 or uint32). Padding ([PAD] = id 0) only
 * trails, so a sequence's length is the index after its last non-zero id.
 */
#ifndef MLM_DATA_H
#define MLM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mlm/config.h"

#define MLM_SHARD_MAGIC "MLMSHARD"
#define MLM_SHARD_VERSION 1u
#define MLM_SHARD_HEADER_BYTES 64

typedef struct {
    char magic[8];        // "MLMSHARD"
    uint32_t version;     // MLM_SHARD_VERSION
    uint32_t dtype_bytes; // 2 (uint16 ids) or 4 (uint32 ids)
    uint32_t seq_len;
    uint32_t reserved;    // 0
    uint64_t count;       // sequences
    uint64_t vocab_hash;  // mlm_vocab_hash of the vocab.txt used; 0 = unknown
    uint64_t checksum;    // FNV-1a 64 of the payload bytes
    uint8_t pad[16];      // 0
} mlm_shard_header;

/* FNV-1a 64 over bytes, continuing from h (start with MLM_FNV_OFFSET). */
#define MLM_FNV_OFFSET 0xcbf29ce484222325ull
uint64_t mlm_fnv1a(uint64_t h, const void *p, size_t n);
/* Hash of a vocab file's bytes; 0 and an error message in err when unreadable. */
uint64_t mlm_vocab_hash(const char *path, char *err, size_t err_len);

/* Writes count sequences of seq_len ids (int32, each < 2^16 when dtype_bytes == 2)
 * as a shard at path: to a temporary file, fsynced, then renamed into place.
 * Returns 0 or -1 with err. */
int mlm_shard_write(const char *path, const int32_t *ids, uint64_t count, int seq_len, int dtype_bytes,
                    uint64_t vocab_hash, char *err, size_t err_len);

/* A set of shards, read by global sequence index (the loader, loader.h, orders them). */
typedef struct {
    int nfiles;
    char **paths;
    int seq_len, dtype_bytes;
    uint64_t vocab_hash;
    uint64_t total;       // sequences in all files
    uint64_t *first;      // first[i] = global index of file i's first sequence
    const uint8_t **maps; // mmapped files
    size_t *map_bytes;
    uint64_t pos;         // next sequence to read (wraps around)
} mlm_shards;

/* Opens a shard file or every *.shard file of a directory (sorted by name), checks
 * each header and checksum, and that all agree on seq_len, dtype and vocab hash.
 * expect_vocab_hash != 0 must match. Returns 0, or -1 with `path: what is wrong`. */
int mlm_shards_open(mlm_shards *sh, const char *path, int expect_seq_len, uint64_t expect_vocab_hash,
                    char *err, size_t err_len);
void mlm_shards_close(mlm_shards *sh);
/* Copies sequence idx (mod total) into ids (seq_len) and returns its length, or -1
 * with `file: sequence n, position s: ...` when an id is not below vocab_size. */
int mlm_shards_get(const mlm_shards *sh, uint64_t idx, int32_t *ids, int vocab_size, char *err,
                   size_t err_len);

/* Special ids of a BERT vocabulary, and its size. */
typedef struct {
    int vocab_size;
    int pad, unk, cls, sep, mask;
} mlm_special_ids;

/* The standard BERT vocab order: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103
 * when vocab_size > 103, else 0..4. */
mlm_special_ids mlm_special_ids_default(int vocab_size);

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

/* Upper bound on masked tokens among n maskable ones: mean + 10 standard deviations,
 * so a micro-batch exceeds it with probability below 1e-20 (the excess is then
 * dropped, with a warning). Static, so the arena and the CUDA graphs are fixed. */
int mlm_max_masked(int n, float mask_prob);

#endif
