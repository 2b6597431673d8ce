/*
 * Tests of the data layer: Philox known answers, masking statistics and
 * reproducibility, the shard format (round trip, and every corruption named),
 * vocab loading, and the micro-batch builder.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "mlm/data.h"
#include "mlm/loader.h"
#include "mlm/model.h"
#include "mlm/philox.h"

/* ---- Philox4x32-10 known-answer vectors (Random123 kat_vectors) ---- */

Test(philox, known_answers) {
    mlm_u32x4 r = mlm_philox(0, 0, 0, 0, 0);
    uint32_t zero[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
    for (int i = 0; i < 4; i++) cr_expect_eq(r.v[i], zero[i], "word %d: %08x", i, r.v[i]);
    r = mlm_philox(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffffffffffffull);
    uint32_t ones[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
    for (int i = 0; i < 4; i++) cr_expect_eq(r.v[i], ones[i], "word %d: %08x", i, r.v[i]);
    r = mlm_philox(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0x299f31d0a4093822ull);
    uint32_t pi[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
    for (int i = 0; i < 4; i++) cr_expect_eq(r.v[i], pi[i], "word %d: %08x", i, r.v[i]);
}

Test(philox, u01_range) {
    cr_expect_eq(mlm_u01(0), 0.0f);
    cr_expect_lt(mlm_u01(0xffffffffu), 1.0f);
}

/* ---- masking ---- */

static mlm_data_config data_cfg(float p, float pm, float pr) {
    mlm_data_config dc = {0};
    dc.seq_len = 128;
    dc.mask_prob = p;
    dc.mask_token_prob = pm;
    dc.random_token_prob = pr;
    return dc;
}

Test(masking, statistics_and_specials) {
    mlm_special_ids sp = mlm_special_ids_default(30522);
    mlm_data_config dc = data_cfg(0.15f, 0.8f, 0.1f);
    long selected = 0, to_mask = 0, to_random = 0, kept = 0, maskable = 0;
    int32_t ids[128], orig[128], rows[128], labels[128];
    for (uint32_t seq = 0; seq < 2000; seq++) {
        int len = 100;
        ids[0] = sp.cls;
        for (int s = 1; s < len - 1; s++) ids[s] = 1000 + (int)((seq * 131 + s * 7) % 20000);
        ids[len - 1] = sp.sep;
        for (int s = len; s < 128; s++) ids[s] = sp.pad;
        memcpy(orig, ids, sizeof ids);
        int n = mlm_mask_sequence(ids, len, &dc, &sp, 42, 7, seq, 1000, rows, labels);
        maskable += len - 2;
        selected += n;
        for (int i = 0; i < n; i++) {
            int s = rows[i] - 1000;
            cr_assert(s > 0 && s < len - 1, "special or padding position %d selected", s);
            cr_assert_eq(labels[i], orig[s]);
            if (ids[s] == sp.mask) to_mask++;
            else if (ids[s] == orig[s]) kept++;
            else {
                to_random++;
                cr_assert(ids[s] != sp.pad && ids[s] != sp.cls && ids[s] != sp.sep && ids[s] != sp.unk &&
                          ids[s] < 30522, "random replacement %d is special", ids[s]);
            }
        }
        for (int s = 0; s < 128; s++) {
            int is_row = 0;
            for (int i = 0; i < n; i++) is_row |= rows[i] - 1000 == s;
            if (!is_row) cr_assert_eq(ids[s], orig[s], "unselected position %d changed", s);
        }
    }
    double f = (double)selected / maskable;
    cr_expect(fabs(f - 0.15) < 0.005, "selected fraction %f", f);
    cr_expect(fabs((double)to_mask / selected - 0.8) < 0.01, "[MASK] fraction");
    cr_expect(fabs((double)to_random / selected - 0.1) < 0.01, "random fraction");
    // a random replacement may draw the original token: kept is at least the 10 %
    cr_expect(fabs((double)kept / selected - 0.1) < 0.01, "kept fraction");
}

Test(masking, reproducible_and_keyed) {
    mlm_special_ids sp = mlm_special_ids_default(30522);
    mlm_data_config dc = data_cfg(0.3f, 0.8f, 0.1f);
    int32_t a[64], b[64], ra[64], rb[64], la[64], lb[64];
    for (int s = 0; s < 64; s++) a[s] = b[s] = 2000 + s;
    int na = mlm_mask_sequence(a, 64, &dc, &sp, 1, 5, 9, 0, ra, la);
    int nb = mlm_mask_sequence(b, 64, &dc, &sp, 1, 5, 9, 0, rb, lb);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_eq(memcmp(ra, rb, na * sizeof(int32_t)), 0);
    // another step, sequence index or seed gives another mask
    uint64_t keys[3][3] = {{1, 6, 9}, {1, 5, 10}, {2, 5, 9}};
    for (int k = 0; k < 3; k++) {
        for (int s = 0; s < 64; s++) b[s] = 2000 + s;
        int n = mlm_mask_sequence(b, 64, &dc, &sp, keys[k][0], (uint32_t)keys[k][1], (uint32_t)keys[k][2], 0, rb, lb);
        cr_expect(n != na || memcmp(ra, rb, n * sizeof(int32_t)) != 0, "key %d gave the same mask", k);
    }
}

Test(masking, all_or_nothing) {
    mlm_special_ids sp = mlm_special_ids_default(30522);
    int32_t ids[16], rows[16], labels[16];
    for (int s = 0; s < 16; s++) ids[s] = 500 + s;
    mlm_data_config none = data_cfg(0.0f, 0.8f, 0.1f), all = data_cfg(1.0f, 1.0f, 0.0f);
    cr_expect_eq(mlm_mask_sequence(ids, 16, &none, &sp, 3, 1, 0, 0, rows, labels), 0);
    cr_expect_eq(mlm_mask_sequence(ids, 16, &all, &sp, 3, 1, 0, 0, rows, labels), 16);
    for (int s = 0; s < 16; s++) cr_expect_eq(ids[s], sp.mask);
}

Test(masking, max_masked_bound) {
    cr_expect_eq(mlm_max_masked(100, 1.0f), 100);
    int b = mlm_max_masked(4096, 0.15f);
    cr_expect(b > 615 + 200 && b < 1000, "bound %d", b);
}

/* ---- shards ---- */

static void write_shard(const char *name, int count, int seq_len, int dtype, uint64_t vh, int first_id) {
    int32_t *ids = calloc((size_t)count * seq_len, sizeof(int32_t));
    for (int i = 0; i < count; i++)
        for (int s = 0; s < seq_len - 1 - i % 3; s++) ids[i * seq_len + s] = first_id + i * 10 + s;
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    cr_assert_eq(mlm_shard_write(path, ids, count, seq_len, dtype, vh, err, sizeof err), 0, "%s", err);
    free(ids);
}

/* Opens tmpdir/name and expects failure whose message contains want. */
static void expect_open_fails(const char *name, int seq_len, uint64_t vh, const char *want) {
    char path[256], err[1024] = "";
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    mlm_shards sh;
    cr_assert_eq(mlm_shards_open(&sh, path, seq_len, vh, err, sizeof err), -1, "%s opened", name);
    cr_expect(strstr(err, want) != NULL, "message '%s' lacks '%s'", err, want);
    cr_expect(strstr(err, name) != NULL, "message '%s' does not name the file", err);
}

static void patch(const char *name, long at, const void *bytes, size_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, at, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

TestSuite(shards, .init = make_tmpdir, .fini = rm_tmpdir);

Test(shards, round_trip_directory_in_order) {
    write_shard("b.shard", 3, 8, 4, 77, 70000);   // uint32 ids
    write_shard("a.shard", 2, 8, 4, 77, 100);
    mlm_shards sh;
    char err[512];
    cr_assert_eq(mlm_shards_open(&sh, tmpdir, 8, 77, err, sizeof err), 0, "%s", err);
    cr_assert_eq(sh.total, 5);
    int32_t ids[8];
    int len = mlm_shards_get(&sh, 0, ids, 100000, err, sizeof err);   // a.shard first
    cr_expect_eq(len, 7);
    cr_expect_eq(ids[0], 100);
    cr_expect_eq(ids[7], 0);
    len = mlm_shards_get(&sh, 3, ids, 100000, err, sizeof err);
    cr_expect_eq(ids[0], 70010);
    cr_expect_eq(len, 6);
    mlm_shards_get(&sh, 5, ids, 100000, err, sizeof err);   // wraps around
    cr_expect_eq(ids[0], 100);
    cr_expect_eq(mlm_shards_get(&sh, 2, ids, 70005, err, sizeof err), -1);
    cr_expect(strstr(err, "b.shard") && strstr(err, "outside the vocabulary"), "%s", err);
    mlm_shards_close(&sh);
}

Test(shards, corruptions_are_named) {
    write_shard("ok.shard", 4, 16, 2, 5, 10);
    expect_open_fails("missing.shard", 16, 5, "cannot open");
    expect_open_fails("ok.shard", 32, 5, "seq_len");
    expect_open_fails("ok.shard", 16, 6, "vocab");
    write_shard("magic.shard", 4, 16, 2, 5, 10);
    patch("magic.shard", 0, "NOTSHARD", 8);
    expect_open_fails("magic.shard", 16, 5, "bad magic");
    write_shard("version.shard", 4, 16, 2, 5, 10);
    uint32_t v = 99;
    patch("version.shard", 8, &v, 4);
    expect_open_fails("version.shard", 16, 5, "version 99");
    write_shard("dtype.shard", 4, 16, 2, 5, 10);
    v = 3;
    patch("dtype.shard", 12, &v, 4);
    expect_open_fails("dtype.shard", 16, 5, "id width");
    write_shard("flip.shard", 4, 16, 2, 5, 10);
    patch("flip.shard", 64 + 10, "\x07", 1);
    expect_open_fails("flip.shard", 16, 5, "checksum");
    write_shard("count.shard", 4, 16, 2, 5, 10);
    uint64_t c = 5;
    patch("count.shard", 24, &c, 8);
    expect_open_fails("count.shard", 16, 5, "truncated");
    write_shard("trunc.shard", 4, 16, 2, 5, 10);
    char path[256];
    snprintf(path, sizeof path, "%s/trunc.shard", tmpdir);
    cr_assert_eq(truncate(path, 64 + 4 * 16 * 2 - 3), 0);
    expect_open_fails("trunc.shard", 16, 5, "truncated");
    cr_assert_eq(truncate(path, 20), 0);
    expect_open_fails("trunc.shard", 16, 5, "truncated");
}

Test(shards, empty_directory) {
    char err[512];
    mlm_shards sh;
    cr_assert_eq(mlm_shards_open(&sh, tmpdir, 0, 0, err, sizeof err), -1);
    cr_expect(strstr(err, "no *.shard files") != NULL, "%s", err);
}

Test(shards, write_rejects_wide_ids_for_uint16) {
    int32_t ids[4] = {1, 2, 70000, 0};
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/wide.shard", tmpdir);
    cr_assert_eq(mlm_shard_write(path, ids, 1, 4, 2, 0, err, sizeof err), -1);
    cr_expect(strstr(err, "70000") != NULL, "%s", err);
    cr_expect_eq(access(path, F_OK), -1, "a half-written shard was left");
}

/* ---- vocab ---- */

TestSuite(vocab, .init = make_tmpdir, .fini = rm_tmpdir);

Test(vocab, loads_and_finds_specials) {
    write_file("v.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\r\n");
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/v.txt", tmpdir);
    mlm_vocab v;
    cr_assert_eq(mlm_vocab_load(&v, path, err, sizeof err), 0, "%s", err);
    cr_expect_eq(v.count, 7);
    cr_expect_eq(mlm_vocab_find(&v, "##s"), 6);
    mlm_special_ids sp;
    cr_assert_eq(mlm_special_ids_from_vocab(&v, 8, &sp, path, err, sizeof err), 0, "%s", err);
    cr_expect_eq(sp.mask, 4);
    cr_expect_eq(mlm_special_ids_from_vocab(&v, 6, &sp, path, err, sizeof err), -1);
    cr_expect(strstr(err, "do not fit") != NULL, "%s", err);
    mlm_vocab_free(&v);
}

Test(vocab, bad_files) {
    const char *cases[][2] = {
        {"empty.txt", ""},
        {"blank.txt", "[PAD]\n\n[UNK]\n"},
        {"nomask.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n"},
        {"padlate.txt", "[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\n"},
    };
    const char *want[] = {"empty vocabulary", ":2: empty token", "no [MASK]", "[PAD] is id 1"};
    for (int i = 0; i < 4; i++) {
        write_file(cases[i][0], cases[i][1]);
        char path[256], err[512] = "";
        snprintf(path, sizeof path, "%s/%s", tmpdir, cases[i][0]);
        mlm_vocab v;
        mlm_special_ids sp;
        int rc = mlm_vocab_load(&v, path, err, sizeof err);
        if (rc == 0) {
            rc = mlm_special_ids_from_vocab(&v, 100, &sp, path, err, sizeof err);
            mlm_vocab_free(&v);
        }
        cr_expect_eq(rc, -1, "%s accepted", cases[i][0]);
        cr_expect(strstr(err, want[i]) != NULL, "%s: '%s' lacks '%s'", cases[i][0], err, want[i]);
    }
}

/* ---- micro-batches: the same sequences mask the same way whatever the split ---- */

TestSuite(microbatch, .init = make_tmpdir, .fini = rm_tmpdir);

Test(microbatch, independent_of_split) {
    write_shard("d.shard", 8, 32, 2, 0, 1000);
    mlm_shards sh;
    char err[512];
    cr_assert_eq(mlm_shards_open(&sh, tmpdir, 32, 0, err, sizeof err), 0, "%s", err);
    mlm_special_ids sp = mlm_special_ids_default(30522);
    mlm_data_config dc = data_cfg(0.3f, 0.8f, 0.1f);
    dc.seq_len = 32;
    mlm_microbatch whole, half;
    mlm_microbatch_init(&whole, 8, 32, 8 * 32);
    mlm_microbatch_init(&half, 4, 32, 4 * 32);
    uint64_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    mlm_microbatch_fill(&whole, &sh, idx, &dc, &sp, 11, 3, 0);
    int m = 0;
    for (int k = 0; k < 2; k++) {
        mlm_microbatch_fill(&half, &sh, idx + 4 * k, &dc, &sp, 11, 3, 4 * k);
        cr_assert_eq(memcmp(half.ids, whole.ids + 4 * k * 32, 4 * 32 * sizeof(int32_t)), 0);
        for (int i = 0; i < half.batch.M; i++, m++) {
            cr_assert_eq(half.rows[i] + 4 * k * 32, whole.rows[m]);
            cr_assert_eq(half.labels[i], whole.labels[m]);
        }
    }
    cr_expect_eq(m, whole.batch.M);
    cr_expect_gt(m, 0);
    mlm_microbatch_free(&whole);
    mlm_microbatch_free(&half);
    mlm_shards_close(&sh);
}

/* ---- loader: shuffle, rank slices, resume, prefetch ---- */

Test(loader, shuffle_is_a_keyed_bijection) {
    uint64_t sizes[] = {1, 2, 3, 7, 1000, 4097};
    for (int k = 0; k < 6; k++) {
        uint64_t n = sizes[k];
        uint8_t *seen = calloc(n, 1);
        int moved = 0, differs = 0;
        for (uint64_t x = 0; x < n; x++) {
            uint64_t y = mlm_shuffle_index(x, n, 5, 0);
            cr_assert_lt(y, n);
            cr_assert_eq(seen[y], 0, "n=%llu: %llu hit twice", (unsigned long long)n, (unsigned long long)y);
            seen[y] = 1;
            moved += y != x;
            differs += y != mlm_shuffle_index(x, n, 5, 1);
            cr_assert_eq(y, mlm_shuffle_index(x, n, 5, 0), "not deterministic");
        }
        if (n >= 1000) {
            cr_expect_gt(moved, (int)(n * 9 / 10), "n=%llu: only %d moved", (unsigned long long)n, moved);
            cr_expect_gt(differs, (int)(n * 9 / 10), "epochs too alike");
        }
        free(seen);
    }
}

static mlm_config loader_cfg(int micro, int batch) {
    mlm_config c;
    mlm_config_defaults(&c);
    c.data.seq_len = 32;
    c.data.mask_prob = 0.3f;
    c.train.micro_batch = micro;
    c.train.batch = batch;
    c.train.seed = 9;
    return c;
}

TestSuite(loader, .init = make_tmpdir, .fini = rm_tmpdir);

/* Every rank's slice of a step, gathered, equals the single-rank step; sequences
 * and masks keyed by the global position are the same. */
Test(loader, ranks_split_the_global_batch) {
    write_shard("d.shard", 37, 32, 2, 0, 1000);
    mlm_shards sh;
    char err[512];
    cr_assert_eq(mlm_shards_open(&sh, tmpdir, 32, 0, err, sizeof err), 0, "%s", err);
    mlm_special_ids sp = mlm_special_ids_default(30522);
    mlm_config one = loader_cfg(8, 16), two = loader_cfg(4, 16);
    mlm_loader a, b[2];
    int max_M = 8 * 32;
    mlm_loader_start(&a, &sh, &one, &sp, 0, 1, 1, 6, max_M);
    for (int r = 0; r < 2; r++) mlm_loader_start(&b[r], &sh, &two, &sp, r, 2, 1, 6, max_M);
    for (int step = 1; step <= 6; step++) {   // 96 samples: wraps into a second epoch
        mlm_step_data *d = mlm_loader_next(&a);
        cr_assert_eq(d->step, step);
        int32_t *whole = calloc(16 * 32, sizeof(int32_t));
        for (int k = 0; k < 2; k++) memcpy(whole + k * 8 * 32, d->micro[k].ids, 8 * 32 * sizeof(int32_t));
        long masked = 0;
        for (int r = 0; r < 2; r++) {
            mlm_step_data *e = mlm_loader_next(&b[r]);
            cr_assert_eq(e->step, step);
            for (int k = 0; k < 2; k++) {
                int pos = r * 8 + k * 4;
                cr_assert_eq(memcmp(e->micro[k].ids, whole + pos * 32, 4 * 32 * sizeof(int32_t)), 0,
                             "step %d rank %d micro %d differs", step, r, k);
            }
            masked += e->masked_local;
            mlm_loader_release(&b[r]);
        }
        cr_expect_eq(masked, d->masked_local);
        free(whole);
        mlm_loader_release(&a);
    }
    // within one epoch the 37 sequences are all visited once
    uint64_t idx[8];
    uint8_t seen[37] = {0};
    int hits = 0;
    for (int i = 0; i < 4; i++) {   // steps 1-2 = samples 0..31, all in epoch 0
        mlm_loader_indices(&a, 1 + i / 2, i % 2, idx);
        for (int k = 0; k < 8; k++) hits += !seen[idx[k]]++;
    }
    cr_expect_eq(hits, 32, "samples repeated within an epoch");
    mlm_loader_stop(&a);
    for (int r = 0; r < 2; r++) mlm_loader_stop(&b[r]);
    mlm_shards_close(&sh);
}

Test(loader, resume_at_a_step_gives_the_same_data) {
    write_shard("d.shard", 20, 32, 2, 0, 1000);
    mlm_shards sh;
    char err[512];
    cr_assert_eq(mlm_shards_open(&sh, tmpdir, 32, 0, err, sizeof err), 0, "%s", err);
    mlm_special_ids sp = mlm_special_ids_default(30522);
    mlm_config c = loader_cfg(4, 8);
    mlm_loader full, resumed;
    mlm_loader_start(&full, &sh, &c, &sp, 0, 1, 1, 7, 4 * 32);
    mlm_loader_start(&resumed, &sh, &c, &sp, 0, 1, 5, 7, 4 * 32);
    for (int step = 1; step <= 7; step++) {
        mlm_step_data *d = mlm_loader_next(&full);
        if (step >= 5) {
            mlm_step_data *e = mlm_loader_next(&resumed);
            cr_assert_eq(e->step, step);
            for (int k = 0; k < 2; k++) {
                cr_assert_eq(memcmp(d->micro[k].ids, e->micro[k].ids, 4 * 32 * sizeof(int32_t)), 0);
                cr_assert_eq(d->micro[k].batch.M, e->micro[k].batch.M);
                cr_assert_eq(memcmp(d->micro[k].rows, e->micro[k].rows, d->micro[k].batch.M * sizeof(int32_t)), 0);
            }
            mlm_loader_release(&resumed);
        }
        mlm_loader_release(&full);
    }
    mlm_loader_stop(&full);
    mlm_loader_stop(&resumed);
    mlm_shards_close(&sh);
}
