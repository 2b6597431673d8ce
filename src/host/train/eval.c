/*
 * Evaluation (include/mlm/eval.h): the masked-LM loss and accuracy of a model on
 * shards with the fixed masking of validation, split over the ranks, and the
 * predictions printout at the end of a run. Callers: the trainer (trainer.c) and
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
                             const mlm_special_ids *sp, int n) {
    mlm_microbatch mb;
    mlm_microbatch_init(&mb, cfg->train.micro_batch, cfg->data.seq_len, m->max_M);
    double sums[3] = {0, 0, 0};   // loss, correct, tokens
    float stale[3];
    mlm_model_take_stats(m, stale);   // evaluation statistics start from zero
    uint64_t *seq_idx = mlm_xmalloc(mb.B * sizeof(uint64_t), "evaluation indices");
    for (int i = mlm_dist_rank(); i < n; i += mlm_dist_world()) {
        uint64_t first = (uint64_t)i * mb.B;
        for (int b = 0; b < mb.B; b++) seq_idx[b] = first + b;
        mlm_microbatch_fill(&mb, sh, seq_idx, &cfg->data, sp, cfg->train.seed, 0, (uint32_t)first);
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

/* ---------------------------------------------------------------- predictions */

/* Appends tokens [from, to) of ids to out as text, joining "##" pieces. */
static void detokenize(char *out, size_t n, const mlm_vocab *v, const int32_t *ids, int from, int to) {
    size_t len = strlen(out);
    for (int s = from; s < to && len + 1 < n; s++) {
        const char *t = ids[s] < v->count ? v->tokens[ids[s]] : "[?]";
        int piece = strncmp(t, "##", 2) == 0;
        snprintf(out + len, n - len, "%s%s", piece || len == 0 ? "" : " ", piece ? t + 2 : t);
        len = strlen(out);
    }
}

void mlm_print_predictions(mlm_model *m, const mlm_shards *val, const mlm_config *cfg, const mlm_special_ids *sp,
                           const mlm_vocab *vocab, int max_shown) {
    int S = cfg->data.seq_len, V = cfg->model.vocab_size;
    mlm_microbatch mb;
    mlm_microbatch_init(&mb, 1, S, m->max_M);
    mlm_data_config dc = cfg->data;
    dc.mask_token_prob = 1;   // show [MASK] wherever a token is scored
    uint64_t first = 0;
    mlm_microbatch_fill(&mb, val, &first, &dc, sp, cfg->train.seed, 0, 0);
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
        char before[256] = "", after[256] = "";
        detokenize(before, sizeof before, vocab, mb.ids, s > 8 ? s - 8 : 0, s);
        detokenize(after, sizeof after, vocab, mb.ids, s + 1, s + 7 < mb.lengths[0] ? s + 7 : mb.lengths[0]);
        printf("  %s *[MASK]* %s\n      -> %-14s (%.2f)  truth: %s\n", before, after,
               best < vocab->count ? vocab->tokens[best] : "?", 1.0 / z,
               mb.labels[i] < vocab->count ? vocab->tokens[mb.labels[i]] : "?");
    }
    free(logits);
    mlm_microbatch_free(&mb);
}
