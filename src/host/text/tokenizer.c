/*
 * BERT WordPiece tokenizer with the ids of HF BertTokenizerFast (include/mlm/tokenizer.h).
 *
 * The pipeline, one pass over the bytes with no allocation per word:
 *
 *   bytes --decode--> code points --clean_text, CJK spacing--> --NFD, drop Mn, lowercase
 *   (uncased only)--> pre-tokenizer (split on spaces, punctuation alone) --> words
 *   --WordPiece (greedy longest match, "##" continuations)--> ids
 *
 * Special tokens written literally in the text ("[MASK]") are cut out first and
 * become their ids, as HF's added-token matching does before normalisation.
 *
 * Character classes come from utf8proc, except where HF's tables (an older Unicode
 * than utf8proc's) disagree; tokenizer_unicode.h lists those code points.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "bpe.h"
#include "mlm/log.h"
#include "mlm/tokenizer.h"
#include "tokenizer_unicode.h"
#include "utf8.h"

#define MAX_WORD_CHARS 100                        // HF WordPiece max_input_chars_per_word
#define WORD_FIXED_BYTES (4 * MAX_WORD_CHARS + 4) // a word WordPiece may split, in UTF-8
#define MAX_PENDING_MARKS 64                      // combining marks kept for reordering
#define N_SPECIALS 5

/* ---- vocabulary hash table (open addressing, linear probing) ---- */

typedef struct {
    uint64_t hash;
    const char *s; // token text (after "##" for continuation tokens)
    uint32_t len;
    int32_t id;    // -1: empty slot
} slot;

typedef struct {
    slot *slots;
    uint64_t mask;      // capacity - 1, capacity a power of two
    size_t max_len;     // longest key in bytes: no longer substring can match
} vocab_table;

#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv_step(uint64_t h, uint8_t b) { return (h ^ b) * FNV_PRIME; }

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = MLM_FNV_OFFSET;
    for (size_t i = 0; i < n; i++) h = fnv_step(h, (uint8_t)s[i]);
    return h;
}

static void table_init(vocab_table *t, int count) {
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)count) cap *= 2;
    t->slots = mlm_xmalloc(cap * sizeof(slot), "vocab hash table");
    for (uint64_t i = 0; i < cap; i++) t->slots[i].id = -1;
    t->mask = cap - 1;
    t->max_len = 0;
}

/* Inserts s -> id; a repeated token keeps the later id, as HF's vocab map does. */
static void table_put(vocab_table *t, const char *s, size_t len, int32_t id) {
    uint64_t h = fnv(s, len);
    for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
        slot *e = &t->slots[i];
        if (e->id < 0 || (e->hash == h && e->len == len && !memcmp(e->s, s, len))) {
            *e = (slot){h, s, (uint32_t)len, id};
            break;
        }
    }
    if (len > t->max_len) t->max_len = len;
}

static int32_t table_get(const vocab_table *t, const char *s, size_t len, uint64_t h) {
    for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const slot *e = &t->slots[i];
        if (e->id < 0) return -1;
        if (e->hash == h && e->len == len && !memcmp(e->s, s, len)) return e->id;
    }
}

struct mlm_tokenizer {
    mlm_tok_kind kind;
    mlm_bpe *bpe;          // MLM_TOK_BPE: everything below but special is unused
    mlm_vocab *own_vocab;  // opened by mlm_tokenizer_open: freed with the tokenizer
    char *files[2];        // the vocabulary files, for mlm_tokenizer_files
    int nfiles;
    const mlm_vocab *vocab;
    int cased;
    mlm_special_ids special;
    vocab_table first; // every token: pieces that start a word
    vocab_table cont;  // "##x" tokens keyed by x: pieces inside a word
    const char *special_text[N_SPECIALS];
    size_t special_len[N_SPECIALS];
    int32_t special_id[N_SPECIALS];
};

