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

/* Masks sequences 0..7 of an 8 x 32 shard as one micro-batch of 8 and as two of 4
 * (table: word starts, NULL for per-token masking): the same ids, rows and labels. */
static void expect_split_invariant(const uint8_t *table) {
    write_shard("d.shard", 8, 32, 2, 0, 1000);
    mlm_shards sh;
    char err[512];
    cr_assert_eq(mlm_shards_open(&sh, tmpdir, 32, 0, err, sizeof err), 0, "%s", err);
    mlm_special_ids sp = mlm_special_ids_default(30522);
    mlm_data_config dc = data_cfg(0.3f, 0.8f, 0.1f);
    dc.seq_len = 32;
    dc.whole_word_mask = table != NULL;
    mlm_microbatch whole, half;
    mlm_microbatch_init(&whole, 8, 32, 8 * 32);
    mlm_microbatch_init(&half, 4, 32, 4 * 32);
    uint64_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    mlm_microbatch_fill(&whole, &sh, idx, &dc, &sp, table, 11, 3, 0);
    int m = 0;
    for (int k = 0; k < 2; k++) {
        mlm_microbatch_fill(&half, &sh, idx + 4 * k, &dc, &sp, table, 11, 3, 4 * k);
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

Test(microbatch, independent_of_split) { expect_split_invariant(NULL); }

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
    mlm_loader_start(&a, &sh, &one, &sp, NULL, 0, 1, 1, 6, max_M);
    for (int r = 0; r < 2; r++) mlm_loader_start(&b[r], &sh, &two, &sp, NULL, r, 2, 1, 6, max_M);
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
    mlm_loader_start(&full, &sh, &c, &sp, NULL, 0, 1, 1, 7, 4 * 32);
    mlm_loader_start(&resumed, &sh, &c, &sp, NULL, 0, 1, 5, 7, 4 * 32);
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

/* ---- shard version 2: the pad id ---- */

static void read_header(const char *name, mlm_shard_header *h) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(h, sizeof *h, 1, f), 1);
    fclose(f);
}

/* RoBERTa pads with 1 and begins with <s> = 0: the length is the index after the
 * last id that is not 1, and a 0 inside counts as a token. */
Test(shards, version_2_records_the_pad_id) {
    int32_t ids[3 * 6] = {0, 50, 0, 60, 2, 1,    // an inner <s> = 0, one pad
                          0, 70, 2, 1, 1, 1,     //
                          0, 2, 0, 1, 1, 1};     // a trailing 0 is a token, not padding
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/r.shard", tmpdir);
    cr_assert_eq(mlm_shard_write_padded(path, ids, 3, 6, 2, 9, 1, err, sizeof err), 0, "%s", err);
    mlm_shard_header h;
    read_header("r.shard", &h);
    cr_expect_eq(h.version, 2);
    cr_expect_eq(h.pad_id, 1);
    mlm_shards sh;
    cr_assert_eq(mlm_shards_open(&sh, path, 6, 9, err, sizeof err), 0, "%s", err);
    cr_expect_eq(sh.pad_id, 1);
    int32_t got[6], want_len[3] = {5, 3, 3};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(mlm_shards_get(&sh, i, got, 100, err, sizeof err), want_len[i], "sequence %d", i);
        cr_expect_eq(memcmp(got, ids + 6 * i, sizeof got), 0);
    }
    mlm_shards_close(&sh);
    // pad 0 still writes version 1, which reads as before
    write_shard("v1.shard", 2, 6, 2, 9, 10);
    read_header("v1.shard", &h);
    cr_expect_eq(h.version, 1);
    // a directory mixing the two pads is refused, naming the file
    expect_open_fails("", 6, 9, "pad id");
    // version 1 with its reserved word set is corrupt
    uint32_t v = 7;
    patch("v1.shard", 20, &v, 4);
    expect_open_fails("v1.shard", 6, 9, "reserved");
}

