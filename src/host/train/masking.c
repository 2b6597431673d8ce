/*
 * Dynamic masked-LM masking (include/mlm/data.h; the loader calls it), reproducible
 * from (seed, step, global sequence index): token s of a sequence draws Philox block
 * s of site MLM_SITE_MASKING, whose four words decide selection, replacement and the
 * random token. Nothing depends on micro-batching or world size, and no masks are
 * stored. Whole-word masking (mlm_mask_words) draws the same blocks: a word's first
 * position decides for the whole word, each piece draws its own random token.
 */
#include <math.h>

#include "mlm/data.h"
#include "mlm/model.h"
#include "mlm/philox.h"

mlm_special_ids mlm_special_ids_default(int vocab_size) {
    if (vocab_size > 103) return (mlm_special_ids){vocab_size, 0, 100, 101, 102, 103};
    return (mlm_special_ids){vocab_size, 0, 1, 2, 3, 4};
}

mlm_special_ids mlm_special_ids_arch(mlm_arch arch, int vocab_size) {
    if (arch != MLM_ARCH_ROBERTA) return mlm_special_ids_default(vocab_size);
    // {vocab_size, pad, unk, cls, sep, mask}: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last
    return (mlm_special_ids){vocab_size, 1, 3, 0, 2, vocab_size > 5 ? vocab_size - 1 : 4};
}

/* The r-th id (0-based) of [0, vocab_size) that is not special. */
static int nth_plain_id(const mlm_special_ids *sp, uint32_t r) {
    int specials[5] = {sp->pad, sp->unk, sp->cls, sp->sep, sp->mask};
    // insertion sort: five elements
    for (int i = 1; i < 5; i++)
        for (int j = i; j > 0 && specials[j - 1] > specials[j]; j--) {
            int t = specials[j];
            specials[j] = specials[j - 1];
            specials[j - 1] = t;
        }
    int id = (int)r;
    for (int i = 0; i < 5; i++)
        if (specials[i] <= id) id++;
    return id;
}

int mlm_mask_sequence(int32_t *ids, int len, const mlm_data_config *dc, const mlm_special_ids *sp,
                      uint64_t seed, uint32_t step, uint32_t seq, int offset, int32_t *rows,
                      int32_t *labels) {
    int n = 0;
    uint32_t plain = (uint32_t)(sp->vocab_size - 5);
    for (int s = 0; s < len; s++) {
        int id = ids[s];
        // [UNK] may be masked (as HF does); the structural tokens may not
        if (id == sp->pad || id == sp->cls || id == sp->sep || id == sp->mask) continue;
        mlm_u32x4 r = mlm_philox((uint32_t)s, MLM_SITE_MASKING, seq, step, seed);
        if (mlm_u01(r.v[0]) >= dc->mask_prob) continue;
        rows[n] = offset + s;
        labels[n] = id;
        n++;
        float action = mlm_u01(r.v[1]);
        if (action < dc->mask_token_prob)
            ids[s] = sp->mask;
        else if (action < dc->mask_token_prob + dc->random_token_prob)
            ids[s] = nth_plain_id(sp, r.v[2] % plain);
    }
    return n;
}

/* The tokens that are never chosen and end a word. */
static int structural(const mlm_special_ids *sp, int id) {
    return id == sp->pad || id == sp->cls || id == sp->sep || id == sp->mask;
}

int mlm_mask_words(int32_t *ids, int len, const mlm_data_config *dc, const mlm_special_ids *sp,
                   const uint8_t *word_start, uint64_t seed, uint32_t step, uint32_t seq, int offset, int cap,
                   int32_t *rows, int32_t *labels, int *dropped) {
    int n = 0;
    uint32_t plain = (uint32_t)(sp->vocab_size - 5);
    for (int s = 0; s < len;) {
        if (structural(sp, ids[s])) {
            s++;
            continue;
        }
        // the word [s, end): a continuation piece goes on until a word start or a
        // special token; [UNK] stands alone, and the token after it starts a word
        int end = s + 1;
        if (ids[s] != sp->unk)
            while (end < len && !structural(sp, ids[end]) && ids[end] != sp->unk && !word_start[ids[end]]) end++;
        mlm_u32x4 r = mlm_philox((uint32_t)s, MLM_SITE_MASKING, seq, step, seed);
        int first = s;
        s = end;
        if (mlm_u01(r.v[0]) >= dc->mask_prob) continue;
        if (n + (end - first) > cap) {   // the static bound: a word is dropped whole
            *dropped += end - first;
            continue;
        }
        float action = mlm_u01(r.v[1]);
        for (int p = first; p < end; p++) {
            rows[n] = offset + p;
            labels[n] = ids[p];
            n++;
            if (action < dc->mask_token_prob) {
                ids[p] = sp->mask;
            } else if (action < dc->mask_token_prob + dc->random_token_prob) {
                // the same draw as mlm_mask_sequence's for this position
                mlm_u32x4 q = p == first ? r : mlm_philox((uint32_t)p, MLM_SITE_MASKING, seq, step, seed);
                ids[p] = nth_plain_id(sp, q.v[2] % plain);
            }
        }
    }
    return n;
}

int mlm_max_masked(int n, float mask_prob) {
    double mean = (double)n * mask_prob;
    double bound = ceil(mean + 10.0 * sqrt(mean * (1.0 - mask_prob)) + 16.0);
    return bound < n ? (int)bound : n;
}
