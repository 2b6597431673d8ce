/*
 * Byte-level BPE with the ids of HF's ByteLevelBPETokenizer and RobertaTokenizerFast
 * (add_prefix_space false): vocab.json + merges.txt, GPT-2's pre-tokenizer and
 * byte-to-unicode map (docs/FORMATS.md).
 *
 *   bytes --decode (Python's errors="replace")--> code points
 *   --special tokens cut out (<mask> takes the whitespace before it)-->
 *   --pre-tokenizer: the GPT-2 split pattern
 *       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     as a hand-written scanner--> words (UTF-8)
 *   --each byte to its single-character token--> symbols
 *   --merges, lowest rank first (leftmost on ties)--> ids
 *
 * The regex's classes: \p{L}, \p{N} from utf8proc, corrected to HF's Oniguruma
 * tables where they differ (bpe_class_fix below); \s is Unicode White_Space.
 * tests/test_bpe.c checks every code point against HF's pre-tokenizer.
 *
 * Invalid UTF-8 decodes as Python's bytes.decode("utf-8", errors="replace") does:
 * each maximal ill-formed subsequence (a valid lead byte and the continuation bytes
 * that still fit it, or one stray byte) is one U+FFFD, which byte-level BPE then
 * sees as the three bytes EF BF BD. HF tokenizes Python strings, so this is the
 * text it would have been given.
 *
 * Everything is read-only after loading, so concurrent calls are safe; a call
 * allocates only for words of more than WORD_STACK symbols.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "bpe.h"
#include "utf8.h"
#include "mlm/fileio.h"
#include "mlm/log.h"
#include "mlm/tokenizer.h"

#define N_SPECIALS 5
#define WORD_STACK 256 // symbols of a word merged in stack buffers
#define NAIVE_MAX 48   // up to this many symbols, a linear scan for the best pair beats a heap

/* ---- the byte-to-unicode map ---- */

/* GPT-2's map: the printable bytes 33-126, 161-172 and 174-255 stand for
 * themselves, the other 68 bytes for 256, 257, ... in byte order. */
uint32_t mlm_bpe_byte_char(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    uint32_t n = 0; // bytes below b that are not printable
    for (int i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174)) n++;
    return 256 + n;
}

int mlm_bpe_char_byte(uint32_t cp) {
    if (cp < 256) return (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || cp >= 174 ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = cp - 256;
    for (int b = 0; b < 256; b++)
        if (mlm_bpe_byte_char((uint8_t)b) >= 256 && n-- == 0) return b;
    return -1;
}

/* ---- the pre-tokenizer's character classes ---- */

enum { C_L, C_N, C_S, C_O }; // letter, number, whitespace, other

/* Letters and numbers of Unicode 16, which HF's Oniguruma tables have and this
 * utf8proc does not (to it they are unassigned: other): {first, last, class}, sorted.
 * Found by tests/test_bpe.c, which compares every code point with
 * tests/fixtures/bpe_codepoints.txt and fails on any other difference. */
static const uint32_t bpe_class_fix[][3] = {
    {0x1C89, 0x1C8A, C_L}, {0xA7CB, 0xA7CD, C_L}, {0xA7DA, 0xA7DC, C_L}, {0x105C0, 0x105F3, C_L},
    {0x10D40, 0x10D49, C_N}, {0x10D4A, 0x10D65, C_L}, {0x10D6F, 0x10D85, C_L}, {0x10EC2, 0x10EC4, C_L},
    {0x11380, 0x11389, C_L}, {0x1138B, 0x1138B, C_L}, {0x1138E, 0x1138E, C_L}, {0x11390, 0x113B5, C_L},
    {0x113B7, 0x113B7, C_L}, {0x113D1, 0x113D1, C_L}, {0x113D3, 0x113D3, C_L}, {0x116D0, 0x116E3, C_N},
    {0x11BC0, 0x11BE0, C_L}, {0x11BF0, 0x11BF9, C_N}, {0x13460, 0x143FA, C_L}, {0x16100, 0x1611D, C_L},
    {0x16130, 0x16139, C_N}, {0x16D40, 0x16D6C, C_L}, {0x16D70, 0x16D79, C_N}, {0x18CFF, 0x18CFF, C_L},
    {0x1CCF0, 0x1CCF9, C_N}, {0x1E5D0, 0x1E5ED, C_L}, {0x1E5F0, 0x1E5F0, C_L}, {0x1E5F1, 0x1E5FA, C_N},
    {0x2EBF0, 0x2EE5D, C_L},
};

/* Binary search of bpe_class_fix; -1 if cp is not in it. */
static int class_fix(uint32_t cp) {
    size_t lo = 0, hi = sizeof bpe_class_fix / sizeof bpe_class_fix[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < bpe_class_fix[mid][0]) hi = mid;
        else if (cp > bpe_class_fix[mid][1]) lo = mid + 1;
        else return (int)bpe_class_fix[mid][2];
    }
    return -1;
}

