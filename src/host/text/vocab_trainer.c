/*
 * WordPiece vocabulary trainer (include/mlm/vocab_trainer.h): HF's WordPiece
 * trainer, which is BPE with "##" on the symbols inside a word.
 *
 * Every distinct word is a sequence of symbol ids with the word's count. The count
 * of every adjacent pair of symbols, and the words it occurs in, are kept up to
 * date while merging; a max-heap of (count, pair) picks the next merge. Heap
 * entries go stale when a count drops: a popped entry whose count is no longer
 * the pair's is pushed again with the current count (as HF does). A merge only
 * visits the words listed for its pair.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mlm/data.h"
#include "mlm/fileio.h"
#include "mlm/log.h"
#include "mlm/vocab_trainer.h"
#include "word_counts.h"

#define N_CODEPOINTS 0x110000
#define N_SPECIALS 5
#define NO_ID UINT32_MAX

static const char *const SPECIALS[N_SPECIALS] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

/* ---- tokens: id -> string, and string -> id to notice merges that give an existing token ---- */

typedef struct {
    char **text;       // (n) NUL-terminated, malloc'd
    size_t n, cap;
    uint32_t *index;   // open addressing over ids; NO_ID = empty
    size_t index_mask;
} token_set;

static uint64_t str_hash(const char *s) { return mlm_fnv1a(MLM_FNV_OFFSET, s, strlen(s)); }

static void tokens_init(token_set *t, int vocab_size) {
    size_t cap = 16;
    while (cap < 2 * (size_t)vocab_size) cap *= 2;
    t->text = NULL;
    t->n = t->cap = 0;
    t->index = mlm_xmalloc(cap * sizeof(uint32_t), "token index");
    memset(t->index, 0xFF, cap * sizeof(uint32_t));
    t->index_mask = cap - 1;
}

static uint32_t *token_slot(const token_set *t, const char *s) {
    for (size_t i = str_hash(s) & t->index_mask;; i = (i + 1) & t->index_mask)
        if (t->index[i] == NO_ID || !strcmp(t->text[t->index[i]], s)) return &t->index[i];
}

static void tokens_grow_index(token_set *t) {
    free(t->index);
    size_t cap = 2 * (t->index_mask + 1);
    t->index = mlm_xmalloc(cap * sizeof(uint32_t), "token index");
    memset(t->index, 0xFF, cap * sizeof(uint32_t));
    t->index_mask = cap - 1;
    for (size_t id = 0; id < t->n; id++) *token_slot(t, t->text[id]) = (uint32_t)id;
}

/* Id of s, added (taking ownership of s) when new; an existing token frees s. */
static uint32_t tokens_add(token_set *t, char *s) {
    uint32_t *slot = token_slot(t, s);
    if (*slot != NO_ID) {
        free(s);
        return *slot;
    }
    if (t->n == t->cap && !(t->text = realloc(t->text, (t->cap = t->cap ? 2 * t->cap : 1024) * sizeof(char *))))
        mlm_die(MLM_EXIT_RUNTIME, "out of memory: %zu tokens", t->cap);
    t->text[t->n] = s;
    *slot = (uint32_t)t->n++;
    if (2 * t->n > t->index_mask + 1) tokens_grow_index(t);
    return (uint32_t)t->n - 1;
}

static void tokens_free(token_set *t) {
    for (size_t i = 0; i < t->n; i++) free(t->text[i]);
    free(t->text);
    free(t->index);
}

static char *utf8_token(const char *prefix, uint32_t cp) {
    char buf[8];
    size_t n = 0;
    if (cp < 0x80) buf[n++] = (char)cp;
    else if (cp < 0x800) buf[n++] = (char)(0xC0 | cp >> 6);
    else if (cp < 0x10000) buf[n++] = (char)(0xE0 | cp >> 12);
    else buf[n++] = (char)(0xF0 | cp >> 18);
    for (int shift = cp < 0x80 ? -6 : cp < 0x800 ? 0 : cp < 0x10000 ? 6 : 12; shift >= 0; shift -= 6)
        buf[n++] = (char)(0x80 | (cp >> shift & 0x3F));
    char *s = mlm_xmalloc(strlen(prefix) + n + 1, "token");
    sprintf(s, "%s%.*s", prefix, (int)n, buf);
    return s;
}

/* Decodes the well-formed UTF-8 that mlm_pretokenize emits. */
static uint32_t next_cp(const char *w, size_t *i) {
    uint8_t b = (uint8_t)w[*i];
    int len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? b : b & (0x7F >> len);
    for (int k = 1; k < len; k++) cp = cp << 6 | ((uint8_t)w[*i + k] & 0x3F);
    *i += (size_t)len;
    return cp;
}

