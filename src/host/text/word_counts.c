/*
 * Word counting for the vocab trainer (word_counts.h).
 *
 * The inputs are expanded to a sorted list of regular files, cut into chunks of
 * CHUNK_BYTES, and threads take chunks in turn. A chunk holds the lines that
 * start inside it, so no line is split and the counts do not depend on the
 * chunking: a newline is whitespace, which always ends a word. Each thread counts
 * into its own hash map; the maps are merged and the words sorted at the end.
 *
 * Byte-level BPE splits every line on its own, its '\n' (and any '\r' before it)
 * kept at its end, because HF's train_from_files feeds the pre-tokenizer one line
 * at a time: "a\n\n\nb" read whole would give the pre-token "\n\n" where line by
 * line gives "\n" three times.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlm/data.h"
#include "mlm/fileio.h"
#include "mlm/log.h"
#include "mlm/tokenizer.h"
#include "word_counts.h"

#define CHUNK_BYTES (4u << 20)
#define PROGRESS_SECONDS 2.0

/* ---- a word -> count hash map (open addressing; count 0 marks an empty slot) ---- */

typedef struct {
    uint64_t hash, count, off; // off: the word's bytes in the arena
    uint32_t len;
} word_slot;

typedef struct {
    word_slot *slots;
    size_t mask, used;
    char *arena;
    size_t arena_n, arena_cap;
    uint64_t words;
} word_map;

static void map_init(word_map *m) {
    memset(m, 0, sizeof *m);
    m->mask = (1u << 12) - 1;
    m->slots = mlm_xcalloc(m->mask + 1, sizeof(word_slot), "word counts");
}

static void map_free(word_map *m) {
    free(m->slots);
    free(m->arena);
}

static word_slot *map_find(word_map *m, const char *w, size_t n, uint64_t h) {
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        word_slot *s = &m->slots[i];
        if (!s->count || (s->hash == h && s->len == n && !memcmp(m->arena + s->off, w, n))) return s;
    }
}

static void map_grow(word_map *m) {
    word_slot *old = m->slots;
    size_t old_cap = m->mask + 1;
    m->mask = 2 * old_cap - 1;
    m->slots = mlm_xcalloc(m->mask + 1, sizeof(word_slot), "word counts");
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].count) continue;
        size_t j = old[i].hash & m->mask;
        while (m->slots[j].count) j = (j + 1) & m->mask;
        m->slots[j] = old[i];
    }
    free(old);
}

static char *arena_push(word_map *m, const char *w, size_t n) {
    if (m->arena_n + n > m->arena_cap) {
        m->arena_cap = 2 * (m->arena_cap + n) + (1u << 16);
        if (!(m->arena = realloc(m->arena, m->arena_cap)))
            mlm_die(MLM_EXIT_RUNTIME, "out of memory: %zu bytes of distinct words", m->arena_cap);
    }
    memcpy(m->arena + m->arena_n, w, n);
    m->arena_n += n;
    return m->arena + m->arena_n - n;
}

static void map_add(word_map *m, const char *w, size_t n, uint64_t count) {
    uint64_t h = mlm_fnv1a(MLM_FNV_OFFSET, w, n);
    word_slot *s = map_find(m, w, n, h);
    if (s->count) {
        s->count += count;
        return;
    }
    if (n > UINT32_MAX) mlm_die(MLM_EXIT_RUNTIME, "a word of %zu bytes: no whitespace in 4 GB of text?", n);
    uint64_t off = (uint64_t)(arena_push(m, w, n) - m->arena);
    *s = (word_slot){h, count, off, (uint32_t)n};
    if (2 * ++m->used > m->mask + 1) map_grow(m);
}

static void count_word(void *ctx, const char *w, size_t n) {
    word_map *m = ctx;
    map_add(m, w, n, 1);
    m->words++;
}

/* ---- parallel counting ---- */

typedef struct {
    int file;
    uint64_t start, end;
} chunk;

typedef struct {
    const mlm_file_list *files;
    chunk *chunks;
    size_t nchunks;
    mlm_word_split split;
    int progress;
    uint64_t total_bytes;
    atomic_size_t next;
    atomic_uint_fast64_t bytes_done, words_done;
    atomic_int failed;
    pthread_mutex_t lock; // guards err and last_print
    char err[1024];
    double last_print;
} count_job;