/* Unicode White_Space, which Oniguruma's \s is. */
static int is_white_space(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static int class_slow(uint32_t cp) {
    if (is_white_space(cp)) return C_S;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: return C_L;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return C_N;
    case UTF8PROC_CATEGORY_CN: {
        int c = class_fix(cp);
        return c >= 0 ? c : C_O;
    }
    default: return C_O;
    }
}

/* ASCII classes without a table lookup: this test runs once per byte of text. */
static inline int ascii_cls(uint8_t c) {
    if ((uint8_t)((c | 32) - 'a') < 26) return C_L;
    if ((uint8_t)(c - '0') < 10) return C_N;
    if (c == ' ' || (uint8_t)(c - 9) < 5) return C_S;
    return C_O;
}

/* ---- the pre-tokenizer ---- */

/* Decoded character at text[i]: code point, class, length in bytes. */
typedef struct {
    uint32_t cp;
    int cls;
    size_t len;
} chr_t;

static inline chr_t char_at(const uint8_t *s, size_t n, size_t i) {
    chr_t c;
    if (s[i] < 0x80) {
        c.cp = s[i];
        c.len = 1;
        c.cls = ascii_cls(s[i]);
        return c;
    }
    c.len = mlm_utf8_decode(s + i, n - i, &c.cp);
    c.cls = class_slow(c.cp);
    return c;
}

/* End of the run of characters of class cls that starts at i. */
static inline size_t run_end(const uint8_t *s, size_t n, size_t i, int cls) {
    while (i < n) {
        if (s[i] < 0x80) {
            if (ascii_cls(s[i]) != cls) break;
            i++;
            continue;
        }
        chr_t c = char_at(s, n, i);
        if (c.cls != cls) break;
        i += c.len;
    }
    return i;
}

/* End of the pre-token that starts at i (< n): the regex's first alternative that
 * matches there. */
static size_t pretoken_end(const uint8_t *s, size_t n, size_t i) {
    chr_t c = char_at(s, n, i);
    size_t j = i + c.len;
    if (c.cp == '\'' && j < n) { // 's 't 're 've 'm 'll 'd
        uint8_t a = s[j], b = j + 1 < n ? s[j + 1] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return j + 1;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return j + 2;
    }
    if (c.cp == ' ' && j < n) { // " ?" before a letter, number or other run
        chr_t d = char_at(s, n, j);
        if (d.cls != C_S) return run_end(s, n, j + d.len, d.cls);
    }
    if (c.cls != C_S) return run_end(s, n, j, c.cls);
    // whitespace: \s+(?!\S) takes the run but its last character when a non-space
    // follows; \s+ then takes a lone one (a space joins the next word instead)
    size_t last = i, e = j;
    while (e < n) {
        chr_t d = char_at(s, n, e);
        if (d.cls != C_S) break;
        last = e;
        e += d.len;
    }
    if (e == n || last == i) return e == n ? n : j;
    return last;
}

/* ---- vocabulary and merges ---- */

#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = MLM_FNV_OFFSET;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * FNV_PRIME;
    return h;
}

typedef struct {
    uint64_t key; // (left id << 32 | right id) + 1; 0: empty
    int32_t rank, id;
} pair_slot;

struct mlm_bpe {
    int count;
    char *text;       // every token, NUL-terminated, back to back
    uint32_t *off;    // token id -> offset in text
    uint32_t *len;    // token id -> length in bytes
    int32_t *slots;   // token string hash table: ids, -1 empty
    uint64_t mask;
    pair_slot *pairs; // merge table
    uint64_t pair_mask;
    int32_t byte_id[256]; // id of each byte's one-character token, -1 if none
    mlm_special_ids special;
    const char *special_text[N_SPECIALS];
    size_t special_len[N_SPECIALS];
    int32_t special_id[N_SPECIALS];
};