/* ---- the initial alphabet ---- */

typedef struct {
    uint32_t *first; // (N_CODEPOINTS) id of "c", NO_ID when c is not in the alphabet
    uint32_t *inner; // (N_CODEPOINTS) id of "##c", NO_ID when c never follows another character
    int chars, continuations;
} alphabet;

typedef struct {
    uint32_t cp;
    uint64_t count;
} char_count;

static int cmp_char_counts(const void *pa, const void *pb) {
    const char_count *a = pa, *b = pb;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    return (a->cp > b->cp) - (a->cp < b->cp);
}

/* Drops all but the limit most frequent characters (ties: lower code point kept). */
static void limit_alphabet(uint64_t *counts, int limit) {
    size_t n = 0;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++) n += counts[cp] > 0;
    if (limit <= 0 || n <= (size_t)limit) return;
    char_count *c = mlm_xmalloc(n * sizeof(char_count), "alphabet");
    n = 0;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++)
        if (counts[cp]) c[n++] = (char_count){cp, counts[cp]};
    qsort(c, n, sizeof(char_count), cmp_char_counts);
    for (size_t i = (size_t)limit; i < n; i++) counts[c[i].cp] = 0;
    free(c);
}

/* Characters by code point, then "##" forms of those that occur inside words. */
static void build_alphabet(const mlm_word_counts *wc, int limit, token_set *tokens, alphabet *al) {
    uint64_t *counts = mlm_xcalloc(N_CODEPOINTS, sizeof(uint64_t), "character counts");
    uint8_t *inside = mlm_xcalloc(N_CODEPOINTS, 1, "character flags");
    for (size_t w = 0; w < wc->n; w++)
        for (size_t i = 0, k = 0; i < wc->items[w].len; k++) {
            uint32_t cp = next_cp(wc->items[w].word, &i);
            counts[cp] += wc->items[w].count;
            inside[cp] |= k > 0;
        }
    limit_alphabet(counts, limit);
    al->first = mlm_xmalloc(N_CODEPOINTS * sizeof(uint32_t), "alphabet");
    al->inner = mlm_xmalloc(N_CODEPOINTS * sizeof(uint32_t), "alphabet");
    al->chars = al->continuations = 0;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++) {
        al->first[cp] = al->inner[cp] = NO_ID;
        if (counts[cp]) al->first[cp] = tokens_add(tokens, utf8_token("", cp)), al->chars++;
    }
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++)
        if (counts[cp] && inside[cp]) al->inner[cp] = tokens_add(tokens, utf8_token("##", cp)), al->continuations++;
    free(counts);
    free(inside);
}

static void alphabet_free(alphabet *al) {
    free(al->first);
    free(al->inner);
}

/* ---- words as symbol sequences ---- */

typedef struct {
    uint32_t *sym;   // every word's symbols, back to back
    uint64_t *start; // (n) word i's first symbol
    uint32_t *len;   // (n) word i's symbols; merges shrink it
    uint64_t *count; // (n) occurrences of word i
    uint32_t *stamp; // (n) the last merge that visited word i
    size_t n;
} word_set;

/* A character outside the alphabet (limit_alphabet) is left out of its word, as
 * HF does; "##" goes on every character but a word's first. */
static void build_words(const mlm_word_counts *wc, const alphabet *al, word_set *ws) {
    uint64_t total = 0;
    for (size_t w = 0; w < wc->n; w++) total += wc->items[w].len;
    ws->n = wc->n;
    ws->sym = mlm_xmalloc((total ? total : 1) * sizeof(uint32_t), "word symbols");
    ws->start = mlm_xmalloc(ws->n * sizeof(uint64_t), "words");
    ws->len = mlm_xmalloc(ws->n * sizeof(uint32_t), "words");
    ws->count = mlm_xmalloc(ws->n * sizeof(uint64_t), "words");
    ws->stamp = mlm_xcalloc(ws->n, sizeof(uint32_t), "words");
    uint64_t at = 0;
    for (size_t w = 0; w < wc->n; w++) {
        ws->start[w] = at;
        ws->count[w] = wc->items[w].count;
        for (size_t i = 0, k = 0; i < wc->items[w].len; k++) {
            uint32_t cp = next_cp(wc->items[w].word, &i);
            uint32_t id = k ? al->inner[cp] : al->first[cp];
            if (id != NO_ID) ws->sym[at++] = id;
        }
        ws->len[w] = (uint32_t)(at - ws->start[w]);
    }
}