Test(special_ids, architecture_defaults) {
    // roberta-base's vocabulary: <s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask>=50264 of 50265
    mlm_special_ids r = mlm_special_ids_arch(MLM_ARCH_ROBERTA, 50265);
    cr_expect(r.cls == 0 && r.pad == 1 && r.sep == 2 && r.unk == 3 && r.mask == 50264 && r.vocab_size == 50265);
    mlm_special_ids b = mlm_special_ids_arch(MLM_ARCH_BERT, 30522);
    cr_expect(b.pad == 0 && b.unk == 100 && b.cls == 101 && b.sep == 102 && b.mask == 103);
}

/* ---- whole-word masking ---- */

/* A fixture line of tests/fixtures/wwm_words.*: ids, the rule's word starts, HF 5's. */
typedef struct {
    int plain, n;
    int32_t ids[512];
    int rule[512], hf[512];
} wwm_line;

static int read_wwm_lines(const char *kind, wwm_line *lines, int max) {
    char path[512];
    snprintf(path, sizeof path, MLM_SOURCE_ROOT "/tests/fixtures/wwm_words.%s", kind);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    static char buf[1 << 16];
    int n = 0;
    while (n < max && fgets(buf, sizeof buf, f)) {
        wwm_line *l = &lines[n++];
        char *p = buf;
        int used;
        cr_assert_eq(sscanf(p, "%d%n", &l->plain, &used), 1);
        p += used;
        l->n = 0;
        int id, a, b;
        while (sscanf(p, " %d:%d:%d%n", &id, &a, &b, &used) == 3) {
            cr_assert_lt(l->n, 512);
            l->ids[l->n] = id;
            l->rule[l->n] = a;
            l->hf[l->n++] = b;
            p += used;
        }
    }
    fclose(f);
    return n;
}