static const char *tok_str(const mlm_bpe *b, int id) { return b->text + b->off[id]; }

static int32_t find_token(const mlm_bpe *b, const char *s, size_t n) {
    for (uint64_t i = fnv(s, n) & b->mask;; i = (i + 1) & b->mask) {
        int32_t id = b->slots[i];
        if (id < 0) return -1;
        if (b->len[id] == n && !memcmp(tok_str(b, id), s, n)) return id;
    }
}

static inline uint64_t pair_hash(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> 17; }

/* Merge of (a, b): rank and merged id, or rank -1. */
static inline pair_slot pair_get(const mlm_bpe *b, int32_t l, int32_t r) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    for (uint64_t i = pair_hash(key) & b->pair_mask;; i = (i + 1) & b->pair_mask) {
        const pair_slot *p = &b->pairs[i];
        if (p->key == key) return *p;
        if (p->key == 0) return (pair_slot){0, -1, -1};
    }
}

/* ---- vocab.json: a JSON object of token string -> id ---- */

typedef struct {
    const char *path;
    const char *s;
    size_t n, i;
    char *err;
    size_t err_len;
} json_in;

static int json_fail(json_in *j, size_t at, const char *what) {
    int line = 1;
    for (size_t k = 0; k < at && k < j->n; k++) line += j->s[k] == '\n';
    return mlm_fail(j->err, j->err_len, "%s:%d: byte %zu: %s", j->path, line, at, what);
}

static void json_ws(json_in *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r'))
        j->i++;
}

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

/* Reads a JSON string at j->i (its opening quote) into out (room for its bytes),
 * unescaped, and returns its length, or -1 with err. */
static long json_string(json_in *j, char *out) {
    size_t start = j->i, o = 0;
    if (j->i >= j->n || j->s[j->i] != '"') return json_fail(j, j->i, "expected a string (a token)");
    j->i++;
    for (;;) {
        if (j->i >= j->n) return json_fail(j, start, "string not closed");
        uint8_t c = (uint8_t)j->s[j->i];
        if (c == '"') {
            j->i++;
            return (long)o;
        }
        if (c < 0x20) return json_fail(j, j->i, "control character in a string (JSON needs it escaped)");
        if (c == '\\') {
            if (j->i + 1 >= j->n) return json_fail(j, j->i, "string not closed");
            char e = j->s[j->i + 1];
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *k = e ? strchr(from, e) : NULL;
            if (k) {
                out[o++] = to[k - from];
                j->i += 2;
                continue;
            }
            uint32_t cp, lo;
            if (e != 'u' || j->i + 6 > j->n || hex4(j->s + j->i + 2, &cp))
                return json_fail(j, j->i, "bad escape in a string");
            size_t at = j->i;
            j->i += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return json_fail(j, at, "lone low surrogate escape in a string");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (j->i + 6 > j->n || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u' || hex4(j->s + j->i + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return json_fail(j, at, "high surrogate escape without its low surrogate");
                j->i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) return json_fail(j, at, "NUL character in a token");
            o += mlm_utf8_encode(cp, out + o);
            continue;
        }
        uint32_t cp;
        size_t used = mlm_utf8_decode((const uint8_t *)j->s + j->i, j->n - j->i, &cp);
        if (cp == 0xFFFD && !(used == 3 && !memcmp(j->s + j->i, "\xEF\xBF\xBD", 3)))
            return json_fail(j, j->i, "invalid UTF-8");
        memcpy(out + o, j->s + j->i, used);
        o += used;
        j->i += used;
    }
}

/* A non-negative integer id at j->i. */
static long json_id(json_in *j, int max) {
    size_t start = j->i;
    long v = 0;
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
        v = v * 10 + (j->s[j->i] - '0');
        if (v > max) return json_fail(j, start, "id out of range");
        j->i++;
    }
    if (j->i == start || (j->i < j->n && (j->s[j->i] == '.' || j->s[j->i] == 'e' || j->s[j->i] == 'E')) ||
        (j->i - start > 1 && j->s[start] == '0'))
        return json_fail(j, start, "expected an id: a non-negative integer");
    return v;
}