typedef struct {
    count_job *job;
    word_map map;
} count_worker;

/* Moves a chunk boundary to the start of the first line that begins at or after it. */
static uint64_t line_start(const char *p, uint64_t size, uint64_t at) {
    if (at == 0 || at >= size) return at < size ? at : size;
    const char *nl = memchr(p + at - 1, '\n', size - (at - 1));
    return nl ? (uint64_t)(nl - p) + 1 : size;
}

static void fail_job(count_job *job, const char *path, const char *what) {
    pthread_mutex_lock(&job->lock);
    if (!atomic_exchange(&job->failed, 1))
        snprintf(job->err, sizeof job->err, "%s: %s: %s", path, what, strerror(errno));
    pthread_mutex_unlock(&job->lock);
}

static void fail_job_invalid_utf8(count_job *job, const char *path, uint64_t offset) {
    pthread_mutex_lock(&job->lock);
    if (!atomic_exchange(&job->failed, 1))
        snprintf(job->err, sizeof job->err,
                 "%s: byte %llu: invalid UTF-8 (the byte-level BPE trainer reads UTF-8 text, as HF's does)", path,
                 (unsigned long long)offset);
    pthread_mutex_unlock(&job->lock);
}

/* Length of the longest well-formed UTF-8 prefix of p (RFC 3629: no overlongs,
 * surrogates, code points above U+10FFFF or sequences cut short). */
static size_t utf8_valid_prefix(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        if (!len || i + len > n) return i;
        uint8_t lo = 0x80, hi = 0xBF; // the second byte's range
        if (b == 0xE0) lo = 0xA0;
        else if (b == 0xED) hi = 0x9F;
        else if (b == 0xF0) lo = 0x90;
        else if (b == 0xF4) hi = 0x8F;
        if (p[i + 1] < lo || p[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}

/* Byte-level BPE words of the lines in p[0, n), each line split on its own. */
static void count_lines_byte_level(const char *p, size_t n, word_map *m) {
    for (size_t at = 0; at < n;) {
        const char *nl = memchr(p + at, '\n', n - at);
        size_t end = nl ? (size_t)(nl - p) + 1 : n;
        mlm_bpe_pretokenize(p + at, end - at, count_word, m);
        at = end;
    }
}

static void report_progress(count_job *job, int final) {
    pthread_mutex_lock(&job->lock);
    double t = mlm_now_s();
    if (final || t - job->last_print >= PROGRESS_SECONDS) {
        job->last_print = t;
        mlm_log("vocab: read %.1f of %.1f MB, %llu words", 1e-6 * (double)atomic_load(&job->bytes_done),
                1e-6 * (double)job->total_bytes, (unsigned long long)atomic_load(&job->words_done));
    }
    pthread_mutex_unlock(&job->lock);
}

/* Maps a whole input file, or fails the job; *size is the file's size now (it
 * may have shrunk since it was listed: reading past its end would be SIGBUS). */
static void *map_file(count_job *job, const char *path, uint64_t *size) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fail_job(job, path, "cannot read");
        if (fd >= 0) close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size < *size) *size = (uint64_t)st.st_size;
    void *p = *size ? mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (p == MAP_FAILED) {
        fail_job(job, path, "cannot map");
        return NULL;
    }
    return p;
}

/* Counts the lines that start inside chunk c into the worker's map. */
static void count_chunk(count_worker *w, const chunk *c) {
    count_job *job = w->job;
    uint64_t size = job->files->sizes[c->file];
    const char *p = map_file(job, job->files->paths[c->file], &size);
    if (!p) return;
    uint64_t s = line_start(p, size, c->start), e = line_start(p, size, c->end);
    uint64_t words_before = w->map.words;
    if (e > s && job->split == MLM_SPLIT_BYTE_LEVEL) {
        size_t ok = utf8_valid_prefix((const uint8_t *)p + s, e - s);
        if (ok < e - s) fail_job_invalid_utf8(job, job->files->paths[c->file], s + ok);
        else count_lines_byte_level(p + s, e - s, &w->map);
    } else if (e > s) {
        mlm_pretokenize(p + s, e - s, job->split == MLM_SPLIT_CASED, count_word, &w->map);
    }
    munmap((void *)p, size);
    atomic_fetch_add(&job->bytes_done, c->end - c->start);
    atomic_fetch_add(&job->words_done, w->map.words - words_before);
}

