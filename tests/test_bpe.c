/*
 * Byte-level BPE parity with HF (fixtures from tests/reference/make_bpe_fixtures.py):
 * hand-written edge cases and random bytes against RobertaTokenizerFast (with and
 * without <s> </s>), a held-out text against ByteLevelBPETokenizer, and the
 * pre-tokenizer's class of every code point against HF's regex. Then what no
 * fixture covers: Python's U+FFFD rule counted directly, the byte map, the lookup
 * API, concurrent calls, and every kind of bad vocab.json / merges.txt.
 */
#include <criterion/criterion.h>

#include "common.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/fileio.h"
#include "mlm/tokenizer.h"

#define FIX MLM_SOURCE_ROOT "/tests/fixtures/"
#define BPE_DIR FIX "bpe_vocab"

static mlm_tokenizer *open_bpe(void) {
    char err[512] = "";
    mlm_tokenizer *t = mlm_tokenizer_open(BPE_DIR, 0, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_assert_eq(mlm_tokenizer_kind(t), MLM_TOK_BPE);
    return t;
}

/* Pre-tokens as the fixture writes them: hex of each word's bytes, space-separated. */
typedef struct {
    char *out;
    size_t n;
} hex_words;

static void hex_word(void *ctx, const char *w, size_t n) {
    hex_words *h = ctx;
    if (h->n) h->out[h->n++] = ' ';
    for (size_t i = 0; i < n; i++) h->n += (size_t)sprintf(h->out + h->n, "%02x", (uint8_t)w[i]);
}

Test(bpe, cases_like_roberta) {
    mlm_tokenizer *t = open_bpe();
    size_t n;
    char *buf = read_path(FIX "bpe_cases.txt", &n);
    char *text = malloc(n), *words = malloc(8 * n);
    int32_t *want = malloc(n * sizeof(int32_t)), *ids = NULL;
    size_t cap = 0;
    int line = 0;
    for (char *p = buf, *end = buf + n; p < end; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *t1 = memchr(p, '\t', (size_t)(nl - p));
        char *t2 = memchr(t1 + 1, '\t', (size_t)(nl - t1 - 1));
        char *t3 = memchr(t2 + 1, '\t', (size_t)(nl - t2 - 1));
        size_t len = unhex(p, (size_t)(t1 - p), text);
        size_t nw = parse_ids(t1 + 1, (size_t)(t2 - t1 - 1), want, n), k = 0;
        mlm_tokenize(t, text, len, &ids, &k, &cap);
        expect_ids(ids, k, want, nw, "mlm_tokenize", line);
        nw = parse_ids(t2 + 1, (size_t)(t3 - t2 - 1), want, n);
        k = 0;
        mlm_encode(t, text, len, &ids, &k, &cap);
        expect_ids(ids, k, want, nw, "mlm_encode", line);
        hex_words h = {words, 0};
        mlm_bpe_pretokenize(text, len, hex_word, &h);
        cr_expect(h.n == (size_t)(nl - t3 - 1) && !memcmp(words, t3 + 1, h.n), "pre-tokens of case %d:\n%.*s\nHF:\n%.*s",
                  line, (int)h.n, words, (int)(nl - t3 - 1), t3 + 1);
        p = nl + 1;
    }
    cr_expect_gt(line, 400);
    free(ids);
    free(want);
    free(words);
    free(text);
    free(buf);
    mlm_tokenizer_free(t);
}

Test(bpe, heldout_text_like_bytelevel_bpe) {
    mlm_tokenizer *t = open_bpe();
    size_t n, m;
    char *text = read_path(FIX "vocab_heldout.txt", &n);
    char *idtext = read_path(FIX "bpe_heldout.ids", &m);
    int32_t *want = malloc(m * sizeof(int32_t)), *ids = NULL;
    size_t nw = parse_ids(idtext, m, want, m), k = 0, cap = 0;
    mlm_tokenize(t, text, n, &ids, &k, &cap);
    cr_expect_gt(nw, 5000);
    expect_ids(ids, k, want, nw, "vocab_heldout.txt", 0);
    free(ids);
    free(want);
    free(idtext);
    free(text);
    mlm_tokenizer_free(t);
}

/* ---- every code point's class ---- */

static void count_word(void *ctx, const char *w, size_t n) {
    (void)w, (void)n;
    ++*(int *)ctx;
}

static size_t utf8(uint32_t cp, char *o) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)),
               o[2] = (char)(0x80 | (cp & 0x3F)), 3;
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int pieces(char first, uint32_t cp) {
    char s[8] = {first};
    size_t n = 1 + utf8(cp, s + 1);
    int c = 0;
    mlm_bpe_pretokenize(s, n, count_word, &c);
    return c;
}

