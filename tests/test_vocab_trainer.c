/*
 * The WordPiece vocab trainer against HF's BertWordPieceTokenizer.train: a 2000
 * token vocabulary trained on tests/fixtures/vocab_corpus must tokenize the
 * held-out text with tokens per word and [UNK] rate within 5% of HF's
 * (tests/fixtures/vocab_trainer_hf_stats.txt, from
 * tests/reference/make_tokenizer_fixtures.py). Then the structure (specials first,
 * no duplicates, the size asked for or less when nothing is left to merge), the
 * determinism across thread counts and input order, and every error named.
 *
 * The byte-level BPE trainer (--type bpe) against HF's ByteLevelBPETokenizer.train
 * and save_model: vocab.json and merges.txt byte for byte on the cases of
 * tests/fixtures/bpe_trainer/cases.txt (from
 * tests/reference/make_bpe_trainer_fixtures.py), whatever the thread count and the
 * order of the files; its errors; and the pair of files written all or nothing.
 */
#include <criterion/criterion.h>

#include "common.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mlm/data.h"
#include "mlm/fileio.h"
#include "mlm/tokenizer.h"
#include "mlm/vocab_trainer.h"

#define FIX MLM_SOURCE_ROOT "/tests/fixtures/"
#define CORPUS FIX "vocab_corpus"

static mlm_vocab_train_opts opts(int vocab_size, int cased, int threads) {
    return (mlm_vocab_train_opts){.vocab_size = vocab_size, .cased = cased, .min_frequency = 2, .threads = threads};
}

static mlm_trained_vocab train_ok(const char *const *inputs, int n, mlm_vocab_train_opts o) {
    mlm_trained_vocab v;
    char err[1024];
    cr_assert_eq(mlm_vocab_train(inputs, n, &o, &v, err, sizeof err), 0, "%s", err);
    return v;
}

static const char *train_error(const char *const *inputs, int n, mlm_vocab_train_opts o, char *err, size_t len) {
    mlm_trained_vocab v;
    cr_assert_eq(mlm_vocab_train(inputs, n, &o, &v, err, len), -1, "training should fail");
    return err;
}

/* ---- against HF ---- */

typedef struct {
    double tokens_per_word, unk_rate;
} heldout_stats;

static void count_word(void *ctx, const char *w, size_t n) { ++*(size_t *)ctx; }

static heldout_stats measure(const mlm_trained_vocab *tv, int cased) {
    mlm_vocab v = {tv->count, tv->tokens, NULL};
    char err[512], *text;
    size_t len;
    mlm_tokenizer *t = mlm_tokenizer_new(&v, cased, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_assert_eq(mlm_read_file(FIX "vocab_heldout.txt", &text, &len, err, sizeof err), 0, "%s", err);
    int32_t *ids = NULL;
    size_t n = 0, cap = 0, words = 0, unk = 0;
    mlm_tokenize(t, text, len, &ids, &n, &cap);
    mlm_pretokenize(text, len, cased, count_word, &words);
    for (size_t i = 0; i < n; i++) unk += ids[i] == mlm_tokenizer_special(t).unk;
    free(ids);
    free(text);
    mlm_tokenizer_free(t);
    return (heldout_stats){(double)n / (double)words, (double)unk / (double)n};
}

static heldout_stats hf_stats(const char *mode) {
    FILE *f = fopen(FIX "vocab_trainer_hf_stats.txt", "r");
    cr_assert_not_null(f);
    char line[512], name[32];
    heldout_stats s = {0, -1};
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%31s", name) == 1 && !strcmp(name, mode)) {
            const char *tpw = strstr(line, "tokens_per_word "), *unk = strstr(line, "unk_rate ");
            cr_assert(tpw && unk, "bad line: %s", line);
            s = (heldout_stats){atof(tpw + 16), atof(unk + 9)};
        }
    fclose(f);
    cr_assert_geq(s.unk_rate, 0, "no %s line in vocab_trainer_hf_stats.txt", mode);
    return s;
}

