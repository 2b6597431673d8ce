/*
 * The training data loader (include/mlm/loader.h): micro-batches read from the
 * shards and masked, a keyed Feistel permutation per epoch, rank slices of every
 * global batch, and a background thread that reads and masks the next
 * MLM_LOADER_DEPTH steps while the current one trains. Its caller is the trainer
 * (trainer.c); evaluation (eval.c) builds micro-batches the same way.
 */
#include "mlm/loader.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlm/log.h"
#include "mlm/philox.h"

#define SHUFFLE_SITE 0x80000001u

/* ---------------------------------------------------------------- micro-batches */

void mlm_microbatch_init(mlm_microbatch *mb, int B, int S, int max_M) {
    memset(mb, 0, sizeof *mb);
    mb->B = B;
    mb->S = S;
    mb->max_M = max_M;
    mb->ids = mlm_xmalloc((size_t)B * S * sizeof(int32_t), "micro-batch ids");
    mb->lengths = mlm_xmalloc((size_t)B * sizeof(int32_t), "micro-batch lengths");
    // masking appends up to one sequence past max_M before truncation
    mb->rows = mlm_xmalloc(((size_t)max_M + S) * sizeof(int32_t), "micro-batch rows");
    mb->labels = mlm_xmalloc(((size_t)max_M + S) * sizeof(int32_t), "micro-batch labels");
}

void mlm_microbatch_free(mlm_microbatch *mb) {
    free(mb->ids);
    free(mb->lengths);
    free(mb->rows);
    free(mb->labels);
    memset(mb, 0, sizeof *mb);
}

uint8_t *mlm_word_starts(const mlm_tokenizer *t) {
    int n = mlm_tokenizer_size(t);
    uint8_t *table = mlm_xmalloc((size_t)n, "word-start table");
    for (int id = 0; id < n; id++) table[id] = mlm_tokenizer_word_start(t, id) != 0;
    return table;
}

void mlm_microbatch_fill(mlm_microbatch *mb, const mlm_shards *sh, const uint64_t *seq_idx,
                         const mlm_data_config *dc, const mlm_special_ids *sp, const uint8_t *word_start,
                         uint64_t seed, uint32_t step, uint32_t seq_base) {
    char err[512];
    int M = 0, S = mb->S, dropped = 0;
    if (dc->whole_word_mask && !word_start)
        mlm_die(MLM_EXIT_RUNTIME, "whole-word masking without a word-start table");
    for (int b = 0; b < mb->B; b++) {
        int32_t *ids = mb->ids + (size_t)b * S;
        int len = mlm_shards_get(sh, seq_idx[b], ids, sp->vocab_size, err, sizeof err);
        if (len < 0) mlm_die(MLM_EXIT_INPUT, "%s", err);
        mb->lengths[b] = len > 0 ? len : 1;   // an all-padding row still attends to one key
        uint32_t seq = seq_base + (uint32_t)b;
        if (dc->whole_word_mask) {
            M += mlm_mask_words(ids, len, dc, sp, word_start, seed, step, seq, b * S, mb->max_M - M, mb->rows + M,
                                mb->labels + M, &dropped);
            continue;
        }
        M += mlm_mask_sequence(ids, len, dc, sp, seed, step, seq, b * S, mb->rows + M, mb->labels + M);
        for (; M > mb->max_M; M--, dropped++)   // the excess: neither masked nor scored
            mb->ids[mb->rows[M - 1]] = mb->labels[M - 1];
    }
    if (dropped)
        mlm_log("warning: step %u: %d masked tokens in a micro-batch past the bound %d were dropped (left unmasked)",
                step, dropped, mb->max_M);
    mb->batch = (mlm_batch){mb->B, S, M, mb->ids, NULL, mb->lengths, mb->rows, mb->labels, seq_base, step};
}

/* ---------------------------------------------------------------- the loader */

/* Four Feistel rounds over 2*half bits; round keys from Philox. */
static uint64_t feistel(uint64_t x, int half, uint64_t seed, uint32_t epoch) {
    uint64_t mask = (1ull << half) - 1, left = x >> half, right = x & mask;
    for (uint32_t r = 0; r < 4; r++) {
        mlm_u32x4 f = mlm_philox((uint32_t)right, (uint32_t)(right >> 32), epoch, SHUFFLE_SITE + r, seed);
        uint64_t next = left ^ ((((uint64_t)f.v[1] << 32) | f.v[0]) & mask);
        left = right;
        right = next;
    }
    return (left << half) | right;
}

uint64_t mlm_shuffle_index(uint64_t x, uint64_t n, uint64_t seed, uint32_t epoch) {
    if (n <= 1) return 0;
    int bits = 64 - __builtin_clzll(n - 1);
    int half = (bits + 1) / 2;
    // cycle walking: the permutation of [0, 4^half) restricted to [0, n) stays a bijection
    do x = feistel(x, half, seed, epoch);
    while (x >= n);
    return x;
}

uint32_t mlm_loader_indices(const mlm_loader *ld, int step, int k, uint64_t *seq_idx) {
    const mlm_train_config *t = &ld->cfg->train;
    uint32_t pos = (uint32_t)(ld->rank * (t->batch / ld->world) + k * t->micro_batch);
    uint64_t total = ld->sh->total;
    for (int b = 0; b < t->micro_batch; b++) {
        uint64_t i = (uint64_t)(step - 1) * t->batch + pos + b;
        seq_idx[b] = mlm_shuffle_index(i % total, total, t->seed, (uint32_t)(i / total));
    }
    return pos;
}

