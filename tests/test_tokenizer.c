/*
 * Tokenizer parity with HF BertTokenizerFast (fixtures from
 * tests/reference/make_tokenizer_fixtures.py): every line of the sample with the
 * bert-base-uncased and a cased vocabulary, with and without [CLS]/[SEP]; every
 * code point's normalisation and pre-tokenisation, and that of every pair of
 * combining marks; the sample's words before WordPiece; invalid UTF-8 as Python's
 * decode(errors="replace") reads it. Then what no fixture covers: random bytes,
 * the 100-character word limit, special tokens in the text, concurrent calls, bad
 * vocabularies, and the `mlmgpu tokenize` command.
 */
#include <criterion/criterion.h>

#include "common.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "mlm/data.h"
#include "mlm/fileio.h"
#include "mlm/tokenizer.h"

#define FIX MLM_SOURCE_ROOT "/tests/fixtures/"
#define UNCASED_VOCAB MLM_SOURCE_ROOT "/data/sample/vocab.txt"
#define CASED_VOCAB FIX "tokenizer_vocab_cased.txt"

/* ---- helpers ---- */

typedef struct {
    mlm_vocab vocab;
    mlm_tokenizer *tok;
} loaded;

static loaded load(const char *path, int cased) {
    loaded l;
    char err[512];
    cr_assert_eq(mlm_vocab_load(&l.vocab, path, err, sizeof err), 0, "%s", err);
    l.tok = mlm_tokenizer_new(&l.vocab, cased, err, sizeof err);
    cr_assert_not_null(l.tok, "%s", err);
    return l;
}

static void unload(loaded *l) {
    mlm_tokenizer_free(l->tok);
    mlm_vocab_free(&l->vocab);
}

static char *slurp(const char *path, size_t *n) {
    char *buf, err[512];
    cr_assert_eq(mlm_read_file(path, &buf, n, err, sizeof err), 0, "%s", err);
    return buf;
}

/* Splits buf in place at '\n' (a final newline ends the last line); returns the
 * number of lines, their starts in line[] and lengths in len[]. */
static int split_lines(char *buf, size_t n, char **line, size_t *len, int max) {
    int count = 0;
    for (size_t at = 0; at < n && count < max;) {
        char *nl = memchr(buf + at, '\n', n - at);
        size_t end = nl ? (size_t)(nl - buf) : n;
        line[count] = buf + at;
        len[count++] = end - at;
        at = end + 1;
    }
    return count;
}

static size_t tokenize(const loaded *l, const char *text, size_t len, int32_t **ids, size_t *cap) {
    size_t n = 0;
    mlm_tokenize(l->tok, text, len, ids, &n, cap);
    return n;
}

/* ---- parity with HF on the sample text ---- */

#define MAX_LINES 256
#define MAX_IDS 4096

static void check_sample(const char *vocab, int cased, const char *ids_file, int special) {
    loaded l = load(vocab, cased);
    size_t nt, ni, cap = 0;
    char *text = slurp(FIX "tokenizer_sample.txt", &nt), *want = slurp(ids_file, &ni);
    static char *tline[MAX_LINES], *wline[MAX_LINES];
    static size_t tlen[MAX_LINES], wlen[MAX_LINES];
    int lines = split_lines(text, nt, tline, tlen, MAX_LINES);
    int wlines = split_lines(want, ni, wline, wlen, MAX_LINES);
    cr_assert(wlines > 10 && (special ? wlines <= lines : wlines == lines), "%s: %d lines for %d", ids_file, wlines,
              lines);
    int32_t *ids = NULL, expected[MAX_IDS];
    for (int i = 0; i < wlines; i++) {
        size_t n = 0;
        if (special) mlm_encode(l.tok, tline[i], tlen[i], &ids, &n, &cap);
        else mlm_tokenize(l.tok, tline[i], tlen[i], &ids, &n, &cap);
        size_t m = parse_ids(wline[i], wlen[i], expected, MAX_IDS);
        expect_ids(ids, n, expected, m, ids_file, i + 1);
    }
    free(ids);
    free(text);
    free(want);
    unload(&l);
}

Test(tokenizer, sample_uncased_like_hf) { check_sample(UNCASED_VOCAB, 0, FIX "tokenizer_sample.uncased.ids", 0); }
Test(tokenizer, sample_cased_like_hf) { check_sample(CASED_VOCAB, 1, FIX "tokenizer_sample.cased.ids", 0); }
Test(tokenizer, sample_with_specials_like_hf) {
    check_sample(UNCASED_VOCAB, 0, FIX "tokenizer_sample.uncased.special.ids", 1);
    check_sample(CASED_VOCAB, 1, FIX "tokenizer_sample.cased.special.ids", 1);
}