/* Upper bound on the tokens of the object (commas + 1), to size the tables. */
static int count_entries(const char *s, size_t n) {
    int c = 1;
    for (size_t i = 0; i < n; i++) c += s[i] == ',';
    return c;
}

/* Reads the object into b: tokens first by entry (the hash table holds entry
 * numbers while parsing, to find a token listed twice), then checked to have ids
 * 0 .. n-1, each once, and indexed by id. */
static int load_vocab(mlm_bpe *b, const char *path, char *err, size_t err_len) {
    char *buf;
    size_t n;
    if (mlm_read_file(path, &buf, &n, err, err_len) != 0) return -1;
    json_in j = {path, buf, n, 0, err, err_len};
    int max = count_entries(buf, n);
    b->text = mlm_xmalloc(n + 1, "vocab.json tokens");
    uint32_t *e_off = mlm_xmalloc((size_t)max * sizeof(uint32_t), "vocab.json");
    uint32_t *e_len = mlm_xmalloc((size_t)max * sizeof(uint32_t), "vocab.json");
    long *e_id = mlm_xmalloc((size_t)max * sizeof(long), "vocab.json");
    size_t *e_at = mlm_xmalloc((size_t)max * 2 * sizeof(size_t), "vocab.json"); // byte offsets of its id
    size_t *e_key = e_at + max;                                                     // and its token
    int32_t *entry_of = NULL;                                              // id -> entry
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)max) cap *= 2;
    b->slots = mlm_xmalloc(cap * sizeof(int32_t), "vocab hash table");
    for (uint64_t i = 0; i < cap; i++) b->slots[i] = -1;
    b->mask = cap - 1;
    size_t used = 0;
    int rc = -1, entries = 0;
    char *tmp = mlm_xmalloc(n + 4, "vocab.json token");
    json_ws(&j);
    if (j.i >= n || buf[j.i] != '{') {
        json_fail(&j, j.i, "expected a JSON object of token -> id");
        goto out;
    }
    j.i++;
    json_ws(&j);
    if (j.i < n && buf[j.i] == '}') {
        json_fail(&j, j.i, "empty vocabulary");
        goto out;
    }
    for (;;) {
        json_ws(&j);
        size_t key_at = j.i;
        long klen = json_string(&j, tmp);
        if (klen < 0) goto out;
        if (klen == 0) {
            json_fail(&j, key_at, "empty token");
            goto out;
        }
        json_ws(&j);
        if (j.i >= n || buf[j.i] != ':') {
            json_fail(&j, j.i, "expected ':' after a token");
            goto out;
        }
        j.i++;
        json_ws(&j);
        size_t id_at = j.i;
        long id = json_id(&j, INT32_MAX);
        if (id < 0) goto out;
        // a token listed twice: JSON leaves it undefined, HF keeps the last; refuse
        uint64_t h = fnv(tmp, (size_t)klen);
        uint64_t s = h & b->mask;
        for (; b->slots[s] >= 0; s = (s + 1) & b->mask) {
            int32_t o = b->slots[s];
            if (e_len[o] == (uint32_t)klen && !memcmp(b->text + e_off[o], tmp, (size_t)klen)) {
                char what[160];
                snprintf(what, sizeof what, "token listed twice (first at byte %zu)", e_key[o]);
                json_fail(&j, key_at, what);
                goto out;
            }
        }
        memcpy(b->text + used, tmp, (size_t)klen);
        b->text[used + (size_t)klen] = 0;
        e_off[entries] = (uint32_t)used;
        e_len[entries] = (uint32_t)klen;
        e_id[entries] = id;
        e_at[entries] = id_at;
        e_key[entries] = key_at;
        b->slots[s] = entries++;
        used += (size_t)klen + 1;
        json_ws(&j);
        if (j.i < n && buf[j.i] == ',') {
            j.i++;
            continue;
        }
        if (j.i < n && buf[j.i] == '}') {
            j.i++;
            break;
        }
        json_fail(&j, j.i, "expected ',' or '}'");
        goto out;
    }
    json_ws(&j);
    if (j.i != n) {
        json_fail(&j, j.i, "text after the JSON object");
        goto out;
    }
    // ids must be 0 .. entries-1, each once (so every one of them is taken)
    entry_of = mlm_xmalloc((size_t)entries * sizeof(int32_t), "vocab.json");
    for (int k = 0; k < entries; k++) entry_of[k] = -1;
    for (int k = 0; k < entries; k++) {
        char what[200];
        if (e_id[k] >= entries) {
            snprintf(what, sizeof what, "id %ld out of range: %d tokens need ids 0 .. %d", e_id[k], entries,
                     entries - 1);
            json_fail(&j, e_at[k], what);
            goto out;
        }
        if (entry_of[e_id[k]] >= 0) {
            snprintf(what, sizeof what, "id %ld given twice (first at byte %zu)", e_id[k], e_at[entry_of[e_id[k]]]);
            json_fail(&j, e_at[k], what);
            goto out;
        }
        entry_of[e_id[k]] = k;
    }
    b->off = mlm_xmalloc((size_t)entries * sizeof(uint32_t), "vocab.json");
    b->len = mlm_xmalloc((size_t)entries * sizeof(uint32_t), "vocab.json");
    for (int id = 0; id < entries; id++) {
        b->off[id] = e_off[entry_of[id]];
        b->len[id] = e_len[entry_of[id]];
    }
    for (uint64_t i = 0; i < cap; i++)
        if (b->slots[i] >= 0) b->slots[i] = (int32_t)e_id[b->slots[i]];
    b->count = entries;
    rc = 0;
