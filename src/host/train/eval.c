/*
 * Evaluation (include/mlm/eval.h): the masked-LM loss and accuracy of a model on
 * shards with the fixed masking of validation, split over the ranks, the unigram
 * baseline that loss is shown beside, and the predictions printout at the end of a run. Callers: the trainer (trainer.c) and
 * `mlmgpu eval` (src/host/cli/cmd_eval.c).
 */
#include "mlm/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/dist.h"
#include "mlm/loader.h"
#include "mlm/log.h"

mlm_eval_result mlm_evaluate(mlm_model *m, const mlm_shards *sh, const mlm_config *cfg,
                             const mlm_special_ids *sp, const uint8_t *word_start, int n) {
    mlm_microbatch mb;
    mlm_microbatch_init(&mb, cfg->train.micro_batch, cfg->data.seq_len, m->max_M);
    double sums[3] = {0, 0, 0};   // loss, correct, tokens
    float stale[3];
    mlm_model_take_stats(m, stale);   // evaluation statistics start from zero
    uint64_t *seq_idx = mlm_xmalloc(mb.B * sizeof(uint64_t), "evaluation indices");
    for (int i = mlm_dist_rank(); i < n; i += mlm_dist_world()) {
        uint64_t first = (uint64_t)i * mb.B;
        for (int b = 0; b < mb.B; b++) seq_idx[b] = first + b;
        mlm_microbatch_fill(&mb, sh, seq_idx, &cfg->data, sp, word_start, cfg->train.seed, 0, (uint32_t)first);
        mlm_model_forward(m, &mb.batch, NULL);
        float s[3];
        mlm_model_take_stats(m, s);
        sums[0] += s[0];
        sums[1] += s[1];
        sums[2] += mb.batch.M;
    }
    free(seq_idx);
    mlm_microbatch_free(&mb);
    mlm_dist_allreduce_host(sums, 3, "validation sums");
    long tokens = (long)sums[2];
    mlm_eval_result r = {tokens ? sums[0] / tokens : 0, tokens ? sums[1] / tokens : 0, tokens};
    return r;
}

/* ---------------------------------------------------------------- unigram baseline */

/* One pass over the ids, counted per id; the entropy in nats. The ids come through
 * mlm_shards_get, bounded by max_id + 1 (the largest id, found at open), so none is
 * refused. */
double mlm_unigram_baseline(const mlm_shards *sh, const mlm_special_ids *sp, uint64_t max_seqs) {
    uint32_t V = sh->max_id + 1;
    uint64_t *count = mlm_xcalloc(V, sizeof(uint64_t), "token counts");
    int32_t *ids = mlm_xmalloc((size_t)sh->seq_len * sizeof(int32_t), "a sequence");
    uint64_t n = sh->total, take = max_seqs && max_seqs < n ? max_seqs : n, total = 0;
    for (uint64_t k = 0; k < take; k++) {
        char err[512];
        if (mlm_shards_get(sh, take == n ? k : k * n / take, ids, (int)V, err, sizeof err) < 0)   // evenly spread
            mlm_die(MLM_EXIT_RUNTIME, "unigram baseline: %s", err);   // cannot be: every id is below max_id + 1
        for (int s = 0; s < sh->seq_len; s++) count[ids[s]]++;
    }
    free(ids);
    int specials[4] = {sh->pad_id, sp->cls, sp->sep, sp->mask};
    for (int i = 0; i < 4; i++)
        if (specials[i] >= 0 && (uint32_t)specials[i] < V) count[specials[i]] = 0;
    for (uint32_t i = 0; i < V; i++) total += count[i];
    double h = 0;
    for (uint32_t i = 0; i < V; i++)
        if (count[i]) {
            double p = (double)count[i] / (double)total;
            h -= p * log(p);
        }
    free(count);
    return total ? h : -1;
}

/* ---------------------------------------------------------------- predictions */

enum { PREDICT_CANDIDATES = 256 };   // validation sequences mlm_print_predictions looks at

/* Tokens [from, to) of ids as text (the tokenizer joins pieces), without leading
 * spaces. */
static void detokenize(char *out, size_t n, const mlm_tokenizer *tok, const int32_t *ids, int from, int to) {
    out[0] = 0;
    if (to <= from) return;
    mlm_tokenizer_decode(tok, ids + from, (size_t)(to - from), out, n);
    size_t skip = strspn(out, " ");
    memmove(out, out + skip, strlen(out + skip) + 1);
}