static void *count_thread(void *arg) {
    count_worker *w = arg;
    count_job *job = w->job;
    for (size_t i; !atomic_load(&job->failed) && (i = atomic_fetch_add(&job->next, 1)) < job->nchunks;) {
        count_chunk(w, &job->chunks[i]);
        if (job->progress) report_progress(job, 0);
    }
    return NULL;
}

static chunk *make_chunks(const mlm_file_list *fl, size_t *n) {
    size_t cap = 0;
    for (int f = 0; f < fl->n; f++) cap += (size_t)((fl->sizes[f] + CHUNK_BYTES - 1) / CHUNK_BYTES);
    chunk *c = mlm_xmalloc((cap ? cap : 1) * sizeof(chunk), "chunks");
    *n = 0;
    for (int f = 0; f < fl->n; f++)
        for (uint64_t s = 0; s < fl->sizes[f]; s += CHUNK_BYTES)
            c[(*n)++] = (chunk){f, s, s + CHUNK_BYTES < fl->sizes[f] ? s + CHUNK_BYTES : fl->sizes[f]};
    return c;
}

/* Runs the workers; worker 0 is this thread. */
static int run_workers(count_job *job, count_worker *w, int threads, char *err, size_t err_len) {
    pthread_t *tid = mlm_xcalloc((size_t)threads, sizeof(pthread_t), "threads");
    int started = 1;
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, count_thread, &w[started]) != 0) break;
    count_thread(&w[0]);
    for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
    free(tid);
    if (atomic_load(&job->failed)) return mlm_fail(err, err_len, "%s", job->err);
    return 0;
}

static int cmp_words(const void *pa, const void *pb) {
    const mlm_word_count *a = pa, *b = pb;
    int c = memcmp(a->word, b->word, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Merges every worker's map into the first and lists its words in byte order. */
static void gather(count_worker *w, int threads, mlm_word_counts *out) {
    word_map *m = &w[0].map;
    for (int t = 1; t < threads; t++) {
        word_map *o = &w[t].map;
        for (size_t i = 0; i <= o->mask; i++)
            if (o->slots[i].count) map_add(m, o->arena + o->slots[i].off, o->slots[i].len, o->slots[i].count);
        map_free(o);
    }
    out->items = mlm_xmalloc((m->used ? m->used : 1) * sizeof(mlm_word_count), "word list");
    out->n = 0;
    for (size_t i = 0; i <= m->mask; i++)
        if (m->slots[i].count)
            out->items[out->n++] = (mlm_word_count){m->arena + m->slots[i].off, m->slots[i].len, m->slots[i].count};
    qsort(out->items, out->n, sizeof(mlm_word_count), cmp_words);
    out->arena = m->arena;
    free(m->slots);
}

int mlm_count_words(const char *const *inputs, int ninputs, mlm_word_split split, int threads, int progress,
                    mlm_word_counts *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    mlm_file_list fl;
    if (mlm_list_inputs(inputs, ninputs, &fl, err, err_len) != 0) return -1;
    count_job job = {.files = &fl, .split = split, .progress = progress, .lock = PTHREAD_MUTEX_INITIALIZER};
    job.chunks = make_chunks(&fl, &job.nchunks);
    for (int f = 0; f < fl.n; f++) job.total_bytes += fl.sizes[f];
    job.last_print = mlm_now_s();
    if (threads < 1) threads = 1;
    count_worker *w = mlm_xcalloc((size_t)threads, sizeof(count_worker), "workers");
    for (int t = 0; t < threads; t++) {
        w[t].job = &job;
        map_init(&w[t].map);
    }
    int rc = run_workers(&job, w, threads, err, err_len);
    if (progress && rc == 0) report_progress(&job, 1);
    gather(w, threads, out);
    out->bytes = job.total_bytes;
    out->words = atomic_load(&job.words_done);
    out->files = fl.n;
    free(w);
    free(job.chunks);
    mlm_file_list_free(&fl);
    if (rc) mlm_word_counts_free(out);
    return rc;
}

void mlm_word_counts_free(mlm_word_counts *wc) {
    free(wc->items);
    free(wc->arena);
    memset(wc, 0, sizeof *wc);
}
