/*
 * Text to token shards (`mlmgpu prepare`). Input files (directories read
 * recursively, in name order) are tokenized in parallel and packed, in order, into
 * fixed-length sequences (RoBERTa FULL-SENTENCES): [CLS], then the tokens of
 * consecutive documents with [SEP] between documents, then [SEP]; only the last
 * sequence of a split is padded. A document is a block of lines between blank
 * lines (BERT's pretraining-data format), or with file_documents set a whole
 * file. Documents go to the validation split by a hash of (file name, block
 * index) below val_fraction, so the split is stable and by document. Output:
 *   OUT/train/train-NNNNN.shard, OUT/val/val-NNNNN.shard, OUT/vocab.txt,
 *   OUT/manifest.json (counts, vocab hash, inputs)
 * Same inputs, same options: byte-identical output.
 */
#ifndef MLM_PREPARE_H
#define MLM_PREPARE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *const *inputs;
    int ninputs;
    const char *vocab;        // vocab.txt
    int cased;                // 0: lowercase + strip accents
    int seq_len;
    const char *out;          // output directory: must not hold shards yet unless force
    double val_fraction;      // [0, 1)
    int threads;
    int file_documents;       // 0: blank-line-separated blocks are documents; 1: each file is one
    uint64_t shard_sequences; // sequences per shard file
    int force;                // replace an existing output
    int progress;             // progress line on stderr
} mlm_prepare_opts;

typedef struct {
    uint64_t docs, tokens, sequences;
    int shards;
} mlm_split_stats;

typedef struct {
    mlm_split_stats train, val;
    uint64_t bytes;           // input bytes
    int files;
    double seconds;
} mlm_prepare_stats;

/* Returns 0, or -1 with err naming the input, option or output at fault (nothing
 * half-written is left under a final name). */
int mlm_prepare(const mlm_prepare_opts *o, mlm_prepare_stats *st, char *err, size_t err_len);

#endif
