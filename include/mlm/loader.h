/*
 * The training data loader. Global sample i (counting sequences over the whole
 * run) is sequence perm_e(i mod total) of epoch e = i / total, where perm_e is a
 * pseudo-random permutation of the shards' sequences keyed by (seed, e): a Feistel
 * network with cycle walking, so no permutation array is stored. Step t (1-based)
 * trains global samples [(t-1)*batch, t*batch); rank r of W reads the slice
 * [r*batch/W, (r+1)*batch/W) of it, split into micro-batches. The sequence index
 * that keys masking and dropout is the position in the global batch, so a step is
 * the same whatever the world size and micro-batching. Resuming at step t needs
 * nothing but t. A background thread prepares (reads and masks) the next steps.
 * Micro-batches are built here for evaluation too (eval.h). Masking is token by
 * token, or with data.whole_word_mask word by word, the word starts read from a
 * table made from the vocabulary at start-up (mlm_word_starts): shards hold ids only.
 */
#ifndef MLM_LOADER_H
#define MLM_LOADER_H

#include <pthread.h>
#include <stdint.h>

#include "mlm/config.h"
#include "mlm/data.h"
#include "mlm/model.h"
#include "mlm/tokenizer.h"

/* Host-side micro-batch builder: reads sequences, masks them, fills an mlm_batch. */
typedef struct {
    int B, S, max_M;
    int32_t *ids, *lengths, *rows, *labels;   // (B*S) (B) (max_M) (max_M)
    mlm_batch batch;
} mlm_microbatch;

void mlm_microbatch_init(mlm_microbatch *mb, int B, int S, int max_M);
void mlm_microbatch_free(mlm_microbatch *mb);
/* Fills mb with the B sequences seq_idx[0..B) of sh, masked with (seed, step) and
 * global-batch positions seq_base + b: token by token, or with dc->whole_word_mask
 * word by word (word_start: mlm_word_starts; may be NULL otherwise). Dies naming the
 * shard on a bad token id. Masked tokens past mb->max_M (the static bound) are
 * dropped with a warning, their inputs restored: neither masked nor scored. */
void mlm_microbatch_fill(mlm_microbatch *mb, const mlm_shards *sh, const uint64_t *seq_idx,
                         const mlm_data_config *dc, const mlm_special_ids *sp, const uint8_t *word_start,
                         uint64_t seed, uint32_t step, uint32_t seq_base);

/* The word-start table of whole-word masking: mlm_tokenizer_size(t) bytes, 1 where
 * the id can begin a word (mlm_tokenizer_word_start). Free with free(). */
uint8_t *mlm_word_starts(const mlm_tokenizer *t);

/* perm(x) for x < n: a bijection of [0, n) keyed by (seed, epoch). */
uint64_t mlm_shuffle_index(uint64_t x, uint64_t n, uint64_t seed, uint32_t epoch);

#define MLM_LOADER_DEPTH 2   // steps prepared ahead

typedef struct {
    int step;                    // the step these micro-batches belong to
    long masked_local;           // masked tokens over this rank's micro-batches
    mlm_microbatch *micro;       // nmicro micro-batches
} mlm_step_data;

typedef struct {
    const mlm_shards *sh;
    const mlm_config *cfg;
    mlm_special_ids sp;
    const uint8_t *word_start;   // whole-word masking's table (the caller's); NULL without it
    int rank, world, nmicro;     // nmicro = batch / world / micro_batch
    int next_step;               // next step the thread prepares
    int last_step;               // stop after this step
    mlm_step_data slots[MLM_LOADER_DEPTH];
    int head, count;             // ring of prepared steps
    int stop;
    int data_log;                // MLM_DEBUG_DATA_LOG file, or -1
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} mlm_loader;

/* Starts preparing steps first_step.. last_step for rank of world in the background.
 * cfg->train.batch must be a multiple of world * micro_batch. With
 * MLM_DEBUG_DATA_LOG=path in the environment, each step handed out is logged there
 * (`step S rank R pos P sample I` per sequence: position in the global batch,
 * global sample), for the tests of the data order. */
void mlm_loader_start(mlm_loader *ld, const mlm_shards *sh, const mlm_config *cfg, const mlm_special_ids *sp,
                      const uint8_t *word_start, int rank, int world, int first_step, int last_step, int max_M);
/* Waits for the next step's data (in step order); valid until mlm_loader_release. */
mlm_step_data *mlm_loader_next(mlm_loader *ld);
void mlm_loader_release(mlm_loader *ld);
void mlm_loader_stop(mlm_loader *ld);

/* The global sample indices of rank's micro-batch k of step (B = micro_batch
 * entries) and the global-batch position of its first sequence. */
uint32_t mlm_loader_indices(const mlm_loader *ld, int step, int k, uint64_t *seq_idx);

#endif