static void compare_with_hf(int cased) {
    const char *inputs[] = {CORPUS};
    mlm_trained_vocab v = train_ok(inputs, 1, opts(2000, cased, 2));
    heldout_stats ours = measure(&v, cased), hf = hf_stats(cased ? "cased" : "uncased");
    cr_log_info("%s: tokens/word %.4f (HF %.4f), [UNK] rate %.5f (HF %.5f)", cased ? "cased" : "uncased",
                ours.tokens_per_word, hf.tokens_per_word, ours.unk_rate, hf.unk_rate);
    cr_expect_leq(fabs(ours.tokens_per_word - hf.tokens_per_word), 0.05 * hf.tokens_per_word,
                  "tokens per word %.4f, HF %.4f", ours.tokens_per_word, hf.tokens_per_word);
    cr_expect_leq(fabs(ours.unk_rate - hf.unk_rate), 0.05 * hf.unk_rate + 1e-12, "[UNK] rate %.5f, HF %.5f",
                  ours.unk_rate, hf.unk_rate);
    cr_expect_eq(v.count, 2000);
    mlm_trained_vocab_free(&v);
}

Test(vocab_trainer, uncased_close_to_hf) { compare_with_hf(0); }
Test(vocab_trainer, cased_close_to_hf) { compare_with_hf(1); }

/* ---- structure and determinism ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

Test(vocab_trainer, specials_first_no_duplicates_alphabet_before_merges) {
    const char *inputs[] = {CORPUS};
    mlm_trained_vocab v = train_ok(inputs, 1, opts(1500, 0, 2));
    const char *specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 0; i < 5; i++) cr_expect_str_eq(v.tokens[i], specials[i]);
    cr_expect_eq(v.count, 1500);
    cr_expect_eq(v.count, 5 + v.alphabet + v.continuations + v.merges, "every merge made a new token here");
    for (int i = 5; i < 5 + v.alphabet; i++) cr_expect_leq(strlen(v.tokens[i]), 4, "alphabet token %d", i);
    for (int i = 5 + v.alphabet; i < 5 + v.alphabet + v.continuations; i++)
        cr_expect(!strncmp(v.tokens[i], "##", 2) && strlen(v.tokens[i]) > 2, "token %d: %s", i, v.tokens[i]);
    char **sorted = malloc((size_t)v.count * sizeof(char *));
    memcpy(sorted, v.tokens, (size_t)v.count * sizeof(char *));
    qsort(sorted, (size_t)v.count, sizeof(char *), cmp_str);
    for (int i = 1; i < v.count; i++) cr_expect_str_neq(sorted[i - 1], sorted[i], "duplicate token");
    for (int i = 0; i < v.count; i++) cr_expect(strlen(v.tokens[i]) && !strpbrk(v.tokens[i], " \n\t\r"), "%d", i);
    free(sorted);
    mlm_trained_vocab_free(&v);
}

static void expect_same(const mlm_trained_vocab *a, const mlm_trained_vocab *b, const char *what) {
    cr_expect_eq(a->count, b->count, "%s: %d vs %d tokens", what, a->count, b->count);
    for (int i = 0; i < a->count && i < b->count; i++)
        if (strcmp(a->tokens[i], b->tokens[i])) {
            cr_expect_fail("%s: token %d: %s vs %s", what, i, a->tokens[i], b->tokens[i]);
            return;
        }
}

Test(vocab_trainer, deterministic_across_threads_runs_and_input_order) {
    const char *whole[] = {CORPUS};
    const char *parts[] = {CORPUS "/perlobj.txt", CORPUS "/more", CORPUS "/perlintro.txt"};
    mlm_trained_vocab one = train_ok(whole, 1, opts(2000, 0, 1));
    mlm_trained_vocab again = train_ok(whole, 1, opts(2000, 0, 1));
    mlm_trained_vocab three = train_ok(whole, 1, opts(2000, 0, 3));
    mlm_trained_vocab shuffled = train_ok(parts, 3, opts(2000, 0, 2));
    expect_same(&one, &again, "second run");
    expect_same(&one, &three, "3 threads");
    expect_same(&one, &shuffled, "inputs in another order");
    mlm_trained_vocab_free(&one);
    mlm_trained_vocab_free(&again);
    mlm_trained_vocab_free(&three);
    mlm_trained_vocab_free(&shuffled);
}

/* ---- small corpora in a temporary directory ---- */