static void words_free(word_set *ws) {
    free(ws->sym);
    free(ws->start);
    free(ws->len);
    free(ws->count);
    free(ws->stamp);
}

/* ---- pairs of adjacent symbols, and the heap that orders them ---- */

typedef struct {
    uint32_t a, b;
    int64_t count;      // occurrences, weighted by word counts
    int64_t pushed;     // count of its newest heap entry
    uint32_t *words;    // words it may occur in (possibly stale, possibly repeated)
    uint32_t nwords, cap_words;
    int touched;        // changed during the current merge
} pair;

typedef struct {
    int64_t count;
    uint32_t a, b;
} heap_entry;

typedef struct {
    pair *p;            // (n) pairs are addressed by index: the array moves as it grows
    size_t n, cap;
    uint32_t *index;    // open addressing over pair indices, keyed by (a, b)
    size_t mask;
    heap_entry *heap;
    size_t nheap, cap_heap;
    uint32_t *touched;  // (ntouched) pairs changed during the current merge
    size_t ntouched, cap_touched;
} pair_set;

static uint64_t pair_hash(uint32_t a, uint32_t b) {
    uint64_t k = (uint64_t)a << 32 | b;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull; // murmur3 finaliser
    k ^= k >> 33;
    return k;
}

static void *grow(void *p, size_t *cap, size_t elem, const char *what) {
    *cap = *cap ? 2 * *cap : 1024;
    p = realloc(p, *cap * elem);
    if (!p) mlm_die(MLM_EXIT_RUNTIME, "out of memory: %zu %s", *cap, what);
    return p;
}

static uint32_t *pair_slot(const pair_set *ps, uint32_t a, uint32_t b) {
    for (size_t i = pair_hash(a, b) & ps->mask;; i = (i + 1) & ps->mask) {
        uint32_t *s = &ps->index[i];
        if (*s == NO_ID || (ps->p[*s].a == a && ps->p[*s].b == b)) return s;
    }
}

static void pairs_rehash(pair_set *ps, size_t cap) {
    free(ps->index);
    ps->index = mlm_xmalloc(cap * sizeof(uint32_t), "pair index");
    memset(ps->index, 0xFF, cap * sizeof(uint32_t));
    ps->mask = cap - 1;
    for (size_t i = 0; i < ps->n; i++) *pair_slot(ps, ps->p[i].a, ps->p[i].b) = (uint32_t)i;
}

/* Index of pair (a, b), created with count 0 when new. */
static uint32_t pair_get(pair_set *ps, uint32_t a, uint32_t b) {
    uint32_t *slot = pair_slot(ps, a, b);
    if (*slot != NO_ID) return *slot;
    if (ps->n == ps->cap) ps->p = grow(ps->p, &ps->cap, sizeof(pair), "pairs");
    ps->p[ps->n] = (pair){.a = a, .b = b};
    *slot = (uint32_t)ps->n++;
    if (2 * ps->n > ps->mask + 1) pairs_rehash(ps, 2 * (ps->mask + 1));
    return (uint32_t)ps->n - 1;
}

static int heap_before(const heap_entry *x, const heap_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    return x->a != y->a ? x->a < y->a : x->b < y->b; // ties: the smaller ids, as HF
}

static void heap_push(pair_set *ps, uint32_t pi) {
    pair *p = &ps->p[pi];
    p->pushed = p->count;
    if (ps->nheap == ps->cap_heap) ps->heap = grow(ps->heap, &ps->cap_heap, sizeof(heap_entry), "heap entries");
    size_t i = ps->nheap++;
    heap_entry e = {p->count, p->a, p->b};
    for (; i > 0 && heap_before(&e, &ps->heap[(i - 1) / 2]); i = (i - 1) / 2) ps->heap[i] = ps->heap[(i - 1) / 2];
    ps->heap[i] = e;
}

static heap_entry heap_pop(pair_set *ps) {
    heap_entry top = ps->heap[0], last = ps->heap[--ps->nheap];
    size_t i = 0;
    for (size_t c; (c = 2 * i + 1) < ps->nheap; i = c) {
        if (c + 1 < ps->nheap && heap_before(&ps->heap[c + 1], &ps->heap[c])) c++;
        if (!heap_before(&ps->heap[c], &last)) break;
        ps->heap[i] = ps->heap[c];
    }
    ps->heap[i] = last;
    return top;
}