mlm_tokenizer *mlm_tokenizer_new(const mlm_vocab *vocab, int cased, char *err, size_t err_len) {
    mlm_special_ids sp;
    if (mlm_special_ids_from_vocab(vocab, vocab->count, &sp, "vocabulary", err, err_len) != 0) return NULL;
    mlm_tokenizer *t = mlm_xcalloc(1, sizeof *t, "tokenizer");
    t->vocab = vocab;
    t->cased = cased;
    t->special = sp;
    table_init(&t->first, vocab->count);
    table_init(&t->cont, vocab->count);
    for (int id = 0; id < vocab->count; id++) {
        const char *s = vocab->tokens[id];
        size_t len = strlen(s);
        table_put(&t->first, s, len, id);
        if (len > 2 && s[0] == '#' && s[1] == '#') table_put(&t->cont, s + 2, len - 2, id);
    }
    const int ids[N_SPECIALS] = {sp.pad, sp.unk, sp.cls, sp.sep, sp.mask};
    for (int i = 0; i < N_SPECIALS; i++) {
        t->special_id[i] = ids[i];
        t->special_text[i] = vocab->tokens[ids[i]];
        t->special_len[i] = strlen(t->special_text[i]);
    }
    return t;
}

void mlm_tokenizer_free(mlm_tokenizer *t) {
    if (!t) return;
    mlm_bpe_free(t->bpe);
    if (t->own_vocab) mlm_vocab_free(t->own_vocab);
    free(t->own_vocab);
    free(t->files[0]);
    free(t->files[1]);
    free(t->first.slots);
    free(t->cont.slots);
    free(t);
}

mlm_special_ids mlm_tokenizer_special(const mlm_tokenizer *t) { return t->special; }

/* ---- character classes, as HF's BertNormalizer and BertPreTokenizer see them ---- */

/* The CJK ideograph blocks that handle_chinese_chars surrounds with spaces. */
static int is_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* ASCII 33-47, 58-64, 91-96 and 123-126 (every printable but letters and digits)
 * as a bitmap: this test runs once per byte of text. */
static inline int is_ascii_punct(uint32_t c) {
    static const uint64_t bits[2] = {0xFC00FFFE00000000ull, 0x78000001F8000001ull};
    return (int)(bits[c >> 6] >> (c & 63) & 1);
}

/* clean_text drops NUL, U+FFFD and "other" characters (Cc, Cf, Co) but \t \n \r. */
static int is_dropped(uint32_t cp) {
    if (cp == '\t' || cp == '\n' || cp == '\r') return 0;
    if (cp == 0 || cp == 0xFFFD) return 1;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CO) &&
           !IN_RANGES(hf_not_other, cp);
}