/* tmpdir/name holding text; the path stays valid until the next call. */
static const char *write_tmp(const char *name, const char *text) {
    static char path[256];
    write_file(name, text);
    tmp_path(path, sizeof path, name);
    return path;
}

static int has_token(const mlm_trained_vocab *v, const char *t) {
    for (int i = 0; i < v->count; i++)
        if (!strcmp(v->tokens[i], t)) return 1;
    return 0;
}

Test(vocab_trainer, stops_when_nothing_is_left_to_merge, .init = make_tmpdir, .fini = rm_tmpdir) {
    const char *inputs[] = {write_tmp("tiny.txt", "low lower lowest newer wider\nlow lower lowest newer wider\n")};
    mlm_trained_vocab v = train_ok(inputs, 1, opts(1000, 0, 2));
    cr_expect_lt(v.count, 1000);
    const char *words[] = {"low", "lower", "lowest", "newer", "wider"};
    for (int i = 0; i < 5; i++) cr_expect(has_token(&v, words[i]), "every word became a token: %s", words[i]);
    mlm_vocab_train_opts o = opts(1000, 0, 2);
    o.min_frequency = 7; // the most frequent pairs (l ##o, ##o ##w, ##e ##r) are seen 6 times
    mlm_trained_vocab none = train_ok(inputs, 1, o);
    cr_expect_eq(none.merges, 0);
    cr_expect_eq(none.count, 5 + none.alphabet + none.continuations);
    o = opts(1000, 0, 1);
    o.limit_alphabet = 3;
    mlm_trained_vocab limited = train_ok(inputs, 1, o);
    cr_expect_eq(limited.alphabet, 3);
    cr_expect(has_token(&limited, "e") && has_token(&limited, "w") && has_token(&limited, "l"),
              "the three most frequent characters stay");
    mlm_trained_vocab_free(&v);
    mlm_trained_vocab_free(&none);
    mlm_trained_vocab_free(&limited);
}

Test(vocab_trainer, errors_name_the_culprit, .init = make_tmpdir, .fini = rm_tmpdir) {
    char err[1024];
    const char *missing[] = {"/nonexistent/corpus"};
    cr_expect(strstr(train_error(missing, 1, opts(100, 0, 1), err, sizeof err), "/nonexistent/corpus"), "%s", err);
    const char *device[] = {"/dev/null"};
    cr_expect(strstr(train_error(device, 1, opts(100, 0, 1), err, sizeof err), "not a regular file"), "%s", err);
    const char *empty[] = {write_tmp("empty.txt", "")};
    cr_expect(strstr(train_error(empty, 1, opts(100, 0, 1), err, sizeof err), "no words"), "%s", err);
    const char *blank[] = {write_tmp("blank.txt", " \n\t\n\x01\n")};
    cr_expect(strstr(train_error(blank, 1, opts(100, 0, 1), err, sizeof err), "no words"), "%s", err);
    const char *small[] = {write_tmp("abc.txt", "abc abd\n")};
    train_error(small, 1, opts(10, 0, 1), err, sizeof err); // 5 specials + a b c d + ##b ##c ##d = 12
    cr_expect(strstr(err, "vocab size 10") && strstr(err, "12 tokens"), "%s", err);
}

/* ---- mlmgpu vocab ---- */

Test(cli_vocab, writes_a_loadable_vocabulary, .init = make_tmpdir, .fini = rm_tmpdir) {
    char cmd[1024], out[8192], path[256], err[256];
    snprintf(path, sizeof path, "%s/vocab.txt", tmpdir);
    snprintf(cmd, sizeof cmd, MLM_BIN " vocab --input " CORPUS " --vocab-size 500 --out %s --threads 2", path);
    cr_assert_eq(run_shell(cmd, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "wrote 500 tokens"), "%s", out);
    mlm_vocab v;
    cr_assert_eq(mlm_vocab_load(&v, path, err, sizeof err), 0, "%s", err);
    cr_expect_eq(v.count, 500);
    cr_expect_str_eq(v.tokens[0], "[PAD]");
    mlm_vocab_free(&v);
    snprintf(cmd, sizeof cmd, "ls %s | wc -l", tmpdir);
    run_shell(cmd, out, sizeof out);
    cr_expect_str_eq(out, "1\n", "no temporary file left behind");
}