/* Adds delta occurrences of (a, b) in word w. */
static void pair_change(pair_set *ps, uint32_t a, uint32_t b, int64_t delta, uint32_t w) {
    uint32_t pi = pair_get(ps, a, b);
    pair *p = &ps->p[pi];
    p->count += delta;
    if (delta > 0 && (p->nwords == 0 || p->words[p->nwords - 1] != w)) {
        if (p->nwords == p->cap_words) {
            size_t cap = p->cap_words;
            p->words = grow(p->words, &cap, sizeof(uint32_t), "pair positions");
            p->cap_words = (uint32_t)cap;
        }
        p->words[p->nwords++] = w;
    }
    if (!p->touched) {
        p->touched = 1;
        if (ps->ntouched == ps->cap_touched)
            ps->touched = grow(ps->touched, &ps->cap_touched, sizeof(uint32_t), "pairs");
        ps->touched[ps->ntouched++] = pi;
    }
}

/* Pushes the pairs whose count rose; a lower count waits for its old entry to pop. */
static void push_touched(pair_set *ps) {
    for (size_t i = 0; i < ps->ntouched; i++) {
        pair *p = &ps->p[ps->touched[i]];
        p->touched = 0;
        if (p->count > p->pushed) heap_push(ps, ps->touched[i]);
    }
    ps->ntouched = 0;
}

static void count_pairs(const word_set *ws, pair_set *ps) {
    pairs_rehash(ps, 1u << 16);
    for (size_t w = 0; w < ws->n; w++) {
        const uint32_t *s = ws->sym + ws->start[w];
        for (uint32_t i = 0; i + 1 < ws->len[w]; i++)
            pair_change(ps, s[i], s[i + 1], (int64_t)ws->count[w], (uint32_t)w);
    }
    push_touched(ps);
}

/* The most frequent pair, or NO_ID when none is left. Entries whose count went
 * stale go back with the current count; if it rose, a newer entry is ahead. */
static uint32_t pop_best(pair_set *ps) {
    while (ps->nheap) {
        heap_entry e = heap_pop(ps);
        uint32_t pi = *pair_slot(ps, e.a, e.b);
        int64_t now = ps->p[pi].count;
        if (now == e.count) return pi;
        if (now > 0 && now < e.count) heap_push(ps, pi);
    }
    return NO_ID;
}

static void pairs_free(pair_set *ps) {
    for (size_t i = 0; i < ps->n; i++) free(ps->p[i].words);
    free(ps->p);
    free(ps->index);
    free(ps->heap);
    free(ps->touched);
}

/* ---- merging ---- */

/* Replaces every (x, y) in word w by z, left to right, and moves the counts of the
 * neighbouring pairs from x and y to z. */
static void merge_word(word_set *ws, pair_set *ps, uint32_t w, uint32_t x, uint32_t y, uint32_t z) {
    uint32_t *s = ws->sym + ws->start[w];
    uint32_t n = ws->len[w], out = 0;
    int64_t f = (int64_t)ws->count[w];
    for (uint32_t r = 0; r < n;) {
        if (r + 1 < n && s[r] == x && s[r + 1] == y) {
            if (out > 0) {
                pair_change(ps, s[out - 1], x, -f, w);
                pair_change(ps, s[out - 1], z, f, w);
            }
            if (r + 2 < n) {
                pair_change(ps, y, s[r + 2], -f, w);
                pair_change(ps, z, s[r + 2], f, w);
            }
            s[out++] = z;
            r += 2;
        } else {
            s[out++] = s[r++];
        }
    }
    ws->len[w] = out;
}

/* The token of pair (a, b): a's text, then b's without its "##". */
static char *merged_text(const token_set *t, uint32_t a, uint32_t b) {
    const char *x = t->text[a], *y = t->text[b];
    if (!strncmp(y, "##", 2)) y += 2;
    char *s = mlm_xmalloc(strlen(x) + strlen(y) + 1, "token");
    strcpy(s, x);
    strcat(s, y);
    return s;
}

/* Merges pair pi everywhere; its word list is taken out first because
 * pair_change may move the pair array. */