/* The vocabulary of a fixture kind, its special ids and word-start table. */
static mlm_tokenizer *wwm_vocab(const char *kind, mlm_special_ids *sp, uint8_t **table) {
    char err[1024];
    const char *path = strcmp(kind, "bpe") == 0 ? MLM_SOURCE_ROOT "/tests/fixtures/bpe_vocab" : SAMPLE "/vocab.txt";
    mlm_tokenizer *t = mlm_tokenizer_open(path, 0, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    *sp = mlm_tokenizer_special(t);
    *table = mlm_word_starts(t);
    return t;
}

/* The words mlm_mask_words forms on each fixture line, found from its masks alone:
 * over 48 keys with mask_prob 0.5, positions of one word are always masked
 * together, and two words differ under some key (a 2^-48 chance that they do not).
 * They must start where the rule of the fixture (from HF's token strings) does. */
static void check_boundaries(const char *kind) {
    static wwm_line lines[128];
    int nl = read_wwm_lines(kind, lines, 128);
    cr_assert_gt(nl, 90);
    mlm_special_ids sp;
    uint8_t *table;
    mlm_tokenizer *t = wwm_vocab(kind, &sp, &table);
    mlm_data_config dc = data_cfg(0.5f, 1.0f, 0.0f);
    int starts = 0, plain_lines = 0;
    for (int li = 0; li < nl; li++) {
        wwm_line *l = &lines[li];
        int n = l->n, together[512], ever[512];
        for (int s = 0; s < n; s++) together[s] = 1, ever[s] = 0;
        for (uint32_t key = 0; key < 48; key++) {
            int32_t ids[512], rows[512], labels[512];
            uint8_t masked[512] = {0};
            memcpy(ids, l->ids, n * sizeof(int32_t));
            int dropped = 0;
            int m = mlm_mask_words(ids, n, &dc, &sp, table, 5, key, (uint32_t)li, 0, n, rows, labels, &dropped);
            for (int i = 0; i < m; i++) masked[rows[i]] = 1;
            for (int s = 0; s < n; s++) {
                ever[s] |= masked[s];
                if (s > 0 && masked[s] != masked[s - 1]) together[s] = 0;
            }
        }
        for (int s = 0; s < n; s++) {
            int structural = l->ids[s] == sp.pad || l->ids[s] == sp.cls || l->ids[s] == sp.sep || l->ids[s] == sp.mask;
            cr_expect_eq(ever[s], !structural, "%s line %d position %d (id %d): masked %d", kind, li + 1, s,
                         l->ids[s], ever[s]);
            if (structural) continue;
            int begins = s == 0 || !together[s] || !ever[s - 1];
            cr_expect_eq(begins, l->rule[s], "%s line %d position %d (id %d): word start %d, the rule says %d", kind,
                         li + 1, s, l->ids[s], begins, l->rule[s]);
            starts += begins;
        }
        // on plain ASCII text the BPE rule is HF 5's collator's, token for token
        if (strcmp(kind, "bpe") == 0 && l->plain) {
            plain_lines++;
            for (int s = 0; s < n; s++)
                cr_expect_eq(l->rule[s], l->hf[s], "bpe line %d position %d: HF 5 differs", li + 1, s);
        }
    }
    cr_expect_gt(starts, 500);
    if (strcmp(kind, "bpe") == 0) cr_expect_gt(plain_lines, 20);
    free(table);
    mlm_tokenizer_free(t);
}

Test(wwm, wordpiece_words_are_hash_hash_pieces) { check_boundaries("wordpiece"); }
Test(wwm, bpe_words_begin_at_the_space_marker) { check_boundaries("bpe"); }

/* All pieces of a chosen word share one decision: all [MASK], or none; a random
 * replacement draws per piece. The masked share stays mask_prob. */
Test(wwm, one_decision_per_word_and_the_masked_share) {
    static wwm_line lines[128];
    int nl = read_wwm_lines("wordpiece", lines, 128);
    mlm_special_ids sp;
    uint8_t *table;
    mlm_tokenizer *t = wwm_vocab("wordpiece", &sp, &table);
    mlm_data_config dc = data_cfg(0.15f, 0.8f, 0.1f);
    long maskable = 0, masked = 0, words = 0, to_mask = 0, mixed = 0, random_multi = 0, random_multi_differs = 0;
    for (uint32_t step = 0; step < 200; step++)
        for (int li = 0; li < nl; li++) {
            wwm_line *l = &lines[li];
            int32_t ids[512], rows[512], labels[512];
            memcpy(ids, l->ids, l->n * sizeof(int32_t));
            int dropped = 0;
            int m = mlm_mask_words(ids, l->n, &dc, &sp, table, 77, step, (uint32_t)li, 0, l->n, rows, labels, &dropped);
            masked += m;
            for (int s = 0; s < l->n; s++)
                maskable += l->ids[s] != sp.pad && l->ids[s] != sp.cls && l->ids[s] != sp.sep && l->ids[s] != sp.mask;
            for (int i = 0; i < m;) {   // rows ascend; a word is a start and the pieces after it
                int j = i + 1;
                while (j < m && rows[j] == rows[j - 1] + 1 && !l->rule[rows[j]]) j++;
                cr_assert(l->rule[rows[i]], "line %d: a masked word starts at continuation %d", li, rows[i]);
                cr_assert(j == m || l->rule[rows[j]] || rows[j] != rows[j - 1] + 1);
                int as_mask = 0, same = 0;
                for (int k = i; k < j; k++) {
                    as_mask += ids[rows[k]] == sp.mask;
                    same += ids[rows[k]] == labels[k];
                    cr_assert_eq(labels[k], l->ids[rows[k]]);
                }
                mixed += as_mask != 0 && as_mask != j - i;
                to_mask += as_mask == j - i;
                if (!as_mask && same < j - i && j - i > 1) {
                    random_multi++;
                    random_multi_differs += same == 0;
                }
                words++;
                i = j;
            }
        }
    cr_expect_eq(mixed, 0, "%ld words partly [MASK]", mixed);
    double share = (double)masked / maskable, wm = (double)to_mask / words;
    cr_expect(fabs(share - 0.15) < 0.005, "masked share %f of %ld", share, maskable);
    cr_expect(fabs(wm - 0.8) < 0.02, "words to [MASK] %f of %ld", wm, words);
    cr_expect_gt(random_multi, 50, "multi-piece random words %ld", random_multi);
    cr_expect_gt(random_multi_differs, random_multi * 9 / 10, "random words keep pieces: %ld of %ld",
                 random_multi_differs, random_multi);
    free(table);
    mlm_tokenizer_free(t);
}

/* Where every token begins a word, whole-word masking is token masking, draw for draw. */
Test(wwm, single_piece_words_mask_as_tokens) {
    mlm_special_ids sp = mlm_special_ids_default(30522);
    uint8_t *table = malloc(30522);
    memset(table, 1, 30522);
    mlm_data_config dc = data_cfg(0.3f, 0.8f, 0.1f);
    for (uint32_t seq = 0; seq < 50; seq++) {
        int32_t a[64], b[64], ra[64], rb[64], la[64], lb[64];
        a[0] = sp.cls;
        for (int s = 1; s < 63; s++) a[s] = 1000 + (int)(seq * 31 + s) % 5000;
        a[63] = sp.sep;
        memcpy(b, a, sizeof a);
        int dropped = 0;
        int na = mlm_mask_sequence(a, 64, &dc, &sp, 3, 4, seq, 7, ra, la);
        int nb = mlm_mask_words(b, 64, &dc, &sp, table, 3, 4, seq, 7, 64, rb, lb, &dropped);
        cr_assert_eq(na, nb);
        cr_assert_eq(memcmp(a, b, sizeof a), 0);
        cr_assert_eq(memcmp(ra, rb, na * sizeof(int32_t)), 0);
        cr_assert_eq(memcmp(la, lb, na * sizeof(int32_t)), 0);
    }
    free(table);
}

/* Shard sequences with continuation pieces (ids divisible by 3 continue a word). */
static uint8_t *third_table(int V) {
    uint8_t *t = malloc(V);
    for (int id = 0; id < V; id++) t[id] = id % 3 != 0;
    return t;
}

Test(microbatch, whole_words_independent_of_split) {
    uint8_t *table = third_table(30522);
    expect_split_invariant(table);
    free(table);
}

/* At the static bound a word is dropped whole: inputs of dropped tokens are left as
 * they were, so nothing is masked that is not scored. */
Test(microbatch, the_bound_drops_whole_words) {
    write_shard("d.shard", 8, 32, 2, 0, 1000);
    mlm_shards sh;
    char err[512];
    cr_assert_eq(mlm_shards_open(&sh, tmpdir, 32, 0, err, sizeof err), 0, "%s", err);
    mlm_special_ids sp = mlm_special_ids_default(30522);
    uint8_t *table = third_table(30522);
    uint64_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int wwm = 0; wwm < 2; wwm++) {
        mlm_data_config dc = data_cfg(0.5f, 1.0f, 0.0f);
        dc.seq_len = 32;
        dc.whole_word_mask = wwm;
        mlm_microbatch full, tight;
        mlm_microbatch_init(&full, 8, 32, 8 * 32);
        mlm_microbatch_init(&tight, 8, 32, 20);
        mlm_microbatch_fill(&full, &sh, idx, &dc, &sp, table, 2, 1, 0);
        mlm_microbatch_fill(&tight, &sh, idx, &dc, &sp, table, 2, 1, 0);
        cr_assert_gt(full.batch.M, 40);
        cr_expect_leq(tight.batch.M, 20);
        cr_expect_geq(tight.batch.M, 20 - 2 * wwm, "the bound left room: %d", tight.batch.M);
        uint8_t scored[8 * 32] = {0};
        int32_t orig[8 * 32];
        memcpy(orig, full.ids, sizeof orig);
        for (int i = 0; i < full.batch.M; i++) orig[full.rows[i]] = full.labels[i];
        for (int i = 0; i < tight.batch.M; i++) scored[tight.rows[i]] = 1;
        for (int p = 0; p < 8 * 32; p++) {
            if (!scored[p]) cr_assert_eq(tight.ids[p], orig[p], "wwm %d: position %d masked but not scored", wwm, p);
            else cr_assert_eq(tight.ids[p], sp.mask);
            // whole words: a scored continuation piece has the piece before it scored
            if (wwm && scored[p] && p % 32 && !table[orig[p]])
                cr_assert(scored[p - 1], "piece %d scored without the word's start", p);
        }
        mlm_microbatch_free(&full);
        mlm_microbatch_free(&tight);
    }
    free(table);
    mlm_shards_close(&sh);
}