/* Rust's char::is_whitespace (White_Space) plus \t \n \r; clean_text maps it to ' '. */
static int is_space(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

/* ASCII punctuation (which includes the symbols $ + < = > ^ ` | ~) or Unicode P*. */
static inline int is_punct(uint32_t cp) {
    if (cp < 0x80) return is_ascii_punct(cp);
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    if (c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO) return !IN_RANGES(hf_not_punct, cp);
    return IN_RANGES(hf_old_punct, cp);
}

static int is_nonspacing_mark(uint32_t cp) {
    if (utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_MN) return !IN_RANGES(hf_not_mark, cp);
    return IN_RANGES(hf_old_mark, cp);
}

/* ---- the word being collected ---- */

/* A normalised word goes to emit(ctx, utf8, bytes, chars). Tokenizing keeps at
 * most WORD_FIXED_BYTES (longer words are [UNK] whatever they hold) and only
 * counts the rest; pre-tokenizing for the vocab trainer grows a heap buffer. */
typedef void (*word_fn)(void *ctx, const char *w, size_t n, size_t chars);

typedef struct {
    char *bytes;
    size_t n, cap, chars;
    int growable;
    word_fn emit;
    void *ctx;
    char fixed[WORD_FIXED_BYTES];
} word_acc;

static void word_init(word_acc *w, int growable, word_fn emit, void *ctx) {
    w->bytes = w->fixed;
    w->n = w->chars = 0;
    w->cap = sizeof w->fixed;
    w->growable = growable;
    w->emit = emit;
    w->ctx = ctx;
}

static void word_free(word_acc *w) {
    if (w->bytes != w->fixed) free(w->bytes);
}

/* Makes room for one more character; 0 when a fixed buffer is full (the word is
 * then only counted). */
static int word_room(word_acc *w) {
    if (w->n + 4 <= w->cap) return 1;
    if (!w->growable) return 0;
    size_t cap = 2 * w->cap;
    char *b = mlm_xmalloc(cap, "pre-tokenizer word");
    memcpy(b, w->bytes, w->n);
    word_free(w);
    w->bytes = b;
    w->cap = cap;
    return 1;
}

static inline void word_append(word_acc *w, uint32_t cp) {
    w->chars++;
    if (!word_room(w)) return;
    if (cp < 0x80) w->bytes[w->n++] = (char)cp;
    else w->n += mlm_utf8_encode(cp, w->bytes + w->n);
}

static void word_end(word_acc *w) {
    if (w->chars) w->emit(w->ctx, w->bytes, w->n, w->chars);
    w->n = w->chars = 0;
}

/* Pre-tokenizer: spaces end a word, punctuation is a word of its own. */
static inline void pretok_push(word_acc *w, uint32_t cp) {
    if (cp == ' ') {
        word_end(w);
    } else if (is_punct(cp)) {
        word_end(w);
        word_append(w, cp);
        word_end(w);
    } else {
        word_append(w, cp);
    }
}

/* ---- normalisation ---- */

/* Uncased text goes through NFD, loses its nonspacing marks and is lowercased.
 * Canonical reordering only moves combining marks (ccc > 0) among themselves, and
 * dropping the Mn ones commutes with it, so only the rare marks that survive
 * (Mc with ccc > 0) wait in pending until the next starter. */
typedef struct {
    int cased;
    word_acc *w;
    uint32_t pending[MAX_PENDING_MARKS];
    int npending;
} normalizer;

static uint32_t lowercase(uint32_t cp) {
    uint32_t low = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
    return low != cp ? low : hf_lowercase_extra(cp);
}

static void flush_pending(normalizer *nz) {
    for (int i = 0; i < nz->npending; i++) pretok_push(nz->w, lowercase(nz->pending[i]));
    nz->npending = 0;
}

/* Canonical combining class, 0 for the marks HF's NFD does not know. */
static int combining_class(uint32_t cp) {
    int ccc = utf8proc_get_property((utf8proc_int32_t)cp)->combining_class;
    return ccc && !IN_RANGES(hf_no_combining_class, cp) ? ccc : 0;
}

/* Inserts a combining mark after those of lower or equal class (a stable sort). */
static void add_pending(normalizer *nz, uint32_t cp, int ccc) {
    if (nz->npending == MAX_PENDING_MARKS) flush_pending(nz); // pathological stacks of marks
    int i = nz->npending++;
    for (; i > 0 && combining_class(nz->pending[i - 1]) > ccc; i--) nz->pending[i] = nz->pending[i - 1];
    nz->pending[i] = cp;
}

static void uncased_push_decomposed(normalizer *nz, uint32_t cp) {
    int ccc = combining_class(cp);
    if (ccc == 0) flush_pending(nz);
    if (is_nonspacing_mark(cp)) return;
    if (ccc) add_pending(nz, cp, ccc);
    else pretok_push(nz->w, lowercase(cp));
}

/* One code point after clean_text and CJK spacing. */
static void normalized_push(normalizer *nz, uint32_t cp) {
    if (nz->cased) {
        pretok_push(nz->w, cp);
        return;
    }
    utf8proc_int32_t d[8] = {(utf8proc_int32_t)cp};
    utf8proc_ssize_t n = 1;
    if (!IN_RANGES(hf_not_decomposed, cp)) n = utf8proc_decompose_char(d[0], d, 8, UTF8PROC_DECOMPOSE, NULL);
    if (n < 1 || n > 8) d[0] = (utf8proc_int32_t)cp, n = 1; // cannot happen for valid code points
    for (utf8proc_ssize_t i = 0; i < n; i++) uncased_push_decomposed(nz, (uint32_t)d[i]);
}

/* clean_text and handle_chinese_chars on one decoded code point. */
static void clean_push(normalizer *nz, uint32_t cp) {
    if (is_dropped(cp)) return;
    if (is_space(cp)) {
        normalized_push(nz, ' ');
    } else if (is_cjk(cp)) {
        normalized_push(nz, ' ');
        normalized_push(nz, cp);
        normalized_push(nz, ' ');
    } else {
        normalized_push(nz, cp);
    }
}

/* ASCII skips every table: no ASCII character is CJK, decomposable or a mark. */
static inline void ascii_push(normalizer *nz, uint8_t c) {
    if (c < ' ' || c == 0x7F) {
        if (c != '\t' && c != '\n' && c != '\r') return; // clean_text drops controls
        c = ' ';
    }
    if (!nz->cased) {
        if (nz->npending) flush_pending(nz);
        if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
    }
    pretok_push(nz->w, c);
}

/* Normalises and pre-tokenizes len bytes, emitting every word through w. */
static void split_words(const char *text, size_t len, int cased, word_acc *w) {
    normalizer nz = {.cased = cased, .w = w};
    const uint8_t *s = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x80) {
            ascii_push(&nz, s[i++]);
            continue;
        }
        uint32_t cp;   // ill-formed bytes are U+FFFD, which clean_text drops (as HF's does)
        i += mlm_utf8_decode(s + i, len - i, &cp);
        clean_push(&nz, cp);
    }
    flush_pending(&nz);
    word_end(w);
}

