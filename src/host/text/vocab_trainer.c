/*
 * Vocabulary trainer (include/mlm/vocab_trainer.h): HF's BPE trainer, for
 * byte-level BPE (symbols are bytes) and for WordPiece (HF's WordPiece trainer is
 * the same BPE with "##" on the symbols inside a word). Only the special tokens,
 * the initial alphabet and the output differ; the merge loop is one.
 *
 * Every distinct word is a sequence of symbol ids with the word's count. The count
 * of every adjacent pair of symbols is kept up to date while merging; a max-heap of
 * (count, pair) entries picks the next merge. The loop is HF's step for step,
 * because its bookkeeping shows in the result when a merge gives an existing token:
 * an entry carries the words it will merge (the words where its pair appeared in
 * the step that pushed it); every step pushes one entry for each pair that gained
 * occurrences, with those words; a popped entry whose count is not the pair's
 * current count is pushed again with the current count; and the count of a merged
 * pair is left as it is.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mlm/data.h"
#include "mlm/fileio.h"
#include "mlm/log.h"
#include "mlm/tokenizer.h"
#include "mlm/vocab_trainer.h"
#include "utf8.h"
#include "word_counts.h"

#define N_CODEPOINTS 0x110000
#define N_SPECIALS 5
#define NO_ID UINT32_MAX

static const char *const WORDPIECE_SPECIALS[N_SPECIALS] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
static const char *const BPE_SPECIALS[N_SPECIALS] = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"};

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
    char buf[4];
    size_t n = mlm_utf8_encode(cp, buf);
    char *s = mlm_xmalloc(strlen(prefix) + n + 1, "token");
    sprintf(s, "%s%.*s", prefix, (int)n, buf);
    return s;
}

/* The code point at w[*i] (the well-formed UTF-8 that mlm_pretokenize emits, n
 * bytes in all), *i moved past it. */