/* The class the fixture script infers, the same way. */
static char class_of(uint32_t cp) {
    return pieces('a', cp) == 1 ? 'L' : pieces('1', cp) == 1 ? 'N' : pieces('!', cp) == 1 ? 'O' : 'S';
}

Test(bpe, every_code_point_like_hf) {
    size_t n;
    char *buf = read_path(FIX "bpe_codepoints.txt", &n);
    int bad = 0;
    uint32_t covered = 0;
    for (char *p = buf, *end = buf + n; p < end;) {
        unsigned a, b;
        char c;
        cr_assert_eq(sscanf(p, "%x %x %c", &a, &b, &c), 3);
        for (uint32_t cp = a; cp <= b; cp++) {
            if (cp >= 0xD800 && cp < 0xE000) continue;
            covered++;
            char mine = class_of(cp);
            if (mine != c && bad++ < 40) cr_log_error("U+%04X: class %c here, %c in HF", cp, mine, c);
        }
        p = memchr(p, '\n', (size_t)(end - p)) + 1;
    }
    cr_expect_eq(covered, 0x110000 - 0x800, "the fixture covers every code point but surrogates");
    cr_expect_eq(bad, 0, "%d code points differ from HF", bad);
    free(buf);
}

/* ---- invalid UTF-8: one U+FFFD per maximal ill-formed subsequence (Python's rule) ---- */

typedef struct {
    char buf[256];
    size_t n;
} joined;

static void join_word(void *ctx, const char *w, size_t n) {
    joined *j = ctx;
    memcpy(j->buf + j->n, w, n);
    j->n += n;
}

static int count_fffd(const char *s, size_t n) {
    joined j = {.n = 0};
    mlm_bpe_pretokenize(s, n, join_word, &j);
    int c = 0;
    for (size_t i = 0; i + 2 < j.n + 1 && i + 3 <= j.n; i++) c += !memcmp(j.buf + i, "\xEF\xBF\xBD", 3);
    return c;
}

