/*
 * Dynamic masked-LM masking (include/mlm/data.h; the loader calls it), reproducible
 * from (seed, step, global sequence index): token s of a sequence draws Philox block
 * s of site MLM_SITE_MASKING, whose four words decide selection, replacement and the
 * random token. Nothing depends on micro-batching or world size, and no masks are
 * stored.
 */
#include <math.h>

#include "mlm/data.h"
#include "mlm/model.h"
#include "mlm/philox.h"

mlm_special_ids mlm_special_ids_default(int vocab_size) {
    if (vocab_size > 103) return (mlm_special_ids){vocab_size, 0, 100, 101, 102, 103};
    return (mlm_special_ids){vocab_size, 0, 1, 2, 3, 4};
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

int mlm_max_masked(int n, float mask_prob) {
    double mean = (double)n * mask_prob;
    double bound = ceil(mean + 10.0 * sqrt(mean * (1.0 - mask_prob)) + 16.0);
    return bound < n ? (int)bound : n;
}