/* The words themselves, before any vocabulary: [UNK] cannot hide a difference. */
typedef struct {
    char buf[8192];
    size_t n;
} joined;

static void join_word(void *ctx, const char *w, size_t n) {
    joined *j = ctx;
    if (j->n && j->n < sizeof j->buf) j->buf[j->n++] = ' ';
    if (j->n + n < sizeof j->buf) memcpy(j->buf + j->n, w, n), j->n += n;
}

static void check_words(int cased, const char *words_file) {
    size_t nt, nw;
    char *text = slurp(FIX "tokenizer_sample.txt", &nt), *want = slurp(words_file, &nw);
    static char *tline[MAX_LINES], *wline[MAX_LINES];
    static size_t tlen[MAX_LINES], wlen[MAX_LINES];
    int lines = split_lines(text, nt, tline, tlen, MAX_LINES);
    cr_assert_eq(split_lines(want, nw, wline, wlen, MAX_LINES), lines, "%s", words_file);
    for (int i = 0; i < lines; i++) {
        static joined j;
        j.n = 0;
        mlm_pretokenize(tline[i], tlen[i], cased, join_word, &j);
        cr_expect(j.n == wlen[i] && !memcmp(j.buf, wline[i], j.n), "%s line %d:\n got  %.*s\n want %.*s",
                  words_file, i + 1, (int)j.n, j.buf, (int)wlen[i], wline[i]);
    }
    free(text);
    free(want);
}

Test(tokenizer, sample_words_like_hf) {
    check_words(0, FIX "tokenizer_sample.uncased.words");
    check_words(1, FIX "tokenizer_sample.cased.words");
}

/* ---- every code point, hashed per block as the fixture script does ---- */

#define BLOCK 4096

typedef struct {
    uint64_t hash;
} block_hash;

static void hash_word(void *ctx, const char *w, size_t n) {
    block_hash *h = ctx;
    h->hash = mlm_fnv1a(h->hash, w, n);
    h->hash = mlm_fnv1a(h->hash, "\x01", 1);
}

static size_t utf8(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    size_t n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (size_t i = n - 1; i > 0; i--, cp >>= 6) o[i] = (char)(0x80 | (cp & 63));
    o[0] = (char)((0xF00 >> n & 0xFF) | cp); // lead byte: n ones, then the high bits
    return n;
}

/* Pre-tokens of "a" c "b" for every c of the block: each word then 0x01, then 0x02. */
static uint64_t codepoint_block(uint32_t first, int cased) {
    block_hash h = {MLM_FNV_OFFSET};
    for (uint32_t cp = first; cp < first + BLOCK && cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp < 0xE000) continue;
        char s[8] = {'a'};
        size_t n = 1 + utf8(cp, s + 1);
        s[n++] = 'b';
        mlm_pretokenize(s, n, cased, hash_word, &h);
        h.hash = mlm_fnv1a(h.hash, "\x02", 1);
    }
    return h.hash;
}

Test(tokenizer, every_code_point_like_hf) {
    FILE *f = fopen(FIX "tokenizer_codepoints.txt", "r");
    cr_assert_not_null(f);
    char mode[16];
    unsigned first;
    unsigned long long want;
    int blocks = 0, bad = 0;
    while (fscanf(f, "%15s %x %llx", mode, &first, &want) == 3) {
        uint64_t got = codepoint_block(first, !strcmp(mode, "cased"));
        blocks++;
        if (got == want) continue;
        if (++bad <= 10)
            cr_log_error("%s block U+%04X: differs from HF; see make_tokenizer_fixtures.py --dump U+%04X", mode,
                         first, first);
    }
    fclose(f);
    cr_expect_eq(blocks, 2 * 0x110000 / BLOCK);
    cr_expect_eq(bad, 0, "%d of %d code point blocks differ from HF", bad, blocks);
}

/* NFD reorders combining marks by class (and HF's NFD knows fewer marks than
 * utf8proc): every pair of marks, "x" a b "y", uncased. */