Test(bpe, invalid_utf8_like_python_replace) {
    // counts from Python: len(b.decode("utf-8", errors="replace").split("\ufffd")) - 1
    static const struct {
        const char *s;
        int fffd;
    } cases[] = {
        {"\xe2\x82", 1},         {"\xe2\x82x", 1},     {"\xf0\x9f\x98", 1},  {"\xf0\x9f\x98x", 1},
        {"\xe0\x80\xaf", 3},     {"\xed\xa0\x80", 3},  {"\xc0\xaf", 2},      {"\xf4\x90\x80\x80", 4},
        {"\x80\x80", 2},         {"\xff\xfe", 2},      {"\xef\xbf\xbd", 1},  {"\xf0\x9f\x98\x80", 0},
        {"\xe2\x82\xe2\x82", 2}, {"\xc3", 1},          {"\xf1\x80\x80", 1},  {"\xf4\x8f\xbf\xbf", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_expect_eq(count_fffd(cases[i].s, strlen(cases[i].s)), cases[i].fffd, "case %zu", i);
}

/* ---- the byte map and the lookup API ---- */

Test(bpe, byte_map_is_gpt2s) {
    int seen[512] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = mlm_bpe_byte_char((uint8_t)b);
        cr_assert_lt(cp, 512u);
        cr_expect_eq(seen[cp]++, 0, "byte %d maps to a character another byte has", b);
        cr_expect_eq(mlm_bpe_char_byte(cp), b);
    }
    cr_expect_eq(mlm_bpe_byte_char(' '), 0x120u);  // Ġ
    cr_expect_eq(mlm_bpe_byte_char('\n'), 0x10Au); // Ċ
    cr_expect_eq(mlm_bpe_byte_char('A'), (uint32_t)'A');
    cr_expect_eq(mlm_bpe_byte_char(0xAD), 0x143u);
    cr_expect_eq(mlm_bpe_char_byte(0x144), -1);
    cr_expect_eq(mlm_bpe_char_byte(0xAD), -1);
}

Test(bpe, lookups_decode_and_specials) {
    mlm_tokenizer *t = open_bpe();
    mlm_special_ids sp = mlm_tokenizer_special(t);
    // the trainer's order: <s> <pad> </s> <unk> <mask> = 0..4
    cr_expect_eq(sp.cls, 0);
    cr_expect_eq(sp.pad, 1);
    cr_expect_eq(sp.sep, 2);
    cr_expect_eq(sp.unk, 3);
    cr_expect_eq(sp.mask, 4);
    cr_expect_eq(sp.vocab_size, mlm_tokenizer_size(t));
    cr_expect_str_eq(mlm_tokenizer_token(t, 4), "<mask>");
    cr_expect_null(mlm_tokenizer_token(t, mlm_tokenizer_size(t)));
    int the = mlm_tokenizer_find(t, "\xC4\xA0the"); // "Ġthe"
    cr_assert_geq(the, 0);
    cr_expect_str_eq(mlm_tokenizer_token(t, the), "\xC4\xA0the");
    cr_expect_eq(mlm_tokenizer_find(t, "no such token"), -1);
    cr_expect(mlm_tokenizer_word_start(t, the));
    cr_expect(mlm_tokenizer_word_start(t, sp.mask));
    cr_expect(!mlm_tokenizer_word_start(t, mlm_tokenizer_find(t, "e")));
    const char *paths[2];
    cr_expect_eq(mlm_tokenizer_files(t, paths), 2);
    cr_expect(strstr(paths[0], "vocab.json") && strstr(paths[1], "merges.txt"), "%s %s", paths[0], paths[1]);

    // decode gives back valid text byte for byte; ill-formed bytes as U+FFFD
    const char *text = "Hello,  world!\n\tcaf\xc3\xa9 \xf0\x9f\x98\x80 <mask> 123 don't";
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    mlm_encode(t, text, strlen(text), &ids, &n, &cap);
    char out[256];
    size_t want = mlm_tokenizer_decode(t, ids + 1, n - 2, out, sizeof out);
    cr_expect_str_eq(out, "Hello,  world!\n\tcaf\xc3\xa9 \xf0\x9f\x98\x80<mask> 123 don't"); // lstrip ate a space
    cr_expect_eq(want, strlen(out));
    cr_expect_eq(mlm_tokenizer_decode(t, ids + 1, n - 2, out, 4), want, "the length it wanted");
    cr_expect_str_eq(out, "Hel");
    n = 0;
    mlm_tokenize(t, "a\xe2\x82z", 5, &ids, &n, &cap);
    mlm_tokenizer_decode(t, ids, n, out, sizeof out);
    cr_expect_str_eq(out, "a\xef\xbf\xbdz");
    free(ids);
    mlm_tokenizer_free(t);
}

/* ---- concurrency and garbage ---- */

typedef struct {
    const mlm_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} job;

static void *tokenize_job(void *arg) {
    job *j = arg;
    size_t cap = 0;
    for (int r = 0; r < 3; r++) {
        j->n = 0;
        mlm_tokenize(j->t, j->text, j->len, &j->ids, &j->n, &cap);
    }
    return NULL;
}

Test(bpe, concurrent_calls_agree) {
    mlm_tokenizer *t = open_bpe();
    size_t n;
    char *text = read_path(FIX "vocab_heldout.txt", &n);
    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){t, text, n, NULL, 0};
        pthread_create(&th[i], NULL, tokenize_job, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 1; i < 4; i++) {
        cr_expect_eq(jobs[i].n, jobs[0].n);
        cr_expect(!memcmp(jobs[i].ids, jobs[0].ids, jobs[0].n * sizeof(int32_t)));
    }
    for (int i = 0; i < 4; i++) free(jobs[i].ids);
    free(text);
    mlm_tokenizer_free(t);
}

Test(bpe, random_bytes_and_long_words_round_trip) {
    mlm_tokenizer *t = open_bpe();
    uint64_t s = 42;
    char text[4096], out[3 * 4096 + 1];
    int32_t *ids = NULL;
    size_t cap = 0;
    for (int r = 0; r < 300; r++) {
        size_t len = (size_t)(r * 13 % 4095) / 3 * 3; // whole characters of 3 bytes
        for (size_t i = 0; i < len; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            // mostly one kind of character, so long words (the heap merge) happen too
            text[i] = r % 3 == 0 ? (char)(s >> 56) : r % 3 == 1 ? "ab"[s >> 63] : "\xe4\xb8\xad"[i % 3];
        }
        size_t n = 0;
        mlm_tokenize(t, text, len, &ids, &n, &cap);
        for (size_t i = 0; i < n; i++) cr_assert(ids[i] >= 0 && ids[i] < mlm_tokenizer_size(t));
        if (r % 3) { // valid UTF-8 without "<": decoding gives the text back
            cr_assert_eq(mlm_tokenizer_decode(t, ids, n, out, sizeof out), len);
            cr_assert(!memcmp(out, text, len), "round %d", r);
        }
    }
    free(ids);
    mlm_tokenizer_free(t);
}