/* One token as shown: WordPiece's vocabulary form ("##ing"), BPE's decoded text. */
static const char *token_text(const mlm_tokenizer *tok, int id, char *buf, size_t n) {
    if (id < 0 || id >= mlm_tokenizer_size(tok)) return "?";
    if (mlm_tokenizer_kind(tok) == MLM_TOK_WORDPIECE) return mlm_tokenizer_token(tok, id);
    detokenize(buf, n, tok, &id, 0, 1);
    return buf;
}

/* How much sequence `seq` of mb (its masked tokens shown by their truth) reads like
 * prose: the tokens that spell a word of two letters or more, against its length
 * (0 for a sequence shorter than half of S: little context to show). */
static double prose_share(const mlm_microbatch *mb, const mlm_tokenizer *tok, int S) {
    int len = mb->lengths[0], words = 0;
    if (len < S / 2) return 0;
    for (int s = 0; s < len; s++) {
        int32_t id = mb->ids[s];
        for (int i = 0; i < mb->batch.M; i++)
            if (mb->rows[i] == s) id = mb->labels[i];
        char buf[64];
        detokenize(buf, sizeof buf, tok, &id, 0, 1);
        size_t n = strlen(buf), letters = 0;
        while (letters < n && ((buf[letters] | 32) >= 'a' && (buf[letters] | 32) <= 'z')) letters++;
        words += n >= 2 && letters == n;
    }
    return (double)words / len;
}

void mlm_print_predictions(mlm_model *m, const mlm_shards *val, const mlm_config *cfg, const mlm_special_ids *sp,
                           const mlm_tokenizer *tok, const uint8_t *word_start, int max_shown) {
    int S = cfg->data.seq_len, V = cfg->model.vocab_size;
    mlm_microbatch mb;
    mlm_microbatch_init(&mb, 1, S, m->max_M);
    mlm_data_config dc = cfg->data;
    dc.mask_token_prob = 1;   // show [MASK] wherever a token is scored
    // of the first PREDICT_CANDIDATES sequences, the one that reads most like prose
    // (documentation corpora mix prose with code, tables and markup)
    uint64_t first = 0, n = val->total < PREDICT_CANDIDATES ? val->total : PREDICT_CANDIDATES;
    double best_share = -1;
    for (uint64_t k = 0; k < n; k++) {
        mlm_microbatch_fill(&mb, val, &k, &dc, sp, word_start, cfg->train.seed, 0, 0);
        double share = mb.batch.M > 0 ? prose_share(&mb, tok, S) : -1;
        if (share > best_share) best_share = share, first = k;
    }
    mlm_microbatch_fill(&mb, val, &first, &dc, sp, word_start, cfg->train.seed, 0, 0);
    int M = mb.batch.M < max_shown ? mb.batch.M : max_shown;
    mb.batch.M = M;
    float *logits = mlm_xmalloc((size_t)M * V * sizeof(float), "prediction logits");
    mlm_model_forward(m, &mb.batch, logits);
    float discard[3];
    mlm_model_take_stats(m, discard);
    printf("\npredictions on a validation sequence (*[MASK]* -> top prediction (probability), and the truth):\n");
    for (int i = 0; i < M; i++) {
        const float *row = logits + (size_t)i * V;
        int best = 0;
        double z = 0;
        for (int k = 1; k < V; k++) best = row[k] > row[best] ? k : best;
        for (int k = 0; k < V; k++) z += exp(row[k] - row[best]);
        int s = mb.rows[i];
        char before[256], after[256], pred[64], truth[64];
        detokenize(before, sizeof before, tok, mb.ids, s > 8 ? s - 8 : 0, s);
        detokenize(after, sizeof after, tok, mb.ids, s + 1, s + 7 < mb.lengths[0] ? s + 7 : mb.lengths[0]);
        printf("  %s *[MASK]* %s\n      -> %-14s (%.2f)  truth: %s\n", before, after,
               token_text(tok, best, pred, sizeof pred), 1.0 / z, token_text(tok, mb.labels[i], truth, sizeof truth));
    }
    free(logits);
    mlm_microbatch_free(&mb);
}