typedef struct {
    void (*word)(void *ctx, const char *w, size_t n);
    void *ctx;
} pretok_sink;

static void pretok_emit(void *ctx, const char *w, size_t n, size_t chars) {
    pretok_sink *s = ctx;
    s->word(s->ctx, w, n);
}

void mlm_pretokenize(const char *text, size_t len, int cased, void (*word)(void *ctx, const char *w, size_t n),
                     void *ctx) {
    pretok_sink sink = {word, ctx};
    word_acc w;
    word_init(&w, 1, pretok_emit, &sink);
    split_words(text, len, cased, &w);
    word_free(&w);
}

/* ---- WordPiece ---- */

typedef struct {
    const mlm_tokenizer *t;
    int32_t **ids;
    size_t *n, *cap;
} id_sink;

void mlm_ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id) {
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        int32_t *p = realloc(*ids, c * sizeof(int32_t));
        if (!p) mlm_die(MLM_EXIT_RUNTIME, "out of memory: %zu token ids", c);
        *ids = p;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
}

static void push_id(id_sink *o, int32_t id) { mlm_ids_push(o->ids, o->n, o->cap, id); }

/* Longest vocabulary piece at w[0..n) (in table), as its end offset; 0 if none.
 * Hashes of every prefix come from one pass, so each candidate costs one probe. */
static size_t longest_piece(const vocab_table *table, const char *w, size_t n, int32_t *id) {
    size_t max = n < table->max_len ? n : table->max_len;
    uint64_t h[WORD_FIXED_BYTES + 1];
    h[0] = MLM_FNV_OFFSET;
    for (size_t i = 0; i < max; i++) h[i + 1] = fnv_step(h[i], (uint8_t)w[i]);
    for (size_t end = max; end > 0; end--) {
        if (end < n && ((uint8_t)w[end] & 0xC0) == 0x80) continue; // inside a character
        if ((*id = table_get(table, w, end, h[end])) >= 0) return end;
    }
    return 0;
}