out:
    free(entry_of);
    free(tmp);
    free(e_at);
    free(e_id);
    free(e_len);
    free(e_off);
    free(buf);
    return rc;
}

/* ---- merges.txt: "#version" line, then one "left right" pair per line, by rank ---- */

static int load_merges(mlm_bpe *b, const char *path, char *err, size_t err_len) {
    char *buf;
    size_t n;
    if (mlm_read_file(path, &buf, &n, err, err_len) != 0) return -1;
    int lines = 1;
    for (size_t i = 0; i < n; i++) lines += buf[i] == '\n';
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)lines) cap *= 2;
    b->pairs = mlm_xcalloc(cap, sizeof(pair_slot), "merge table");
    b->pair_mask = cap - 1;
    int32_t *line_of = mlm_xmalloc((size_t)lines * sizeof(int32_t), "merges"); // rank -> line
    char *joined = mlm_xmalloc(n + 1, "merge");
    int rank = 0, line = 0, rc = -1;
    for (size_t i = 0; i < n;) {
        line++;
        char *s = buf + i, *nl = memchr(s, '\n', n - i);
        size_t len = nl ? (size_t)(nl - s) : n - i;
        i += len + 1;
        if (len && s[len - 1] == '\r') len--;
        if (line == 1 && len >= 8 && !memcmp(s, "#version", 8)) continue;
        char *sp = memchr(s, ' ', len);
        if (!sp || sp == s || sp == s + len - 1 || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
            mlm_fail(err, err_len, "%s:%d: expected two tokens separated by one space", path, line);
            goto out;
        }
        if (memchr(s, 0, len)) {
            mlm_fail(err, err_len, "%s:%d: NUL byte", path, line);
            goto out;
        }
        size_t la = (size_t)(sp - s), lb = len - la - 1;
        int32_t a = find_token(b, s, la), c = find_token(b, sp + 1, lb);
        if (a < 0 || c < 0) {
            mlm_fail(err, err_len, "%s:%d: merge names \"%.*s\", which is not in the vocabulary", path, line,
                     (int)(a < 0 ? la : lb), a < 0 ? s : sp + 1);
            goto out;
        }
        memcpy(joined, s, la);
        memcpy(joined + la, sp + 1, lb);
        int32_t m = find_token(b, joined, la + lb);
        if (m < 0) {
            mlm_fail(err, err_len, "%s:%d: merged token \"%.*s\" is not in the vocabulary", path, line,
                     (int)(la + lb), joined);
            goto out;
        }
        uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)c) + 1;
        uint64_t k = pair_hash(key) & b->pair_mask;
        for (; b->pairs[k].key && b->pairs[k].key != key; k = (k + 1) & b->pair_mask) {}
        if (b->pairs[k].key) {
            mlm_fail(err, err_len, "%s:%d: merge listed twice (first at line %d)", path, line,
                     line_of[b->pairs[k].rank]);
            goto out;
        }
        b->pairs[k] = (pair_slot){key, rank, m};
        line_of[rank++] = line;
    }
    rc = 0;
out:
    free(joined);
    free(line_of);
    free(buf);
    return rc;
}