static void apply_merge(word_set *ws, pair_set *ps, uint32_t pi, uint32_t z, uint32_t step) {
    pair *p = &ps->p[pi];
    uint32_t x = p->a, y = p->b, *words = p->words, nwords = p->nwords;
    p->words = NULL;
    p->nwords = p->cap_words = 0;
    for (uint32_t i = 0; i < nwords; i++) {
        uint32_t w = words[i];
        if (ws->stamp[w] == step) continue;
        ws->stamp[w] = step;
        merge_word(ws, ps, w, x, y, z);
    }
    free(words);
    ps->p[pi].count = 0;
    push_touched(ps);
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Merges until the vocabulary is full or no pair is frequent enough; returns the
 * number of merges. */
static int merge_loop(word_set *ws, pair_set *ps, token_set *t, const mlm_vocab_train_opts *o) {
    int merges = 0;
    double last = seconds_now();
    while (t->n < (size_t)o->vocab_size) {
        uint32_t pi = pop_best(ps);
        if (pi == NO_ID || (uint64_t)ps->p[pi].count < o->min_frequency) break;
        uint32_t z = tokens_add(t, merged_text(t, ps->p[pi].a, ps->p[pi].b));
        apply_merge(ws, ps, pi, z, (uint32_t)++merges);
        if (o->progress && seconds_now() - last >= 2.0) {
            last = seconds_now();
            mlm_log("vocab: %d merges, %zu of %d tokens", merges, t->n, o->vocab_size);
        }
    }
    return merges;
}

/* ---- the whole training ---- */

static void pack_tokens(const token_set *t, mlm_trained_vocab *out) {
    size_t bytes = 0;
    for (size_t i = 0; i < t->n; i++) bytes += strlen(t->text[i]) + 1;
    out->count = (int)t->n;
    out->text = mlm_xmalloc(bytes, "vocabulary");
    out->tokens = mlm_xmalloc(t->n * sizeof(char *), "vocabulary");
    char *p = out->text;
    for (size_t i = 0; i < t->n; i++) {
        out->tokens[i] = strcpy(p, t->text[i]);
        p += strlen(p) + 1;
    }
}

static int check_initial_size(const mlm_trained_vocab *out, size_t initial, int vocab_size, char *err,
                              size_t err_len) {
    if (initial <= (size_t)vocab_size) return 0;
    return mlm_fail(err, err_len,
                    "vocab size %d is smaller than the initial vocabulary of %zu tokens (%d special, %d "
                    "characters, %d \"##\" continuations): raise the vocab size or limit the alphabet",
                    vocab_size, initial, N_SPECIALS, out->alphabet, out->continuations);
}

/* Builds the vocabulary from word counts. */
static int train(const mlm_word_counts *wc, const mlm_vocab_train_opts *o, mlm_trained_vocab *out, char *err,
                 size_t err_len) {
    token_set t;
    tokens_init(&t, o->vocab_size);
    for (int i = 0; i < N_SPECIALS; i++) tokens_add(&t, strdup(SPECIALS[i]));
    alphabet al;
    build_alphabet(wc, o->limit_alphabet, &t, &al);
    out->alphabet = al.chars;
    out->continuations = al.continuations;
    int rc = check_initial_size(out, t.n, o->vocab_size, err, err_len);
    if (rc == 0) {
        word_set ws;
        build_words(wc, &al, &ws);
        pair_set ps = {0};
        count_pairs(&ws, &ps);
        out->merges = merge_loop(&ws, &ps, &t, o);
        pairs_free(&ps);
        words_free(&ws);
        pack_tokens(&t, out);
    }
    alphabet_free(&al);
    tokens_free(&t);
    return rc;
}

int mlm_vocab_train(const char *const *inputs, int ninputs, const mlm_vocab_train_opts *o,
                    mlm_trained_vocab *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    mlm_word_counts wc;
    if (mlm_count_words(inputs, ninputs, o->cased, o->threads, o->progress, &wc, err, err_len) != 0) return -1;
    out->bytes = wc.bytes;
    out->words = wc.words;
    out->distinct_words = wc.n;
    int rc = 0;
    if (wc.n == 0)
        rc = mlm_fail(err, err_len, "%s%s: no words to train on (%d file%s, %llu bytes)",
                      ninputs ? inputs[0] : "input", ninputs > 1 ? " ..." : "", wc.files, wc.files == 1 ? "" : "s",
                      (unsigned long long)wc.bytes);
    else rc = train(&wc, o, out, err, err_len);
    mlm_word_counts_free(&wc);
    return rc;
}

int mlm_vocab_write(const mlm_trained_vocab *v, const char *path, char *err, size_t err_len) {
    size_t bytes = 0;
    for (int i = 0; i < v->count; i++) bytes += strlen(v->tokens[i]) + 1;
    char *buf = mlm_xmalloc(bytes + 1, "vocab.txt"), *p = buf; // + 1: sprintf's final NUL
    for (int i = 0; i < v->count; i++) p += sprintf(p, "%s\n", v->tokens[i]);
    const void *parts[1] = {buf};
    int rc = mlm_write_file_atomic(path, parts, &bytes, 1, err, err_len);
    free(buf);
    return rc;
}

void mlm_trained_vocab_free(mlm_trained_vocab *v) {
    free(v->tokens);
    free(v->text);
    memset(v, 0, sizeof *v);
}