/* Greedy longest-match-first; a word with a piece not in the vocabulary, or of more
 * than MAX_WORD_CHARS characters, is a single [UNK]. */
static void wordpiece(void *ctx, const char *w, size_t n, size_t chars) {
    id_sink *o = ctx;
    const mlm_tokenizer *t = o->t;
    size_t first = *o->n;
    if (chars > MAX_WORD_CHARS) {
        push_id(o, t->special.unk);
        return;
    }
    for (size_t start = 0; start < n;) {
        int32_t id;
        size_t len = longest_piece(start ? &t->cont : &t->first, w + start, n - start, &id);
        if (len == 0) {
            *o->n = first;
            push_id(o, t->special.unk);
            return;
        }
        push_id(o, id);
        start += len;
    }
}

/* Index of the special token that starts at s (longest first), or -1. */
static int special_at(const mlm_tokenizer *t, const char *s, size_t n) {
    int best = -1;
    for (int i = 0; i < N_SPECIALS; i++)
        if (t->special_len[i] <= n && !memcmp(s, t->special_text[i], t->special_len[i]) &&
            (best < 0 || t->special_len[i] > t->special_len[best]))
            best = i;
    return best;
}

size_t mlm_tokenize(const mlm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                    size_t *cap) {
    if (t->bpe) return mlm_bpe_tokenize(t->bpe, text, len, ids, n, cap);
    size_t before = *n;
    if (len == 0) return 0;
    id_sink out = {t, ids, n, cap};
    word_acc w;
    word_init(&w, 0, wordpiece, &out);
    size_t start = 0; // text before start is done
    const char *b = text;
    while ((b = memchr(b, '[', len - (size_t)(b - text)))) {
        int sp = special_at(t, b, len - (size_t)(b - text));
        if (sp < 0) {
            b++;
            continue;
        }
        split_words(text + start, (size_t)(b - text) - start, t->cased, &w);
        push_id(&out, t->special_id[sp]);
        start = (size_t)(b - text) + t->special_len[sp];
        b = text + start;
    }
    split_words(text + start, len - start, t->cased, &w);
    return *n - before;
}

size_t mlm_encode(const mlm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap) {
    size_t before = *n;
    id_sink out = {t, ids, n, cap};
    push_id(&out, t->special.cls);
    mlm_tokenize(t, text, len, ids, n, cap);
    push_id(&out, t->special.sep);
    return *n - before;
}

/* ---- either kind ---- */

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = mlm_xmalloc(n, "path");
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The kind is told by the file name: *.json is byte-level BPE (merges.txt beside
 * it), anything else a WordPiece vocab.txt; a directory by which of vocab.json and
 * vocab.txt it holds (vocab.json first). */
int mlm_vocab_paths(const char *path, char **vocab_out, char **merges_out, char *err, size_t err_len) {
    *vocab_out = *merges_out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return mlm_fail(err, err_len, "%s: cannot open: no such file or directory", path);
    char *vocab, *merges = NULL;
    if (S_ISDIR(st.st_mode)) {
        vocab = join_path(path, "vocab.json");
        if (!is_file(vocab)) {
            free(vocab);
            vocab = join_path(path, "vocab.txt");
            if (!is_file(vocab)) {
                free(vocab);
                return mlm_fail(err, err_len, "%s: holds neither vocab.json (+ merges.txt) nor vocab.txt", path);
            }
        }
    } else {
        vocab = strdup(path);
    }
    size_t vl = strlen(vocab);
    if (vl >= 5 && !strcmp(vocab + vl - 5, ".json")) {
        const char *slash = strrchr(vocab, '/');
        if (slash) {
            char *dir = strndup(vocab, (size_t)(slash - vocab));
            merges = join_path(dir, "merges.txt");
            free(dir);
        } else {
            merges = strdup("merges.txt");
        }
        if (!is_file(merges)) {
            mlm_fail(err, err_len, "%s: a byte-level BPE vocabulary needs merges.txt beside it: %s is missing",
                     vocab, merges);
            free(vocab);
            free(merges);
            return -1;
        }
    }
    *vocab_out = vocab;
    *merges_out = merges;
    return 0;
}