void mlm_bpe_free(mlm_bpe *b) {
    if (!b) return;
    free(b->text);
    free(b->off);
    free(b->len);
    free(b->slots);
    free(b->pairs);
    free(b);
}

mlm_bpe *mlm_bpe_load(const char *vocab_json, const char *merges_txt, char *err, size_t err_len) {
    mlm_bpe *b = mlm_xcalloc(1, sizeof *b, "BPE tokenizer");
    if (load_vocab(b, vocab_json, err, err_len) != 0 || load_merges(b, merges_txt, err, err_len) != 0) {
        mlm_bpe_free(b);
        return NULL;
    }
    // RoBERTa's names; HF's RobertaTokenizerFast adds any that is missing as a new
    // token, which would give the model an id it has no row for: refuse instead
    const char *names[N_SPECIALS] = {"<pad>", "<unk>", "<s>", "</s>", "<mask>"};
    for (int i = 0; i < N_SPECIALS; i++) {
        int32_t id = find_token(b, names[i], strlen(names[i]));
        if (id < 0) {
            mlm_fail(err, err_len, "%s: has no %s token (byte-level BPE needs <s> </s> <pad> <unk> <mask>)",
                     vocab_json, names[i]);
            mlm_bpe_free(b);
            return NULL;
        }
        b->special_id[i] = id;
        b->special_text[i] = names[i];
        b->special_len[i] = strlen(names[i]);
    }
    b->special = (mlm_special_ids){b->count, b->special_id[0], b->special_id[1], b->special_id[2],
                                   b->special_id[3], b->special_id[4]};
    for (int c = 0; c < 256; c++) {
        char u[4];
        b->byte_id[c] = find_token(b, u, mlm_utf8_encode(mlm_bpe_byte_char((uint8_t)c), u));
    }
    return b;
}

/* ---- merging one word ---- */

typedef struct {
    const mlm_bpe *b;
    int32_t **ids;
    size_t *n, *cap;
} id_sink;

static void push_id(id_sink *o, int32_t id) { mlm_ids_push(o->ids, o->n, o->cap, id); }

/* Short words: the lowest-ranked pair (leftmost on a tie), merged, until none is
 * left; each pair's rank is kept and only the two beside a merge are looked up again. */
static void merge_naive(const mlm_bpe *b, int32_t *sym, int m, id_sink *o) {
    int32_t rank[NAIVE_MAX], id[NAIVE_MAX];
    for (int p = 0; p + 1 < m; p++) {
        pair_slot s = pair_get(b, sym[p], sym[p + 1]);
        rank[p] = s.rank < 0 ? INT32_MAX : s.rank;
        id[p] = s.id;
    }
    while (m > 1) {
        int best = 0;
        for (int p = 1; p + 1 < m; p++)
            if (rank[p] < rank[best]) best = p;
        if (rank[best] == INT32_MAX) break;
        sym[best] = id[best];
        m--;
        memmove(sym + best + 1, sym + best + 2, (size_t)(m - best - 1) * sizeof(int32_t));
        memmove(rank + best, rank + best + 1, (size_t)(m - best - 1) * sizeof(int32_t));
        memmove(id + best, id + best + 1, (size_t)(m - best - 1) * sizeof(int32_t));
        for (int p = best - 1; p <= best; p++) {
            if (p < 0 || p + 1 >= m) continue;
            pair_slot s = pair_get(b, sym[p], sym[p + 1]);
            rank[p] = s.rank < 0 ? INT32_MAX : s.rank;
            id[p] = s.id;
        }
    }
    for (int p = 0; p < m; p++) push_id(o, sym[p]);
}

/* Long words: a heap of candidate merges ordered by (rank, position) over a linked
 * list of symbols, O(m log m). An entry whose symbols have changed since it was
 * pushed is skipped when it comes up. */
typedef struct {
    int32_t rank, pos, id;
} cand;

