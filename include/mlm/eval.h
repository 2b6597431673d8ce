/*
 * Evaluation: the masked-LM loss, accuracy and token count of a model on shards with
 * fixed masking (step 0) and no dropout, and what it predicts for the masked tokens
 * of a sequence (src/host/train/eval.c).
 */
#ifndef MLM_EVAL_H
#define MLM_EVAL_H

#include "mlm/config.h"
#include "mlm/data.h"
#include "mlm/model.h"
#include "mlm/tokenizer.h"

/* Mean masked-LM loss and accuracy over n micro-batches of sh from the start, with
 * fixed masking (step 0), no dropout; whole-word masking (cfg->data.whole_word_mask)
 * reads word_start (mlm_word_starts; NULL otherwise). In a job of several ranks
 * (dist.h) every rank must call it: each evaluates every world-th micro-batch and the
 * sums are reduced. */
typedef struct { double loss, acc; long tokens; } mlm_eval_result;
mlm_eval_result mlm_evaluate(mlm_model *m, const mlm_shards *sh, const mlm_config *cfg,
                             const mlm_special_ids *sp, const uint8_t *word_start, int n);

/* The unigram baseline: the loss, in nats, of predicting every masked token from the
 * token frequencies of sh alone, without context: the entropy -sum p log p of the
 * frequencies of the ids masking can pick (all but pad, [CLS], [SEP], [MASK]; sp).
 * Counts at most max_seqs sequences, evenly spread over sh (0: all). A model whose
 * validation loss is not well below it has learned nothing but frequencies. Returns
 * -1 when sh holds no such token. */
double mlm_unigram_baseline(const mlm_shards *sh, const mlm_special_ids *sp, uint64_t max_seqs);

/* Prints on stdout what the model predicts for up to max_shown masked tokens of one
 * sequence of val (every scored token shown as [MASK]), with their context and the
 * truth, the tokens spelled by tok (either kind) and masked as in evaluation. The
 * sequence is the one of the first 256 with the largest share of word tokens (two
 * letters or more): prose rather than code or tables, where there is some. */
void mlm_print_predictions(mlm_model *m, const mlm_shards *val, const mlm_config *cfg, const mlm_special_ids *sp,
                           const mlm_tokenizer *tok, const uint8_t *word_start, int max_shown);

#endif