/* ---- bad vocabularies ---- */

TestSuite(bpe_errors, .init = make_tmpdir, .fini = rm_tmpdir);

static const char *GOOD_VOCAB =
    "{\"<s>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3, \"<mask>\": 4, \"a\": 5, \"b\": 6, \"ab\": 7}\n";
static const char *GOOD_MERGES = "#version: 0.2\na b\n";

/* Opens tmpdir's vocab.json + merges.txt as given; the error, or "" when it opened. */
static const char *open_error(const char *vocab, const char *merges) {
    static char err[1024];
    char dir[128];
    if (vocab) write_file("vocab.json", vocab);
    if (merges) write_file("merges.txt", merges);
    tmp_path(dir, sizeof dir, "");
    err[0] = 0;
    mlm_tokenizer *t = mlm_tokenizer_open(dir, 0, err, sizeof err);
    if (t) {
        mlm_tokenizer_free(t);
        return "";
    }
    cr_expect_neq(err[0], 0);
    return err;
}

#define EXPECT_ERROR(vocab, merges, ...)                                                                       \
    do {                                                                                                       \
        const char *e_ = open_error(vocab, merges);                                                           \
        const char *want_[] = {__VA_ARGS__};                                                                   \
        for (size_t i_ = 0; i_ < sizeof want_ / sizeof want_[0]; i_++)                                         \
            cr_expect(strstr(e_, want_[i_]) != NULL, "wanted \"%s\" in: %s", want_[i_], e_);                   \
    } while (0)

Test(bpe_errors, good_vocabulary_opens) {
    cr_expect_str_eq(open_error(GOOD_VOCAB, GOOD_MERGES), "");
    mlm_tokenizer *t = mlm_tokenizer_open(tmpdir, 0, (char[64]){0}, 64);
    cr_assert_not_null(t);
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    mlm_encode(t, "abba", 4, &ids, &n, &cap);
    cr_expect_eq(n, 5);
    cr_expect(n == 5 && ids[0] == 0 && ids[1] == 7 && ids[2] == 6 && ids[3] == 5 && ids[4] == 2);
    n = 0; // no token for " ": HF's BPE without an unknown token drops the byte
    mlm_tokenize(t, "a b", 3, &ids, &n, &cap);
    cr_expect(n == 2 && ids[0] == 5 && ids[1] == 6, "%zu ids", n);
    n = 0; // ...and its neighbours in the word still merge, as HF's do
    mlm_tokenize(t, "a\xc3\xa9" "b", 4, &ids, &n, &cap);
    cr_expect(n == 1 && ids[0] == 7, "%zu ids", n);
    free(ids);
    mlm_tokenizer_free(t);
}

Test(bpe_errors, malformed_vocab_json) {
    EXPECT_ERROR("[1, 2]", GOOD_MERGES, "vocab.json:1: byte 0:", "JSON object");
    EXPECT_ERROR("{\"<s>\": 0,\n \"a\" 1}", GOOD_MERGES, "vocab.json:2: byte 16:", "':'");
    EXPECT_ERROR("{\"<s>\": 0, \"a\": -1}", GOOD_MERGES, "byte 16:", "non-negative integer");
    EXPECT_ERROR("{\"<s>\": 0, \"a\": 1.5}", GOOD_MERGES, "byte 16:", "non-negative integer");
    EXPECT_ERROR("{\"<s>\": 0, \"a\": \"1\"}", GOOD_MERGES, "byte 16:", "non-negative integer");
    EXPECT_ERROR("{\"<s>\": 0, \"a\": 1", GOOD_MERGES, "byte 17:", "',' or '}'");
    EXPECT_ERROR("{\"<s>\": 0, \"a: 1}", GOOD_MERGES, "byte 11:", "not closed");
    EXPECT_ERROR("{\"<s>\": 0, \"a\\q\": 1}", GOOD_MERGES, "byte 13:", "bad escape");
    EXPECT_ERROR("{\"<s>\": 0, \"\\ud800\": 1}", GOOD_MERGES, "byte 12:", "surrogate");
    EXPECT_ERROR("{\"<s>\": 0, \"\xff\": 1}", GOOD_MERGES, "byte 12:", "invalid UTF-8");
    EXPECT_ERROR("{\"<s>\": 0, \"\": 1}", GOOD_MERGES, "byte 11:", "empty token");
    EXPECT_ERROR("{\"<s>\": 0} x", GOOD_MERGES, "byte 11:", "after the JSON object");
    EXPECT_ERROR("{}", GOOD_MERGES, "empty vocabulary");
    EXPECT_ERROR("", GOOD_MERGES, "vocab.json:1: byte 0:");
    EXPECT_ERROR("{\"<s>\": 0, \"a\": 0}", GOOD_MERGES, "byte 16:", "id 0 given twice (first at byte 8)");
    EXPECT_ERROR("{\"<s>\": 0, \"<s>\": 1}", GOOD_MERGES, "byte 11:", "token listed twice (first at byte 1)");
    EXPECT_ERROR("{\"<s>\": 0, \"a\": 2}", GOOD_MERGES, "byte 16:", "id 2 out of range: 2 tokens need ids 0 .. 1");
    EXPECT_ERROR("{\"<s>\": 0, \"a\": 99999999999}", GOOD_MERGES, "byte 16:", "id out of range");
}