static inline int cand_less(cand a, cand b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(cand *h, int *n, cand c) {
    int i = (*n)++;
    while (i > 0 && cand_less(c, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, int *n) {
    cand top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(h[c + 1], h[c])) c++;
        if (!cand_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static void merge_heap(const mlm_bpe *b, int32_t *sym, int m, id_sink *o) {
    int32_t *next = mlm_xmalloc((size_t)m * 2 * sizeof(int32_t), "BPE word");
    int32_t *prev = next + m;
    cand *heap = mlm_xmalloc((size_t)3 * m * sizeof(cand), "BPE word"); // m - 1 + 2 per merge
    int hn = 0;
    for (int p = 0; p < m; p++) {
        next[p] = p + 1 < m ? p + 1 : -1;
        prev[p] = p - 1;
        if (p + 1 < m) {
            pair_slot s = pair_get(b, sym[p], sym[p + 1]);
            if (s.rank >= 0) heap_push(heap, &hn, (cand){s.rank, p, s.id});
        }
    }
    while (hn) {
        cand c = heap_pop(heap, &hn);
        int q = next[c.pos];
        if (sym[c.pos] < 0 || q < 0) continue;
        pair_slot s = pair_get(b, sym[c.pos], sym[q]);
        if (s.rank != c.rank || s.id != c.id) continue; // stale
        sym[c.pos] = c.id;
        sym[q] = -1;
        next[c.pos] = next[q];
        if (next[q] >= 0) prev[next[q]] = c.pos;
        int l = prev[c.pos], r = next[c.pos];
        if (l >= 0) {
            pair_slot t = pair_get(b, sym[l], sym[c.pos]);
            if (t.rank >= 0) heap_push(heap, &hn, (cand){t.rank, l, t.id});
        }
        if (r >= 0) {
            pair_slot t = pair_get(b, sym[c.pos], sym[r]);
            if (t.rank >= 0) heap_push(heap, &hn, (cand){t.rank, c.pos, t.id});
        }
    }
    for (int p = 0; p >= 0; p = next[p]) push_id(o, sym[p]);
    free(heap);
    free(next);
}

/* One pre-token (raw bytes of the text, invalid UTF-8 included) to ids. */
static void bpe_word(const mlm_bpe *b, const uint8_t *w, size_t n, id_sink *o) {
    int32_t stack[WORD_STACK];
    int32_t *sym = stack;
    if (n * 3 > WORD_STACK) sym = mlm_xmalloc(n * 3 * sizeof(int32_t), "BPE word"); // U+FFFD: 3 per byte
    int m = 0;
    for (size_t i = 0; i < n;) {
        if (w[i] < 0x80) {
            if (b->byte_id[w[i]] >= 0) sym[m++] = b->byte_id[w[i]]; // HF drops what it has no token for
            i++;
            continue;
        }
        uint32_t cp;
        size_t used = mlm_utf8_decode(w + i, n - i, &cp);
        if (cp == 0xFFFD && !(used == 3 && w[i] == 0xEF)) { // ill-formed: its U+FFFD's bytes
            static const uint8_t fffd[3] = {0xEF, 0xBF, 0xBD};
            for (int k = 0; k < 3; k++)
                if (b->byte_id[fffd[k]] >= 0) sym[m++] = b->byte_id[fffd[k]];
        } else {
            for (size_t k = 0; k < used; k++)
                if (b->byte_id[w[i + k]] >= 0) sym[m++] = b->byte_id[w[i + k]];
        }
        i += used;
    }
    if (m <= NAIVE_MAX) merge_naive(b, sym, m, o);
    else merge_heap(b, sym, m, o);
    if (sym != stack) free(sym);
}

static void bpe_segment(const mlm_bpe *b, const uint8_t *s, size_t n, id_sink *o) {
    for (size_t i = 0; i < n;) {
        size_t e = pretoken_end(s, n, i);
        bpe_word(b, s + i, e - i, o);
        i = e;
    }
}

/* Index of the special token that starts at s, or -1 (none is a prefix of another). */
static int special_at(const mlm_bpe *b, const char *s, size_t n) {
    for (int i = 0; i < N_SPECIALS; i++)
        if (b->special_len[i] <= n && !memcmp(s, b->special_text[i], b->special_len[i])) return i;
    return -1;
}

/* Where the whitespace that ends s[0..n) begins (<mask>'s lstrip takes it). */
static size_t trailing_space(const uint8_t *s, size_t n) {
    size_t end = 0;
    for (size_t i = 0; i < n;) {
        chr_t c = char_at(s, n, i);
        i += c.len;
        if (c.cls != C_S) end = i;
    }
    return end;
}

size_t mlm_bpe_tokenize(const mlm_bpe *b, const char *text, size_t len, int32_t **ids, size_t *n,
                        size_t *cap) {
    size_t before = *n;
    id_sink out = {b, ids, n, cap};
    const uint8_t *s = (const uint8_t *)text;
    size_t start = 0; // text before start is done
    const char *p = text;
    while (len && (p = memchr(p, '<', len - (size_t)(p - text)))) {
        int sp = special_at(b, p, len - (size_t)(p - text));
        if (sp < 0) {
            p++;
            continue;
        }
        size_t at = (size_t)(p - text), end = at;
        if (sp == 4) end = start + trailing_space(s + start, at - start); // <mask>: lstrip
        bpe_segment(b, s + start, end - start, &out);
        push_id(&out, b->special_id[sp]);
        start = at + b->special_len[sp];
        p = text + start;
    }
    bpe_segment(b, s + start, len - start, &out);
    return *n - before;
}

/* ---- pre-tokenizing alone (the vocab trainer) ---- */

void mlm_bpe_pretokenize(const char *text, size_t len, void (*word)(void *ctx, const char *w, size_t n),
                         void *ctx) {
    const uint8_t *s = (const uint8_t *)text;
    char stack[1024];
    for (size_t i = 0; i < len;) {
        size_t e = pretoken_end(s, len, i);
        // valid UTF-8 goes as is; a word with ill-formed bytes gets U+FFFD for them
        size_t k = i, bad = 0;
        while (k < e) {
            uint32_t cp = 0;
            size_t used = s[k] < 0x80 ? 1 : mlm_utf8_decode(s + k, e - k, &cp);
            if (s[k] >= 0x80 && cp == 0xFFFD && !(used == 3 && s[k] == 0xEF)) bad++;
            k += used;
        }
        if (!bad) {
            word(ctx, text + i, e - i);
        } else {
            size_t need = 3 * (e - i);
            char *buf = need <= sizeof stack ? stack : mlm_xmalloc(need, "pre-token");
            size_t o = 0;
            for (k = i; k < e;) {
                uint32_t cp;
                size_t used = mlm_utf8_decode(s + k, e - k, &cp);
                if (cp == 0xFFFD) memcpy(buf + o, "\xEF\xBF\xBD", 3), o += 3;
                else memcpy(buf + o, text + k, used), o += used;
                k += used;
            }
            word(ctx, buf, o);
            if (buf != stack) free(buf);
        }
        i = e;
    }
}

/* ---- lookups ---- */

mlm_special_ids mlm_bpe_special(const mlm_bpe *b) { return b->special; }
int mlm_bpe_size(const mlm_bpe *b) { return b->count; }

const char *mlm_bpe_token(const mlm_bpe *b, int id) { return id >= 0 && id < b->count ? tok_str(b, id) : NULL; }

int mlm_bpe_find(const mlm_bpe *b, const char *token) { return find_token(b, token, strlen(token)); }

int mlm_bpe_word_start(const mlm_bpe *b, int id) {
    if (id < 0 || id >= b->count) return 0;
    for (int i = 0; i < N_SPECIALS; i++)
        if (id == b->special_id[i]) return 1;
    return b->len[id] >= 2 && !memcmp(tok_str(b, id), "\xC4\xA0", 2); // U+0120, the space's character
}

size_t mlm_bpe_decode(const mlm_bpe *b, const int32_t *ids, size_t n, char *out, size_t cap) {
    size_t o = 0;
#define PUT(c)                                                                                                 \
    do {                                                                                                       \
        if (o + 1 < cap) out[o] = (char)(c);                                                                   \
        o++;                                                                                                   \
    } while (0)
    for (size_t k = 0; k < n; k++) {
        const char *t = mlm_bpe_token(b, ids[k]);
        if (!t) continue;
        int special = 0;
        for (int i = 0; i < N_SPECIALS; i++) special |= ids[k] == b->special_id[i];
        size_t tl = b->len[ids[k]];
        for (size_t i = 0; i < tl;) {
            uint32_t cp;
            size_t used = mlm_utf8_decode((const uint8_t *)t + i, tl - i, &cp);
            int byte = special ? -1 : mlm_bpe_char_byte(cp);
            if (byte >= 0) PUT(byte);
            else
                for (size_t q = 0; q < used; q++) PUT(t[i + q]); // a character outside the map: as it is
            i += used;
        }
    }
#undef PUT
    if (cap) out[o < cap ? o : cap - 1] = 0;
    return o;
}