mlm_tokenizer *mlm_tokenizer_open(const char *path, int cased, char *err, size_t err_len) {
    char *vocab, *merges;
    if (mlm_vocab_paths(path, &vocab, &merges, err, err_len) != 0) return NULL;
    if (merges) {
        mlm_bpe *b = mlm_bpe_load(vocab, merges, err, err_len);
        if (!b) {
            free(vocab);
            free(merges);
            return NULL;
        }
        mlm_tokenizer *t = mlm_xcalloc(1, sizeof *t, "tokenizer");
        t->kind = MLM_TOK_BPE;
        t->bpe = b;
        t->special = mlm_bpe_special(b);
        t->files[0] = vocab;
        t->files[1] = merges;
        t->nfiles = 2;
        return t;
    }
    mlm_vocab *v = mlm_xcalloc(1, sizeof *v, "vocab");
    if (mlm_vocab_load(v, vocab, err, err_len) != 0) {
        free(v);
        free(vocab);
        return NULL;
    }
    mlm_special_ids sp; // first, for an error that names the file
    mlm_tokenizer *t = mlm_special_ids_from_vocab(v, v->count, &sp, vocab, err, err_len) == 0
                           ? mlm_tokenizer_new(v, cased, err, err_len)
                           : NULL;
    if (!t) {
        mlm_vocab_free(v);
        free(v);
        free(vocab);
        return NULL;
    }
    t->own_vocab = v;
    t->files[0] = vocab;
    t->nfiles = 1;
    return t;
}

mlm_tok_kind mlm_tokenizer_kind(const mlm_tokenizer *t) { return t->kind; }

int mlm_tokenizer_size(const mlm_tokenizer *t) { return t->bpe ? mlm_bpe_size(t->bpe) : t->vocab->count; }

const char *mlm_tokenizer_token(const mlm_tokenizer *t, int id) {
    if (t->bpe) return mlm_bpe_token(t->bpe, id);
    return id >= 0 && id < t->vocab->count ? t->vocab->tokens[id] : NULL;
}

int mlm_tokenizer_find(const mlm_tokenizer *t, const char *token) {
    if (t->bpe) return mlm_bpe_find(t->bpe, token);
    size_t n = strlen(token);
    return table_get(&t->first, token, n, fnv(token, n));
}

int mlm_tokenizer_word_start(const mlm_tokenizer *t, int id) {
    if (t->bpe) return mlm_bpe_word_start(t->bpe, id);
    const char *s = mlm_tokenizer_token(t, id);
    if (!s) return 0;
    for (int i = 0; i < N_SPECIALS; i++)
        if (id == t->special_id[i]) return 1;
    return !(s[0] == '#' && s[1] == '#' && s[2]);
}

/* WordPiece: tokens joined by spaces, a "##" piece glued to the one before it. */
size_t mlm_tokenizer_decode(const mlm_tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap) {
    if (t->bpe) return mlm_bpe_decode(t->bpe, ids, n, out, cap);
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
        const char *s = mlm_tokenizer_token(t, ids[k]);
        if (!s) continue;
        int cont = s[0] == '#' && s[1] == '#' && s[2];
        if (cont) s += 2;
        else if (o) {
            if (o + 1 < cap) out[o] = ' ';
            o++;
        }
        for (; *s; s++, o++)
            if (o + 1 < cap) out[o] = *s;
    }
    if (cap) out[o < cap ? o : cap - 1] = 0;
    return o;
}

int mlm_tokenizer_files(const mlm_tokenizer *t, const char *paths[2]) {
    paths[0] = t->files[0];
    paths[1] = t->files[1];
    return t->nfiles;
}