Test(cli_vocab, bad_arguments_exit_2) {
    char out[8192];
    cr_expect_eq(run_shell(MLM_BIN " vocab --input /nonexistent --vocab-size 100 --out /tmp/x.txt", out, sizeof out), 2);
    cr_expect(strstr(out, "/nonexistent"), "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " vocab --input " CORPUS " --vocab-size abc --out /tmp/x.txt", out, sizeof out), 2);
    cr_expect(strstr(out, "--vocab-size 'abc'"), "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " vocab --input " CORPUS " --vocab-size 50 --out /tmp/x.txt", out, sizeof out), 2);
    cr_expect(strstr(out, "initial vocabulary"), "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " vocab --input " CORPUS " --vocab-size 100", out, sizeof out), 2);
    cr_expect(strstr(out, "--out FILE is required"), "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " vocab --vocab-size 100 --out /tmp/x.txt", out, sizeof out), 2);
    cr_expect(strstr(out, "--input PATH is required"), "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " vocab --input " CORPUS " --vocab-size 100 --out /tmp/x.txt --threads 0", out,
                     sizeof out), 2);
    cr_expect(strstr(out, "--threads '0'"), "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " vocab --input " CORPUS " --vocab-size 100 --out /nonexistent/v.txt", out,
                     sizeof out), 2);
    cr_expect(strstr(out, "/nonexistent/v.txt"), "checked before training: %s", out);
    cr_expect_eq(run_shell(MLM_BIN " vocab --help", out, sizeof out), 0);
    cr_expect(strstr(out, "usage: mlmgpu vocab"), "%s", out);
}

/* ---- byte-level BPE against HF, byte for byte ---- */

#define BPE_FIX FIX "bpe_trainer/"

static mlm_vocab_train_opts bpe_opts(int vocab_size, uint64_t min_frequency, int threads) {
    return (mlm_vocab_train_opts){
        .type = MLM_VOCAB_BPE, .vocab_size = vocab_size, .min_frequency = min_frequency, .threads = threads};
}

/* Compares file a with file b byte for byte, naming the first byte that differs. */
static void expect_same_file(const char *a, const char *b) {
    char *x, *y, err[512];
    size_t nx, ny;
    cr_assert_eq(mlm_read_file(a, &x, &nx, err, sizeof err), 0, "%s", err);
    cr_assert_eq(mlm_read_file(b, &y, &ny, err, sizeof err), 0, "%s", err);
    size_t i = 0;
    while (i < nx && i < ny && x[i] == y[i]) i++;
    cr_expect(i == nx && i == ny, "%s: %zu bytes, HF's %s: %zu bytes; first difference at byte %zu: ...%.40s",
              a, nx, b, ny, i, x + (i > 20 ? i - 20 : 0));
    free(x);
    free(y);
}

/* Trains case name on inputs and compares the files written into tmpdir/out. */
static void expect_hf_files(const char *name, const char *const *inputs, int n, mlm_vocab_train_opts o,
                            const char *out) {
    char dir[256], mine[320], hf[320], err[1024];
    mlm_trained_vocab v = train_ok(inputs, n, o);
    tmp_path(dir, sizeof dir, out);
    cr_assert_eq(mlm_vocab_write_bpe(&v, dir, err, sizeof err), 0, "%s", err);
    const char *files[] = {"vocab.json", "merges.txt"};
    for (int k = 0; k < 2; k++) {
        snprintf(mine, sizeof mine, "%s/%s", dir, files[k]);
        snprintf(hf, sizeof hf, BPE_FIX "%s/%s", name, files[k]);
        expect_same_file(mine, hf);
    }
    cr_log_info("%s: %d tokens, %d merges: as HF's", name, v.count, v.merges);
    mlm_trained_vocab_free(&v);
}

Test(bpe_trainer, vocab_json_and_merges_txt_as_hf, .init = make_tmpdir, .fini = rm_tmpdir) {
    FILE *f = fopen(BPE_FIX "cases.txt", "r");
    cr_assert_not_null(f);
    char name[64], input[128], path[256];
    int vocab_size, cases = 0;
    unsigned long long min_frequency;
    while (fscanf(f, "%63s %127s %d %llu", name, input, &vocab_size, &min_frequency) == 4) {
        snprintf(path, sizeof path, FIX "%s", input);
        const char *inputs[] = {path};
        expect_hf_files(name, inputs, 1, bpe_opts(vocab_size, min_frequency, 2), name);
        cases++;
    }
    fclose(f);
    cr_expect_geq(cases, 6, "cases.txt lists %d cases", cases);
}

Test(bpe_trainer, same_for_any_thread_count_and_file_order, .init = make_tmpdir, .fini = rm_tmpdir) {
    const char *parts[] = {CORPUS "/perlobj.txt", CORPUS "/more/perlsyn.txt", CORPUS "/perlintro.txt",
                           CORPUS "/more/perldata.txt"};
    expect_hf_files("perl_2000", parts, 4, bpe_opts(2000, 2, 1), "one_thread");
    expect_hf_files("perl_2000", parts, 4, bpe_opts(2000, 2, 3), "three_threads");
}

Test(bpe_trainer, errors_name_the_culprit, .init = make_tmpdir, .fini = rm_tmpdir) {
    char err[1024];
    const char *small[] = {write_tmp("abc.txt", "abc abd\n")};
    train_error(small, 1, bpe_opts(260, 2, 1), err, sizeof err);
    cr_expect(strstr(err, "vocab size 260") && strstr(err, "261 tokens"), "%s", err);
    mlm_trained_vocab v = train_ok(small, 1, bpe_opts(261, 2, 1));
    cr_expect_eq(v.count, 261, "the specials and the 256 bytes, nothing merged");
    mlm_trained_vocab_free(&v);
    const char *bad[] = {write_tmp("bad.txt", "fine line\nsecond \xC3\x28 line\n")};
    train_error(bad, 1, bpe_opts(300, 2, 1), err, sizeof err);
    cr_expect(strstr(err, "bad.txt") && strstr(err, "byte 17") && strstr(err, "UTF-8"), "%s", err);
    const char *surrogate[] = {write_tmp("surrogate.txt", "ok \xED\xA0\x80\n")};
    train_error(surrogate, 1, bpe_opts(300, 2, 1), err, sizeof err);
    cr_expect(strstr(err, "byte 3"), "%s", err);
    const char *empty[] = {write_tmp("empty.txt", "")};
    cr_expect(strstr(train_error(empty, 1, bpe_opts(300, 2, 1), err, sizeof err), "no words"), "%s", err);
    const char *missing[] = {"/nonexistent/corpus"};
    cr_expect(strstr(train_error(missing, 1, bpe_opts(300, 2, 1), err, sizeof err), "/nonexistent/corpus"), "%s",
              err);
}

/* Counts the entries of tmpdir/sub (or tmpdir) other than . and .. */
static int entries(const char *sub) {
    char cmd[320], out[64];
    snprintf(cmd, sizeof cmd, "ls -A %s/%s | wc -l", tmpdir, sub);
    run_shell(cmd, out, sizeof out);
    return atoi(out);
}

static char *slurp(const char *path) {
    char *text, err[512];
    size_t n;
    cr_assert_eq(mlm_read_file(path, &text, &n, err, sizeof err), 0, "%s", err);
    return text;
}

Test(bpe_trainer, writes_the_pair_all_or_nothing, .init = make_tmpdir, .fini = rm_tmpdir) {
    char dir[256], path[320], err[1024];
    const char *one[] = {write_tmp("one.txt", "aaa bbb aaa bbb ccc\n")};
    mlm_trained_vocab v = train_ok(one, 1, bpe_opts(270, 1, 1));
    const char *two[] = {write_tmp("two.txt", "xyz xyz xyz\n")};
    mlm_trained_vocab w = train_ok(two, 1, bpe_opts(270, 1, 1));
    // a new directory appears with both files
    tmp_path(dir, sizeof dir, "out");
    cr_assert_eq(mlm_vocab_write_bpe(&v, dir, err, sizeof err), 0, "%s", err);
    cr_expect_eq(entries("out"), 2);
    cr_expect_eq(entries(""), 3, "one.txt two.txt out: no temporary directory left");
    // a failed rename (merges.txt is a directory here) leaves the old vocab.json
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    char *before = slurp(path);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(mkdir(path, 0777), 0);
    cr_expect_eq(mlm_vocab_write_bpe(&w, dir, err, sizeof err), -1);
    cr_expect(strstr(err, "merges.txt"), "%s", err);
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    char *after = slurp(path);
    cr_expect_str_eq(after, before, "vocab.json untouched when merges.txt could not be replaced");
    cr_expect_eq(entries("out"), 2, "no temporary file left");
    free(before);
    free(after);
    // into an existing directory, both files are replaced
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    cr_assert_eq(rmdir(path), 0);
    cr_expect_eq(mlm_vocab_write_bpe(&w, dir, err, sizeof err), 0, "%s", err);
    char *merges = slurp(path);
    cr_expect(strstr(merges, "#version: 0.2\nx y\n"), "%s", merges);
    free(merges);
    cr_expect_eq(entries("out"), 2);
    // a directory that cannot be made: nothing is left behind
    tmp_path(dir, sizeof dir, "no/such/dir");
    cr_expect_eq(mlm_vocab_write_bpe(&v, dir, err, sizeof err), -1);
    cr_expect(strstr(err, "no/such/dir"), "%s", err);
    cr_expect_eq(entries(""), 3);
    mlm_trained_vocab_free(&v);
    mlm_trained_vocab_free(&w);
}

Test(cli_vocab, bpe_writes_a_loadable_pair, .init = make_tmpdir, .fini = rm_tmpdir) {
    char cmd[1024], out[8192], dir[256], err[512];
    tmp_path(dir, sizeof dir, "bpe");
    snprintf(cmd, sizeof cmd, MLM_BIN " vocab --type bpe --input " CORPUS " --vocab-size 2000 --out %s --threads 2",
             dir);
    cr_assert_eq(run_shell(cmd, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "wrote 2000 tokens"), "%s", out);
    char mine[320];
    snprintf(mine, sizeof mine, "%s/vocab.json", dir);
    expect_same_file(mine, BPE_FIX "perl_2000/vocab.json");
    snprintf(mine, sizeof mine, "%s/merges.txt", dir);
    expect_same_file(mine, BPE_FIX "perl_2000/merges.txt");
    mlm_tokenizer *t = mlm_tokenizer_open(dir, 0, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_expect_eq(mlm_tokenizer_kind(t), MLM_TOK_BPE);
    cr_expect_eq(mlm_tokenizer_size(t), 2000);
    mlm_tokenizer_free(t);
}

Test(cli_vocab, bpe_bad_arguments_exit_2, .init = make_tmpdir, .fini = rm_tmpdir) {
    char cmd[1024], out[8192];
    write_file("file", "x");
    const struct {
        const char *args, *says;
    } bad[] = {
        {"--type foo --input " CORPUS " --vocab-size 300 --out %s/v", "--type 'foo'"},
        {"--type bpe --input " CORPUS " --vocab-size 300 --out %s/v --cased", "--cased"},
        {"--type bpe --input " CORPUS " --vocab-size 300 --out %s/v --limit-alphabet 10", "--limit-alphabet"},
        {"--type bpe --input " CORPUS " --vocab-size 100 --out %s/v", "initial byte-level BPE vocabulary"},
        {"--type bpe --input /nonexistent --vocab-size 300 --out %s/v", "/nonexistent"},
        {"--type bpe --input " CORPUS " --vocab-size 300 --out %s/file", "not a directory"},
        {"--type bpe --input " CORPUS " --vocab-size 300 --out %s/no/such", "no/such"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[512];
        snprintf(args, sizeof args, bad[i].args, tmpdir);
        snprintf(cmd, sizeof cmd, MLM_BIN " vocab %s", args);
        cr_expect_eq(run_shell(cmd, out, sizeof out), 2, "%s: %s", args, out);
        cr_expect(strstr(out, bad[i].says), "%s: %s", args, out);
    }
    cr_expect_eq(entries(""), 1, "nothing written but the file");
}