static uint32_t next_cp(const char *w, size_t n, size_t *i) {
    uint32_t cp;
    *i += mlm_utf8_decode((const uint8_t *)w + *i, n - *i, &cp);
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
            uint32_t cp = next_cp(wc->items[w].word, wc->items[w].len, &i);
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

static int cmp_u32(const void *pa, const void *pb) {
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return (a > b) - (a < b);
}

/* Byte-level BPE: the 256 characters of the byte-to-unicode map, by code point
 * (HF sorts its alphabet so), whether the text has them or not. */
static void build_byte_alphabet(token_set *tokens, alphabet *al) {
    uint32_t cps[256];
    for (int b = 0; b < 256; b++) cps[b] = mlm_bpe_byte_char((uint8_t)b);
    qsort(cps, 256, sizeof(uint32_t), cmp_u32);
    al->first = mlm_xmalloc(N_CODEPOINTS * sizeof(uint32_t), "alphabet");
    al->inner = NULL;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++) al->first[cp] = NO_ID;
    for (int i = 0; i < 256; i++) al->first[cps[i]] = tokens_add(tokens, utf8_token("", cps[i]));
    al->chars = 256;
    al->continuations = 0;
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

/* WordPiece: a character outside the alphabet (limit_alphabet) is left out of its
 * word, as HF does; "##" goes on every character but a word's first. Byte level:
 * every byte is the symbol of its byte character. */
static void build_words(const mlm_word_counts *wc, const alphabet *al, int bytes, word_set *ws) {
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
            uint32_t id;
            if (bytes) {
                id = al->first[mlm_bpe_byte_char((uint8_t)wc->items[w].word[i++])];
            } else {
                uint32_t cp = next_cp(wc->items[w].word, wc->items[w].len, &i);
                id = k ? al->inner[cp] : al->first[cp];
            }
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
    uint32_t *fresh;    // words it gained occurrences in during the current step
    uint32_t nfresh, cap_fresh;
    int touched;        // changed during the current step
} pair;

typedef struct {
    int64_t count;
    uint32_t a, b;
    uint32_t *words;    // (nwords) the words this entry merges, malloc'd
    uint32_t nwords;
} heap_entry;

typedef struct {
    pair *p;            // (n) pairs are addressed by index: the array moves as it grows
    size_t n, cap;
    uint32_t *index;    // open addressing over pair indices, keyed by (a, b)
    size_t mask;
    heap_entry *heap;
    size_t nheap, cap_heap;
    uint32_t *touched;  // (ntouched) pairs changed during the current step
    size_t ntouched, cap_touched;
} pair_set;

static uint64_t pair_hash(uint32_t a, uint32_t b) {
    uint64_t k = (uint64_t)a << 32 | b;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull; // murmur3 finaliser
    k ^= k >> 33;
    return k;
}

/* Doubles an array's capacity (from first when it has none). */
static void *grow_from(void *p, size_t *cap, size_t first, size_t elem, const char *what) {
    *cap = *cap ? 2 * *cap : first;
    p = realloc(p, *cap * elem);
    if (!p) mlm_die(MLM_EXIT_RUNTIME, "out of memory: %zu %s", *cap, what);
    return p;
}

static void *grow(void *p, size_t *cap, size_t elem, const char *what) { return grow_from(p, cap, 1024, elem, what); }

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

/* HF's order: the higher count first; ties: the smaller pair of ids. */
static int heap_before(const heap_entry *x, const heap_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    return x->a != y->a ? x->a < y->a : x->b < y->b;
}

static void heap_push(pair_set *ps, heap_entry e) {
    if (ps->nheap == ps->cap_heap) ps->heap = grow(ps->heap, &ps->cap_heap, sizeof(heap_entry), "heap entries");
    size_t i = ps->nheap++;
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

/* Adds delta occurrences of (a, b) in word w. A word's changes come together, so
 * comparing with the last word listed keeps the list free of repeats. */
static void pair_change(pair_set *ps, uint32_t a, uint32_t b, int64_t delta, uint32_t w) {
    uint32_t pi = pair_get(ps, a, b);
    pair *p = &ps->p[pi];
    p->count += delta;
    if (delta > 0 && (p->nfresh == 0 || p->fresh[p->nfresh - 1] != w)) {
        if (p->nfresh == p->cap_fresh) {
            size_t cap = p->cap_fresh;
            p->fresh = grow_from(p->fresh, &cap, 4, sizeof(uint32_t), "pair positions"); // most pairs: few words
            p->cap_fresh = (uint32_t)cap;
        }
        p->fresh[p->nfresh++] = w;
    }
    if (!p->touched) {
        p->touched = 1;
        if (ps->ntouched == ps->cap_touched)
            ps->touched = grow(ps->touched, &ps->cap_touched, sizeof(uint32_t), "pairs");
        ps->touched[ps->ntouched++] = pi;
    }
}

/* Ends a step: every pair that gained occurrences gets an entry with its current
 * count and the words it gained them in (none when its count is not positive). */
static void push_touched(pair_set *ps) {
    for (size_t i = 0; i < ps->ntouched; i++) {
        pair *p = &ps->p[ps->touched[i]];
        p->touched = 0;
        if (!p->nfresh) continue;
        if (p->count > 0) heap_push(ps, (heap_entry){p->count, p->a, p->b, p->fresh, p->nfresh});
        else free(p->fresh);
        p->fresh = NULL;
        p->nfresh = p->cap_fresh = 0;
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

/* The next merge into *e, or 0 when none is left (the heap is empty or its top
 * count is not positive). An entry whose count is not its pair's any more goes
 * back with the current count, and the next top is looked at. */
static int pop_best(pair_set *ps, heap_entry *e) {
    while (ps->nheap) {
        *e = heap_pop(ps);
        int64_t now = ps->p[*pair_slot(ps, e->a, e->b)].count;
        if (now != e->count) {
            e->count = now;
            heap_push(ps, *e);
            continue;
        }
        if (e->count >= 1) return 1;
        heap_push(ps, *e); // left for pairs_free
        return 0;
    }
    return 0;
}

static void pairs_free(pair_set *ps) {
    for (size_t i = 0; i < ps->n; i++) free(ps->p[i].fresh);
    for (size_t i = 0; i < ps->nheap; i++) free(ps->heap[i].words);
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

/* The token of pair (a, b): a's text, then b's without the continuation prefix
 * ("##" for WordPiece, none for byte-level BPE). */
static char *merged_text(const token_set *t, uint32_t a, uint32_t b, const char *prefix) {
    const char *x = t->text[a], *y = t->text[b];
    if (*prefix && !strncmp(y, prefix, strlen(prefix))) y += strlen(prefix);
    char *s = mlm_xmalloc(strlen(x) + strlen(y) + 1, "token");
    strcpy(s, x);
    strcat(s, y);
    return s;
}

/* Merges (e->a, e->b) into z in the words of entry e, then ends the step. The
 * pair's own count stays as it is (as HF's does). */
static void apply_merge(word_set *ws, pair_set *ps, heap_entry *e, uint32_t z, uint32_t step) {
    for (uint32_t i = 0; i < e->nwords; i++) {
        uint32_t w = e->words[i];
        if (ws->stamp[w] == step) continue;
        ws->stamp[w] = step;
        merge_word(ws, ps, w, e->a, e->b, z);
    }
    free(e->words);
    push_touched(ps);
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Merges until the vocabulary is full or no pair is frequent enough; the merged
 * pairs go to out->merge_pairs, their number to out->merges. */
static void merge_loop(word_set *ws, pair_set *ps, token_set *t, const char *prefix, const mlm_vocab_train_opts *o,
                       mlm_trained_vocab *out) {
    size_t cap = 0;
    out->merges = 0;
    double last = seconds_now();
    heap_entry e;
    while (t->n < (size_t)o->vocab_size && pop_best(ps, &e)) {
        if ((uint64_t)e.count < o->min_frequency) {
            heap_push(ps, e); // left for pairs_free
            break;
        }
        uint32_t z = tokens_add(t, merged_text(t, e.a, e.b, prefix));
        if (2 * (size_t)out->merges + 2 > cap)
            out->merge_pairs = grow(out->merge_pairs, &cap, sizeof(int32_t), "merges");
        out->merge_pairs[2 * out->merges] = (int32_t)e.a;
        out->merge_pairs[2 * out->merges + 1] = (int32_t)e.b;
        apply_merge(ws, ps, &e, z, (uint32_t)++out->merges);
        if (o->progress && seconds_now() - last >= 2.0) {
            last = seconds_now();
            mlm_log("vocab: %d merges, %zu of %d tokens", out->merges, t->n, o->vocab_size);
        }
    }
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

/* HF gives a larger vocabulary than asked for when the initial one is larger;
 * that is refused here as an input error. */
static int check_initial_size(const mlm_trained_vocab *out, size_t initial, int vocab_size, char *err,
                              size_t err_len) {
    if (initial <= (size_t)vocab_size) return 0;
    if (out->type == MLM_VOCAB_BPE)
        return mlm_fail(err, err_len,
                        "vocab size %d is smaller than the initial byte-level BPE vocabulary of %zu tokens (%d "
                        "special, %d byte characters): raise the vocab size",
                        vocab_size, initial, N_SPECIALS, out->alphabet);
    return mlm_fail(err, err_len,
                    "vocab size %d is smaller than the initial vocabulary of %zu tokens (%d special, %d "
                    "characters, %d \"##\" continuations): raise the vocab size or limit the alphabet",
                    vocab_size, initial, N_SPECIALS, out->alphabet, out->continuations);
}

/* Builds the vocabulary from word counts. */
static int train(const mlm_word_counts *wc, const mlm_vocab_train_opts *o, mlm_trained_vocab *out, char *err,
                 size_t err_len) {
    int bpe = o->type == MLM_VOCAB_BPE;
    const char *const *specials = bpe ? BPE_SPECIALS : WORDPIECE_SPECIALS;
    token_set t;
    tokens_init(&t, o->vocab_size);
    for (int i = 0; i < N_SPECIALS; i++) tokens_add(&t, strdup(specials[i]));
    alphabet al;
    if (bpe) build_byte_alphabet(&t, &al);
    else build_alphabet(wc, o->limit_alphabet, &t, &al);
    out->specials = N_SPECIALS;
    out->alphabet = al.chars;
    out->continuations = al.continuations;
    int rc = check_initial_size(out, t.n, o->vocab_size, err, err_len);
    if (rc == 0) {
        word_set ws;
        build_words(wc, &al, bpe, &ws);
        pair_set ps = {0};
        count_pairs(&ws, &ps);
        merge_loop(&ws, &ps, &t, bpe ? "" : "##", o, out);
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
    out->type = o->type;
    if (o->type == MLM_VOCAB_BPE) { // its initial vocabulary is known before any text is read
        out->alphabet = 256;
        if (check_initial_size(out, N_SPECIALS + 256, o->vocab_size, err, err_len) != 0) return -1;
    }
    mlm_word_split split = o->type == MLM_VOCAB_BPE ? MLM_SPLIT_BYTE_LEVEL
                           : o->cased                ? MLM_SPLIT_CASED
                                                     : MLM_SPLIT_UNCASED;
    mlm_word_counts wc;
    if (mlm_count_words(inputs, ninputs, split, o->threads, o->progress, &wc, err, err_len) != 0) return -1;
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
    if (rc) mlm_trained_vocab_free(out);
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

/* ---- vocab.json and merges.txt, as HF's BPE save_model writes them ---- */

typedef struct {
    char *p;
    size_t n, cap;
} text_buf;

static void buf_put(text_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n) + 4096;
        if (!(b->p = realloc(b->p, b->cap))) mlm_die(MLM_EXIT_RUNTIME, "out of memory: %zu bytes", b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void buf_str(text_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* A JSON string as serde_json writes it: '"' and '\\' escaped, the control
 * characters below 0x20 as \b \t \n \f \r or \u00XX, everything else as is. */
static void buf_json_string(text_buf *b, const char *s) {
    buf_put(b, "\"", 1);
    for (; *s; s++) {
        uint8_t c = (uint8_t)*s;
        char esc[8];
        if (c == '"' || c == '\\') buf_put(b, (char[]){'\\', (char)c}, 2);
        else if (c == '\b') buf_str(b, "\\b");
        else if (c == '\t') buf_str(b, "\\t");
        else if (c == '\n') buf_str(b, "\\n");
        else if (c == '\f') buf_str(b, "\\f");
        else if (c == '\r') buf_str(b, "\\r");
        else if (c < 0x20) buf_put(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c));
        else buf_put(b, s, 1);
    }
    buf_put(b, "\"", 1);
}

/* {"token":id,...} in id order, no spaces, no final newline. */
static void vocab_json(const mlm_trained_vocab *v, text_buf *b) {
    buf_str(b, "{");
    for (int i = 0; i < v->count; i++) {
        char num[24];
        if (i) buf_str(b, ",");
        buf_json_string(b, v->tokens[i]);
        snprintf(num, sizeof num, ":%d", i);
        buf_str(b, num);
    }
    buf_str(b, "}");
}

typedef struct {
    int32_t a, b;
    int rank;
} ranked_pair;

static int cmp_ranked_pairs(const void *pa, const void *pb) {
    const ranked_pair *x = pa, *y = pb;
    if (x->a != y->a) return x->a < y->a ? -1 : 1;
    if (x->b != y->b) return x->b < y->b ? -1 : 1;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

/* "#version: 0.2" then "a b" per merge. HF keeps its merges in a map from pair to
 * rank, so a pair merged twice (possible only when a merge recreated it) is
 * written once, at its last rank; so it is here. */
static void merges_txt(const mlm_trained_vocab *v, text_buf *b) {
    size_t n = (size_t)v->merges;
    ranked_pair *r = mlm_xmalloc((n ? n : 1) * sizeof(ranked_pair), "merges");
    uint8_t *skip = mlm_xcalloc(n ? n : 1, 1, "merges");
    for (size_t i = 0; i < n; i++) r[i] = (ranked_pair){v->merge_pairs[2 * i], v->merge_pairs[2 * i + 1], (int)i};
    qsort(r, n, sizeof(ranked_pair), cmp_ranked_pairs);
    for (size_t i = 0; i + 1 < n; i++) skip[r[i].rank] = r[i].a == r[i + 1].a && r[i].b == r[i + 1].b;
    buf_str(b, "#version: 0.2\n");
    for (size_t i = 0; i < n; i++) {
        if (skip[i]) continue;
        buf_str(b, v->tokens[v->merge_pairs[2 * i]]);
        buf_str(b, " ");
        buf_str(b, v->tokens[v->merge_pairs[2 * i + 1]]);
        buf_str(b, "\n");
    }
    free(r);
    free(skip);
}

static char *path_join(const char *dir, const char *name) {
    char *p = mlm_xmalloc(strlen(dir) + strlen(name) + 2, "a path");
    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* Writes both files into dir under their own names (each atomically). */
static int write_both(const char *dir, const char *const names[2], text_buf b[2], char *err, size_t err_len) {
    for (int k = 0; k < 2; k++) {
        char *path = path_join(dir, names[k]);
        const void *parts[1] = {b[k].p};
        int rc = mlm_write_file_atomic(path, parts, &b[k].n, 1, err, err_len);
        free(path);
        if (rc) return -1;
    }
    return 0;
}

/* A new dir: both files into a temporary sibling, renamed into place at once. */
static int write_new_dir(const char *dir, text_buf b[2], char *err, size_t err_len) {
    static const char *const names[2] = {"vocab.json", "merges.txt"};
    size_t len = strlen(dir) + 32;
    char *tmp = mlm_xmalloc(len, "a path");
    snprintf(tmp, len, "%s.tmp.%ld", dir, (long)getpid());
    int rc = 0;
    if (mkdir(tmp, 0777) != 0) rc = mlm_fail(err, err_len, "%s: cannot make %s: %s", dir, tmp, strerror(errno));
    else if (write_both(tmp, names, b, err, err_len) != 0) rc = -1;
    else if (rename(tmp, dir) != 0)
        rc = mlm_fail(err, err_len, "%s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
    if (rc) mlm_remove_tree(tmp);
    free(tmp);
    if (rc) return -1;
    char *copy = strdup(dir);
    rc = mlm_fsync_dir(dirname(copy), err, err_len);
    free(copy);
    return rc;
}

/* An existing dir: both files in full as temporaries, then merges.txt and
 * vocab.json renamed over the old ones, in that order. */
static int write_existing_dir(const char *dir, text_buf b[2], char *err, size_t err_len) {
    char names[2][64];
    snprintf(names[0], sizeof names[0], "vocab.json.new.%ld", (long)getpid());
    snprintf(names[1], sizeof names[1], "merges.txt.new.%ld", (long)getpid());
    const char *const tmp_names[2] = {names[0], names[1]};
    char *tmp[2] = {path_join(dir, names[0]), path_join(dir, names[1])};
    char *final[2] = {path_join(dir, "vocab.json"), path_join(dir, "merges.txt")};
    int rc = write_both(dir, tmp_names, b, err, err_len);
    for (int k = 1; rc == 0 && k >= 0; k--)
        if (rename(tmp[k], final[k]) != 0)
            rc = mlm_fail(err, err_len, "%s: cannot rename %s into place: %s", final[k], tmp[k], strerror(errno));
    if (rc == 0) rc = mlm_fsync_dir(dir, err, err_len);
    for (int k = 0; k < 2; k++) {
        if (rc) unlink(tmp[k]);
        free(tmp[k]);
        free(final[k]);
    }
    return rc;
}

int mlm_vocab_write_bpe(const mlm_trained_vocab *v, const char *dir, char *err, size_t err_len) {
    text_buf b[2] = {{0}, {0}};
    vocab_json(v, &b[0]);
    merges_txt(v, &b[1]);
    struct stat st;
    int rc;
    if (stat(dir, &st) == 0)
        rc = S_ISDIR(st.st_mode) ? write_existing_dir(dir, b, err, err_len)
                                 : mlm_fail(err, err_len, "%s: not a directory", dir);
    else if (errno == ENOENT) rc = write_new_dir(dir, b, err, err_len);
    else rc = mlm_fail(err, err_len, "%s: %s", dir, strerror(errno));
    free(b[0].p);
    free(b[1].p);
    return rc;
}

void mlm_trained_vocab_free(mlm_trained_vocab *v) {
    free(v->tokens);
    free(v->text);
    free(v->merge_pairs);
    memset(v, 0, sizeof *v);
}