/* ---- whole-word masking needs its vocabulary: errors before any work ---- */

TestSuite(wwm_errors, .init = make_tmpdir, .fini = rm_tmpdir);

Test(wwm_errors, no_vocabulary_names_both_keys) {
    mlm_config c;
    char err[1024];
    const char *sets[] = {"data.whole_word_mask=1"};
    cr_assert_eq(mlm_config_load(&c, NULL, sets, 1, err, sizeof err), -1);
    cr_expect(strstr(err, "data.whole_word_mask") && strstr(err, "data.vocab"), "%s", err);
    const char *ok[] = {"data.whole_word_mask=1", "data.vocab=v.txt"};
    cr_expect_eq(mlm_config_load(&c, NULL, ok, 2, err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.data.whole_word_mask, 1);
}

/* A run whose shards cannot say their vocabulary, or whose architecture does not
 * match the vocabulary, stops at once with exit 2 and writes nothing. */
Test(wwm_errors, train_refuses_before_any_work) {
    static char out[1 << 14];
    int32_t ids[4 * 16];
    for (int i = 0; i < 4 * 16; i++) ids[i] = 1000 + i;
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/anon.shard", tmpdir);
    cr_assert_eq(mlm_shard_write(path, ids, 4, 16, 2, 0, err, sizeof err), 0, "%s", err);
    write_file("t.ini", "[model]\nhidden_size = 32\nnum_heads = 2\nintermediate_size = 64\n"
               "[data]\ntrain = anon.shard\nseq_len = 16\n[train]\nmicro_batch = 4\nbatch = 4\nsteps = 1\n"
               "out_dir = run\n");
    char args[1024];
    snprintf(args, sizeof args, "train --config t.ini --device cpu --set data.whole_word_mask=1 --set data.vocab=%s",
             SAMPLE "/vocab.txt");
    cr_expect_eq(run_mlmgpu("", args, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "anon.shard") && strstr(out, "whole_word_mask"), "%s", out);
    // roberta with a vocab.txt, bert with a vocab.json: both keys named
    snprintf(args, sizeof args, "train --config t.ini --device cpu --set model.architecture=roberta --set data.vocab=%s",
             SAMPLE "/vocab.txt");
    cr_expect_eq(run_mlmgpu("", args, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "model.architecture") && strstr(out, "data.vocab"), "%s", out);
    snprintf(args, sizeof args, "train --config t.ini --device cpu --set data.vocab=%s",
             MLM_SOURCE_ROOT "/tests/fixtures/bpe_vocab/vocab.json");
    cr_expect_eq(run_mlmgpu("", args, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "model.architecture") && strstr(out, "data.vocab") && strstr(out, "vocab.json"), "%s", out);
    // RoBERTa's standard vocabulary pads with 1: shards padded with 0 do not fit it
    cr_expect_eq(run_mlmgpu("", "train --config t.ini --device cpu --set model.architecture=roberta", out, sizeof out),
                 2, "%s", out);
    cr_expect(strstr(out, "anon.shard") && strstr(out, "pad"), "%s", out);
    char run[256];
    tmp_path(run, sizeof run, "run");
    cr_expect_neq(access(run, F_OK), 0, "a refused run created its out_dir");
}