Test(bpe_errors, malformed_merges_and_missing_specials) {
    EXPECT_ERROR(GOOD_VOCAB, "#version: 0.2\na b\nab\n", "merges.txt:3:", "two tokens");
    EXPECT_ERROR(GOOD_VOCAB, "a b b\n", "merges.txt:1:", "two tokens");
    EXPECT_ERROR(GOOD_VOCAB, "a b\n\nb a\n", "merges.txt:2:", "two tokens");
    EXPECT_ERROR(GOOD_VOCAB, "a  b\n", "merges.txt:1:", "two tokens");
    EXPECT_ERROR(GOOD_VOCAB, "a b\nb c\n", "merges.txt:2:", "\"c\", which is not in the vocabulary");
    EXPECT_ERROR(GOOD_VOCAB, "a b\nb a\n", "merges.txt:2:", "merged token \"ba\" is not in the vocabulary");
    EXPECT_ERROR(GOOD_VOCAB, "a b\na b\n", "merges.txt:2:", "listed twice (first at line 1)");
    EXPECT_ERROR("{\"<s>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3, \"a\": 4}", "", "vocab.json:",
                 "no <mask> token");
    EXPECT_ERROR("{\"<mask>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3, \"a\": 4}", "", "vocab.json:",
                 "no <s> token");
    char path[128], merges[128];
    tmp_path(path, sizeof path, "merges.txt");
    tmp_path(merges, sizeof merges, "vocab.json");
    remove(path);
    const char *e = open_error(NULL, NULL);
    cr_expect(strstr(e, "merges.txt") && strstr(e, "missing"), "%s", e);
    char err[256];
    cr_expect_null(mlm_tokenizer_open(merges, 0, err, sizeof err), "vocab.json named directly: same check");
}

/* ---- mlmgpu tokenize ---- */

Test(cli_tokenize_bpe, ids_tokens_and_errors) {
    char out[4096];
    cr_expect_eq(run_shell("printf 'The capital is <mask>.\\nsecond line\\n' | " MLM_BIN " tokenize --vocab " BPE_DIR
                     " --tokens", out, sizeof out), 0, "%s", out);
    cr_expect(strncmp(out, "<s> The \xC4\xA0" "ca", 9) == 0 && strstr(out, "\xC4\xA0is <mask> . </s>\n<s> second"),
              "%s", out);
    cr_expect_eq(run_shell("printf 'hello' | " MLM_BIN " tokenize --vocab " BPE_DIR "/vocab.json --no-special", out,
                     sizeof out), 0, "%s", out);
    cr_expect(out[0] >= '0' && out[0] <= '9' && !strstr(out, "<s>"), "%s", out);
    cr_expect_eq(run_shell(MLM_BIN " tokenize --vocab " BPE_DIR " --cased < /dev/null", out, sizeof out), 2);
    cr_expect(strstr(out, "--cased applies to WordPiece") != NULL, "%s", out);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "printf '{\"<s>\": 0, \"a\" 1}' > %s/vocab.json && : > %s/merges.txt && " MLM_BIN
             " tokenize --vocab %s < /dev/null",
             tmpdir, tmpdir, tmpdir);
    cr_expect_eq(run_shell(cmd, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "vocab.json:1: byte 15:") != NULL, "%s", out);
}
TestSuite(cli_tokenize_bpe, .init = make_tmpdir, .fini = rm_tmpdir);