Test(tokenizer, every_pair_of_combining_marks_like_hf) {
    FILE *f = fopen(FIX "tokenizer_mark_pairs.txt", "r");
    cr_assert_not_null(f);
    static uint32_t mark[4096];
    static unsigned long long want[4096];
    int n = 0, bad = 0;
    while (n < 4096 && fscanf(f, "%x %llx", &mark[n], &want[n]) == 2) n++;
    fclose(f);
    cr_assert_gt(n, 500);
    for (int a = 0; a < n; a++) {
        block_hash h = {MLM_FNV_OFFSET};
        for (int b = 0; b < n; b++) {
            char s[12] = {'x'};
            size_t len = 1 + utf8(mark[a], s + 1);
            len += utf8(mark[b], s + len);
            s[len++] = 'y';
            mlm_pretokenize(s, len, 0, hash_word, &h);
            h.hash = mlm_fnv1a(h.hash, "\x02", 1);
        }
        if (h.hash != want[a] && ++bad <= 10) cr_log_error("pairs starting with U+%04X differ from HF", mark[a]);
    }
    cr_expect_eq(bad, 0, "%d of %d marks pair differently from HF", bad, n);
}

/* ---- invalid UTF-8 ---- */

Test(tokenizer, invalid_utf8_like_python_replace) {
    loaded l = load(UNCASED_VOCAB, 0);
    size_t n, cap = 0;
    char *text = slurp(FIX "tokenizer_fuzz.txt", &n);
    static char *line[1024];
    static size_t len[1024];
    int lines = split_lines(text, n, line, len, 1024);
    cr_assert_geq(lines, 100);
    int32_t *ids = NULL, want[MAX_IDS];
    for (int i = 0; i < lines; i++) {
        char *tab = memchr(line[i], '\t', len[i]), raw[512];
        cr_assert_not_null(tab, "tokenizer_fuzz.txt line %d: no tab", i + 1);
        size_t nraw = unhex(line[i], (size_t)(tab - line[i]), raw);
        size_t got = tokenize(&l, raw, nraw, &ids, &cap);
        size_t m = parse_ids(tab + 1, len[i] - (size_t)(tab + 1 - line[i]), want, MAX_IDS);
        expect_ids(ids, got, want, m, "tokenizer_fuzz.txt", i + 1);
    }
    free(ids);
    free(text);
    unload(&l);
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

Test(tokenizer, random_bytes_never_crash) {
    loaded l[2] = {load(UNCASED_VOCAB, 0), load(CASED_VOCAB, 1)};
    uint64_t seed = 42;
    int32_t *ids = NULL;
    size_t cap = 0;
    char buf[1024];
    clock_t t0 = clock();
    for (int i = 0; i < 4000; i++) {
        size_t n = rng_next(&seed) % (i % 10 ? 64 : sizeof buf);
        for (size_t k = 0; k < n; k++) buf[k] = (char)rng_next(&seed);
        const loaded *t = &l[i & 1];
        size_t got = tokenize(t, buf, n, &ids, &cap);
        for (size_t k = 0; k < got; k++)
            cr_assert(ids[k] >= 0 && ids[k] < t->vocab.count, "string %d: id %d out of range", i, ids[k]);
    }
    double seconds = (double)(clock() - t0) / CLOCKS_PER_SEC;
    cr_expect_lt(seconds, 5.0, "4000 random strings took %.2f s", seconds);
    free(ids);
    unload(&l[0]);
    unload(&l[1]);
}

/* Documented behaviour: a byte that does not start a well-formed sequence is
 * U+FFFD, which clean_text drops. So invalid pieces put between characters leave
 * the ids unchanged ('[' is left out: a dropped byte inside "[MASK]" does split it). */
Test(tokenizer, invalid_bytes_between_characters_vanish) {
    static const char *valid[] = {"a",          "Z",        "\xc3\xa9", "\xc3\xbc", "\xe4\xb8\xad", "\xe2\x82\xac",
                                  "\xf0\x9f\x98\x80", "\xcc\x81", " ",        ".",        "-",            "\xc3\x9f",
                                  "\xc4\xb0",     "\xce\xa3", "\xef\xac\x81", "\t",       "7"};
    static const char *invalid[] = {"\xff", "\xfe", "\xc0\xaf", "\xe2\x82", "\xf0\x9f\x98", "\xed\xa0\x80", "\x80",
                                    "\xbf", "\xf4\x90\x80\x80", "\xc3", "\xe0\x80\xaf", "\xf5"};
    loaded l[2] = {load(UNCASED_VOCAB, 0), load(CASED_VOCAB, 1)};
    uint64_t seed = 7;
    int32_t *a = NULL, *b = NULL;
    size_t cap_a = 0, cap_b = 0;
    for (int i = 0; i < 3000; i++) {
        char clean[256], dirty[512];
        size_t nc = 0, nd = 0;
        for (int k = (int)(rng_next(&seed) % 24); k > 0; k--) {
            if (rng_next(&seed) % 3 == 0) {
                const char *bad = invalid[rng_next(&seed) % (sizeof invalid / sizeof *invalid)];
                memcpy(dirty + nd, bad, strlen(bad)), nd += strlen(bad);
            }
            const char *ch = valid[rng_next(&seed) % (sizeof valid / sizeof *valid)];
            memcpy(clean + nc, ch, strlen(ch)), nc += strlen(ch);
            memcpy(dirty + nd, ch, strlen(ch)), nd += strlen(ch);
        }
        if (rng_next(&seed) % 2) memcpy(dirty + nd, "\xe2\x82", 2), nd += 2; // truncated at the very end
        const loaded *t = &l[i & 1];
        size_t na = tokenize(t, clean, nc, &a, &cap_a), nb = tokenize(t, dirty, nd, &b, &cap_b);
        expect_ids(b, nb, a, na, "random string with invalid bytes", i);
    }
    free(a);
    free(b);
    unload(&l[0]);
    unload(&l[1]);
}

/* ---- edge cases ---- */

Test(tokenizer, empty_and_whitespace_only) {
    loaded l = load(UNCASED_VOCAB, 0);
    int32_t *ids = NULL;
    size_t cap = 0, n = 0;
    cr_expect_eq(tokenize(&l, "", 0, &ids, &cap), 0);
    cr_expect_eq(tokenize(&l, " \t\r\n \xe3\x80\x80\xc2\xa0", 10, &ids, &cap), 0);
    cr_expect_eq(tokenize(&l, "\x01\x7f\xe2\x80\x8b\xef\xbb\xbf", 8, &ids, &cap), 0, "controls and zero-width only");
    mlm_special_ids sp = mlm_tokenizer_special(l.tok);
    cr_expect_eq(mlm_encode(l.tok, "", 0, &ids, &n, &cap), 2);
    cr_expect(ids[0] == sp.cls && ids[1] == sp.sep, "empty text encodes as [CLS] [SEP]: %d %d", ids[0], ids[1]);
    free(ids);
    unload(&l);
}

static void repeat(char *out, const char *unit, int times) {
    out[0] = 0;
    for (int i = 0; i < times; i++) strcat(out, unit);
}

static int is_single_unk(const loaded *l, const char *text, int32_t **ids, size_t *cap) {
    size_t n = tokenize(l, text, strlen(text), ids, cap);
    return n == 1 && (*ids)[0] == mlm_tokenizer_special(l->tok).unk;
}

/* HF's WordPiece makes a word of more than 100 characters (counted after
 * normalisation) one [UNK]. */
Test(tokenizer, words_of_100_and_101_characters) {
    loaded u = load(UNCASED_VOCAB, 0), c = load(CASED_VOCAB, 1);
    static char text[1 << 20];
    int32_t *ids = NULL;
    size_t cap = 0;
    repeat(text, "a", 100);
    cr_expect(!is_single_unk(&u, text, &ids, &cap), "100 characters: split into pieces");
    repeat(text, "a", 101);
    cr_expect(is_single_unk(&u, text, &ids, &cap), "101 characters: [UNK]");
    repeat(text, "e\xcc\x81", 100); // e + combining acute: the accent goes, 100 characters stay
    cr_expect(!is_single_unk(&u, text, &ids, &cap), "100 characters after stripping accents");
    repeat(text, "e\xcc\x81", 101);
    cr_expect(is_single_unk(&u, text, &ids, &cap), "101 characters after stripping accents");
    repeat(text, "e\xcc\x81", 50); // cased keeps the marks: 100 characters
    cr_expect(!is_single_unk(&c, text, &ids, &cap), "cased: 50 e + accent = 100 characters");
    repeat(text, "e\xcc\x81", 51);
    cr_expect(is_single_unk(&c, text, &ids, &cap), "cased: 51 e + accent = 102 characters");
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = 0;
    cr_expect(is_single_unk(&u, text, &ids, &cap), "a word of 1 MB");
    free(ids);
    unload(&u);
    unload(&c);
}

Test(tokenizer, special_tokens_written_in_text) {
    loaded l = load(UNCASED_VOCAB, 0);
    mlm_special_ids sp = mlm_tokenizer_special(l.tok);
    int32_t *ids = NULL;
    size_t cap = 0;
    const char *text = "paris is the [MASK] of france.";
    size_t n = tokenize(&l, text, strlen(text), &ids, &cap);
    cr_assert_eq(n, 7);
    cr_expect_eq(ids[3], sp.mask);
    n = tokenize(&l, "[mask]", 6, &ids, &cap); // specials match as written, before lowercasing
    cr_expect(n == 3 && ids[1] != sp.mask, "[mask] is three tokens");
    n = tokenize(&l, "x[SEP]y", 7, &ids, &cap);
    cr_expect(n == 3 && ids[1] == sp.sep, "[SEP] inside a word");
    free(ids);
    unload(&l);
}

/* ---- concurrency and construction ---- */

typedef struct {
    const loaded *l;
    const char *text;
    size_t len;
    size_t count;
    uint64_t hash;
} worker;

static void *tokenize_many(void *arg) {
    worker *w = arg;
    int32_t *ids = NULL;
    size_t cap = 0;
    w->hash = MLM_FNV_OFFSET;
    for (int rep = 0; rep < 20; rep++) {
        size_t n = tokenize(w->l, w->text, w->len, &ids, &cap);
        w->count += n;
        w->hash = mlm_fnv1a(w->hash, ids, n * sizeof(int32_t));
    }
    free(ids);
    return NULL;
}

Test(tokenizer, concurrent_calls_agree) {
    loaded l = load(UNCASED_VOCAB, 0);
    size_t n;
    char *text = slurp(FIX "tokenizer_sample.txt", &n);
    worker one = {&l, text, n, 0, 0}, w[4];
    tokenize_many(&one);
    pthread_t tid[4];
    for (int i = 0; i < 4; i++) {
        w[i] = one;
        w[i].count = 0;
        cr_assert_eq(pthread_create(&tid[i], NULL, tokenize_many, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(tid[i], NULL);
        cr_expect(w[i].count == one.count && w[i].hash == one.hash, "thread %d disagrees", i);
    }
    free(text);
    unload(&l);
}

Test(tokenizer, vocabulary_without_unk_is_refused) {
    char *tokens[] = {"[PAD]", "[CLS]", "[SEP]", "[MASK]", "a"};
    mlm_vocab v = {5, tokens, NULL};
    char err[256] = "";
    cr_expect_null(mlm_tokenizer_new(&v, 0, err, sizeof err));
    cr_expect(strstr(err, "[UNK]") != NULL, "error names the missing token: %s", err);
}

/* ---- mlmgpu tokenize ---- */

Test(cli_tokenize, ids_and_tokens) {
    char out[4096];
    cr_expect_eq(run_shell("printf 'Hello, world!\\nsecond line\\n' | " MLM_BIN " tokenize --vocab " UNCASED_VOCAB
                     " --tokens", out, sizeof out), 0, "%s", out);
    cr_expect_str_eq(out, "[CLS] hello , world ! [SEP]\n[CLS] second line [SEP]\n");
    cr_expect_eq(run_shell("printf 'Hello, world!' | " MLM_BIN " tokenize --vocab " UNCASED_VOCAB " --no-special", out,
                     sizeof out), 0, "%s", out);
    cr_expect_str_eq(out, "7592 1010 2088 999\n");
    cr_expect_eq(run_shell("printf 'Hello' | " MLM_BIN " tokenize --vocab " CASED_VOCAB " --cased --tokens", out,
                     sizeof out), 0, "%s", out);
    cr_expect(strncmp(out, "[CLS] H", 7) == 0, "cased keeps the capital: %s", out);
    cr_expect_eq(run_shell(MLM_BIN " tokenize --help", out, sizeof out), 0);
    cr_expect(strstr(out, "usage: mlmgpu tokenize") != NULL, "%s", out);
}

Test(cli_tokenize, bad_arguments_and_vocabularies) {
    char out[4096];
    cr_expect_eq(run_shell(MLM_BIN " tokenize --vocab " UNCASED_VOCAB " --bogus < /dev/null", out, sizeof out), 2);
    cr_expect(strstr(out, "unknown argument '--bogus'") != NULL, "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " tokenize < /dev/null", out, sizeof out), 2);
    cr_expect(strstr(out, "--vocab FILE is required") != NULL, "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " tokenize --vocab < /dev/null", out, sizeof out), 2);
    cr_expect(strstr(out, "--vocab needs a value") != NULL, "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " tokenize --vocab /nonexistent/vocab.txt < /dev/null", out, sizeof out), 2);
    cr_expect(strstr(out, "/nonexistent/vocab.txt") != NULL, "names the file: %s", out);
    char dir[] = "/tmp/mlm_tok_XXXXXX", cmd[512];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "printf 'a\\nb\\n' > %s/v.txt && " MLM_BIN " tokenize --vocab %s/v.txt < /dev/null",
             dir, dir);
    cr_expect_eq(run_shell(cmd, out, sizeof out), 2);
    cr_expect(strstr(out, "v.txt") && strstr(out, "[PAD]"), "names the file and the missing token: %s", out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}