/* Reads and masks all of this rank's micro-batches of step into slot. */
static void prepare(mlm_loader *ld, mlm_step_data *slot, int step, uint64_t *seq_idx) {
    const mlm_config *cfg = ld->cfg;
    slot->step = step;
    slot->masked_local = 0;
    for (int k = 0; k < ld->nmicro; k++) {
        uint32_t pos = mlm_loader_indices(ld, step, k, seq_idx);
        mlm_microbatch_fill(&slot->micro[k], ld->sh, seq_idx, &cfg->data, &ld->sp, ld->word_start,
                            cfg->train.seed, (uint32_t)step, pos);
        slot->masked_local += slot->micro[k].batch.M;
    }
}

/* MLM_DEBUG_DATA_LOG=path: each rank appends `step S rank R pos P sample I` for
 * every sequence the trainer takes from it (P: position in the global batch, I:
 * global sample). */
static void log_data(const mlm_loader *ld, int step) {
    if (ld->data_log < 0) return;
    int B = ld->cfg->train.micro_batch;
    size_t cap = (size_t)ld->nmicro * B * 80, len = 0;
    char *text = mlm_xmalloc(cap, "data log");
    uint64_t *idx = mlm_xmalloc(B * sizeof *idx, "data log");
    for (int k = 0; k < ld->nmicro; k++) {
        uint32_t pos = mlm_loader_indices(ld, step, k, idx);
        for (int b = 0; b < B; b++)
            len += snprintf(text + len, cap - len, "step %d rank %d pos %u sample %" PRIu64 "\n", step, ld->rank,
                            pos + b, idx[b]);
    }
    if (write(ld->data_log, text, len) != (ssize_t)len) mlm_log("warning: MLM_DEBUG_DATA_LOG: short write");
    free(idx);
    free(text);
}

static void *loader_thread(void *arg) {
    mlm_loader *ld = arg;
    uint64_t *seq_idx = mlm_xmalloc(ld->cfg->train.micro_batch * sizeof(uint64_t), "loader indices");
    pthread_mutex_lock(&ld->mu);
    while (!ld->stop && ld->next_step <= ld->last_step) {
        if (ld->count == MLM_LOADER_DEPTH) {
            pthread_cond_wait(&ld->cv, &ld->mu);
            continue;
        }
        mlm_step_data *slot = &ld->slots[(ld->head + ld->count) % MLM_LOADER_DEPTH];
        int step = ld->next_step++;
        pthread_mutex_unlock(&ld->mu);
        prepare(ld, slot, step, seq_idx);   // the slot is not visible to the consumer yet
        pthread_mutex_lock(&ld->mu);
        ld->count++;
        pthread_cond_broadcast(&ld->cv);
    }
    pthread_mutex_unlock(&ld->mu);
    free(seq_idx);
    return NULL;
}

void mlm_loader_start(mlm_loader *ld, const mlm_shards *sh, const mlm_config *cfg, const mlm_special_ids *sp,
                      const uint8_t *word_start, int rank, int world, int first_step, int last_step, int max_M) {
    memset(ld, 0, sizeof *ld);
    ld->sh = sh;
    ld->cfg = cfg;
    ld->sp = *sp;
    ld->word_start = word_start;
    ld->rank = rank;
    ld->world = world;
    ld->nmicro = cfg->train.batch / world / cfg->train.micro_batch;
    ld->next_step = first_step;
    ld->last_step = last_step;
    for (int i = 0; i < MLM_LOADER_DEPTH; i++) {
        ld->slots[i].micro = mlm_xcalloc(ld->nmicro, sizeof(mlm_microbatch), "loader micro-batches");
        for (int k = 0; k < ld->nmicro; k++)
            mlm_microbatch_init(&ld->slots[i].micro[k], cfg->train.micro_batch, cfg->data.seq_len, max_M);
    }
    const char *data_log = getenv("MLM_DEBUG_DATA_LOG");
    ld->data_log = -1;
    if (data_log && (ld->data_log = open(data_log, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0)
        mlm_die(MLM_EXIT_INPUT, "MLM_DEBUG_DATA_LOG=%s: cannot open: %s", data_log, strerror(errno));
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv, NULL);
    if (pthread_create(&ld->thread, NULL, loader_thread, ld) != 0)
        mlm_die(MLM_EXIT_RUNTIME, "cannot start the data loader thread");
}

mlm_step_data *mlm_loader_next(mlm_loader *ld) {
    pthread_mutex_lock(&ld->mu);
    while (ld->count == 0) pthread_cond_wait(&ld->cv, &ld->mu);
    mlm_step_data *slot = &ld->slots[ld->head];
    pthread_mutex_unlock(&ld->mu);
    log_data(ld, slot->step);
    return slot;
}

void mlm_loader_release(mlm_loader *ld) {
    pthread_mutex_lock(&ld->mu);
    ld->head = (ld->head + 1) % MLM_LOADER_DEPTH;
    ld->count--;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
}

void mlm_loader_stop(mlm_loader *ld) {
    pthread_mutex_lock(&ld->mu);
    ld->stop = 1;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
    pthread_join(ld->thread, NULL);
    for (int i = 0; i < MLM_LOADER_DEPTH; i++) {
        for (int k = 0; k < ld->nmicro; k++) mlm_microbatch_free(&ld->slots[i].micro[k]);
        free(ld->slots[i].micro);
    }
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv);
    if (ld->data_log >= 0) close(ld->data_log);
}
