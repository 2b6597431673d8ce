/*
 * `mlmgpu prepare` (include/mlm/prepare.h): parallel tokenization of text files,
 * packing into fixed-length sequences, shard files and a manifest.
 *
 * Files are handled in windows of WINDOW_FILES: worker threads take files of the
 * window in turn and tokenize them into per-file documents; the main thread then
 * packs the window's documents in file order, so the output does not depend on
 * the thread count. Everything is written under OUT/.tmp.PID and moved into place
 * at the end. The vocabulary is either kind (mlm_tokenizer_open): WordPiece frames
 * sequences [CLS] ... [SEP] and pads with [PAD] (id 0: version 1 shards), byte-level
 * BPE <s> ... </s> and <pad> (RoBERTa's id 1: version 2 shards, which record it).
 */
#include "mlm/prepare.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
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

#define WINDOW_FILES 256
#define PATHBUF (2 * MLM_PATH_MAX)

/* ---------------------------------------------------------------- documents */

typedef struct {
    int32_t *ids;            // every document's ids, back to back
    size_t n, cap;
    size_t *doc_end;         // doc_end[k]: end of document k in ids
    int ndocs, doc_cap;
    char err[512];           // a read error, reported by the main thread
    long nul_at;             // >= 0: not text (a NUL byte there): skipped, with a warning
} file_docs;

static void end_doc(file_docs *fd) {
    size_t start = fd->ndocs ? fd->doc_end[fd->ndocs - 1] : 0;
    if (fd->n == start) return;   // an empty document adds nothing
    if (fd->ndocs == fd->doc_cap) {
        fd->doc_cap = fd->doc_cap ? 2 * fd->doc_cap : 16;
        fd->doc_end = realloc(fd->doc_end, fd->doc_cap * sizeof(size_t));
        if (!fd->doc_end) mlm_die(MLM_EXIT_RUNTIME, "out of memory: document index");
    }
    fd->doc_end[fd->ndocs++] = fd->n;
}

/* Start of the next blank line at or after p (a line of only spaces/tabs/CR). */
static const char *next_blank_line(const char *p, const char *end, const char **after) {
    for (const char *line = p; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *stop = nl ? nl : end;
        const char *c = line;
        while (c < stop && (*c == ' ' || *c == '\t' || *c == '\r')) c++;
        if (c == stop && line > p) {
            *after = nl ? nl + 1 : end;
            return line;
        }
        line = nl ? nl + 1 : end;
    }
    *after = end;
    return end;
}

static void tokenize_file(const mlm_tokenizer *tok, const char *path, int paragraphs, file_docs *fd) {
    char *text;
    size_t bytes;
    fd->nul_at = -1;
    if (mlm_read_file(path, &text, &bytes, fd->err, sizeof fd->err) != 0) return;
    // text has no NUL bytes: a file with one (an image, an archive, an object file)
    // would add thousands of meaningless tokens to the corpus
    const char *nul = memchr(text, 0, bytes);
    if (nul) {
        fd->nul_at = (long)(nul - text);
        free(text);
        return;
    }
    const char *p = text, *end = text + bytes;
    while (p < end) {
        const char *after, *stop = paragraphs ? next_blank_line(p, end, &after) : (after = end);
        mlm_tokenize(tok, p, (size_t)(stop - p), &fd->ids, &fd->n, &fd->cap);
        if (paragraphs) end_doc(fd);
        p = after;
    }
    end_doc(fd);
    free(text);
}

/* ---------------------------------------------------------------- workers */

typedef struct {
    const mlm_prepare_opts *o;
    const mlm_tokenizer *tok;
    const mlm_file_list *files;
    int first, count;        // the window
    file_docs *docs;         // (count)
    atomic_int next;
    atomic_int finished;     // workers that ran out of files
    atomic_ullong bytes_done;
} window_job;

static void *worker(void *arg) {
    window_job *j = arg;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->count;) {
        tokenize_file(j->tok, j->files->paths[j->first + i], !j->o->file_documents, &j->docs[i]);
        atomic_fetch_add(&j->bytes_done, j->files->sizes[j->first + i]);
    }
    atomic_fetch_add(&j->finished, 1);
    return NULL;
}

/* ---------------------------------------------------------------- packing */

typedef struct {
    const char *name;        // "train" / "val"
    char dir[PATHBUF + 16];
    int S, dtype_bytes;
    uint64_t vocab_hash;
    mlm_special_ids sp;
    int32_t *content;        // (S - 2) tokens of the sequence being filled
    int fill;
    int32_t *shard;          // (shard_sequences, S)
    uint64_t in_shard, shard_cap;
    mlm_split_stats st;
} packer;

static int flush_shard(packer *pk, char *err, size_t len) {
    if (pk->in_shard == 0) return 0;
    char path[PATHBUF + 64];
    snprintf(path, sizeof path, "%s/%s-%05d.shard", pk->dir, pk->name, pk->st.shards);
    if (mlm_shard_write_padded(path, pk->shard, pk->in_shard, pk->S, pk->dtype_bytes, pk->vocab_hash, pk->sp.pad,
                               err, len) != 0)
        return -1;
    pk->st.shards++;
    pk->in_shard = 0;
    return 0;
}

/* Closes the current sequence as [CLS] content [SEP] [PAD]... (BPE: <s> </s> <pad>) */
static int emit(packer *pk, char *err, size_t len) {
    if (pk->fill == 0) return 0;
    int32_t *seq = pk->shard + pk->in_shard * pk->S;
    seq[0] = pk->sp.cls;
    memcpy(seq + 1, pk->content, pk->fill * sizeof(int32_t));
    seq[pk->fill + 1] = pk->sp.sep;
    for (int s = pk->fill + 2; s < pk->S; s++) seq[s] = pk->sp.pad;
    pk->fill = 0;
    pk->st.sequences++;
    return ++pk->in_shard == pk->shard_cap ? flush_shard(pk, err, len) : 0;
}

static int push_token(packer *pk, int32_t id, char *err, size_t len) {
    pk->content[pk->fill++] = id;
    return pk->fill == pk->S - 2 ? emit(pk, err, len) : 0;
}

/* The [SEP] between two documents. At a sequence start it is not needed, and in
 * the last free slot it would make [SEP][SEP]: there the sequence ends early. */
static int push_boundary(packer *pk, char *err, size_t len) {
    if (pk->fill == 0) return 0;
    if (pk->fill == pk->S - 3) return emit(pk, err, len);
    return push_token(pk, pk->sp.sep, err, len);
}

static int pack_doc(packer *pk, const int32_t *ids, size_t n, char *err, size_t len) {
    if (pk->st.docs > 0 && push_boundary(pk, err, len) != 0) return -1;
    for (size_t i = 0; i < n; i++)
        if (push_token(pk, ids[i], err, len) != 0) return -1;
    pk->st.docs++;
    pk->st.tokens += n;
    return 0;
}

static void packer_init(packer *pk, const char *name, const char *root, const mlm_prepare_opts *o, int dtype,
                        uint64_t vhash, mlm_special_ids sp) {
    memset(pk, 0, sizeof *pk);
    pk->name = name;
    snprintf(pk->dir, sizeof pk->dir, "%s/%s", root, name);
    pk->S = o->seq_len;
    pk->dtype_bytes = dtype;
    pk->vocab_hash = vhash;
    pk->sp = sp;
    pk->shard_cap = o->shard_sequences;
    pk->content = mlm_xmalloc((size_t)o->seq_len * sizeof(int32_t), "packing buffer");
    pk->shard = mlm_xmalloc(o->shard_sequences * o->seq_len * sizeof(int32_t), "shard buffer");
}

static void packer_free(packer *pk) {
    free(pk->content);
    free(pk->shard);
}

/* ---------------------------------------------------------------- the split */

/* Whether document k of a file goes to validation: a hash of the file's name
 * relative to its input (not where the corpus lives) and the index. */
static int is_val(const char *name, int k, double fraction) {
    if (fraction <= 0) return 0;
    uint64_t h = mlm_fnv1a(MLM_FNV_OFFSET, name, strlen(name));
    h = mlm_fnv1a(h, &k, sizeof k);
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (double)(h >> 11) * (1.0 / 9007199254740992.0) < fraction;
}

/* ---------------------------------------------------------------- output */

static int output_taken(const char *out) {
    const char *names[] = {"train", "val", "manifest.json"};
    for (int i = 0; i < 3; i++) {
        char p[PATHBUF + 32];
        snprintf(p, sizeof p, "%s/%s", out, names[i]);
        if (access(p, F_OK) == 0) return 1;
    }
    return 0;
}

static cJSON *split_json(const packer *pk) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "documents", (double)pk->st.docs);
    cJSON_AddNumberToObject(j, "tokens", (double)pk->st.tokens);
    cJSON_AddNumberToObject(j, "sequences", (double)pk->st.sequences);
    cJSON_AddNumberToObject(j, "shards", pk->st.shards);
    return j;
}

static int write_manifest(const char *dir, const mlm_prepare_opts *o, const packer *pk, int dtype, uint64_t vhash,
                          const mlm_tokenizer *tok, const mlm_file_list *files, char *err, size_t len) {
    cJSON *j = cJSON_CreateObject();
    char hex[32];
    int bpe = mlm_tokenizer_kind(tok) == MLM_TOK_BPE;
    cJSON_AddStringToObject(j, "format", pk[0].sp.pad ? "mlmgpu-shards-2" : "mlmgpu-shards-1");
    cJSON_AddNumberToObject(j, "seq_len", o->seq_len);
    cJSON_AddNumberToObject(j, "dtype_bytes", dtype);
    cJSON_AddNumberToObject(j, "pad_id", pk[0].sp.pad);
    snprintf(hex, sizeof hex, "%016" PRIx64, vhash);
    cJSON_AddStringToObject(j, "vocab_hash", hex);
    cJSON_AddStringToObject(j, "tokenizer", bpe ? "bpe" : "wordpiece");
    if (!bpe) cJSON_AddBoolToObject(j, "cased", o->cased);
    cJSON_AddStringToObject(j, "documents", o->file_documents ? "files" : "paragraphs");
    cJSON_AddNumberToObject(j, "val_fraction", o->val_fraction);
    cJSON_AddItemToObject(j, "train", split_json(&pk[0]));
    cJSON_AddItemToObject(j, "val", split_json(&pk[1]));
    cJSON *in = cJSON_AddArrayToObject(j, "inputs");
    for (int i = 0; i < files->n; i++) cJSON_AddItemToArray(in, cJSON_CreateString(files->paths[i]));
    char *text = cJSON_Print(j), path[PATHBUF + 32];
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    const void *parts[1] = {text};
    size_t sizes[1] = {strlen(text)};
    int rc = mlm_write_file_atomic(path, parts, sizes, 1, err, len);
    free(text);
    return rc;
}

/* The names the vocabulary files take in OUT: vocab.txt, or vocab.json + merges.txt. */
static int vocab_names(const mlm_tokenizer *tok, const char *names[2]) {
    if (mlm_tokenizer_kind(tok) == MLM_TOK_BPE) {
        names[0] = "vocab.json";
        names[1] = "merges.txt";
        return 2;
    }
    names[0] = "vocab.txt";
    return 1;
}

static int copy_vocab(const mlm_tokenizer *tok, const char *dir, char *err, size_t len) {
    const char *from[2], *names[2];
    int n = mlm_tokenizer_files(tok, from);
    vocab_names(tok, names);
    for (int i = 0; i < n; i++) {
        char *text, path[PATHBUF + 32];
        size_t bytes;
        if (mlm_read_file(from[i], &text, &bytes, err, len) != 0) return -1;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        const void *parts[1] = {text};
        int rc = mlm_write_file_atomic(path, parts, &bytes, 1, err, len);
        free(text);
        if (rc != 0) return -1;
    }
    return 0;
}

/* Moves train/, val/, the vocabulary files and manifest.json from tmp into out. */
static int move_into_place(const mlm_tokenizer *tok, const char *tmp, const char *out, char *err, size_t len) {
    const char *names[5] = {"train", "val"};
    int n = 2 + vocab_names(tok, names + 2);
    names[n++] = "manifest.json";   // the manifest last
    // replacing prepared data (--force) made with the other kind of vocabulary: its files go
    const char *stale[3] = {"vocab.txt", "vocab.json", "merges.txt"};
    char manifest[PATHBUF + 32];
    snprintf(manifest, sizeof manifest, "%s/manifest.json", out);
    for (int i = 0; i < 3 && access(manifest, F_OK) == 0; i++) {
        int ours = 0;
        for (int k = 2; k < n - 1; k++) ours |= strcmp(names[k], stale[i]) == 0;
        char p[PATHBUF + 32];
        snprintf(p, sizeof p, "%s/%s", out, stale[i]);
        if (!ours) unlink(p);
    }
    for (int i = 0; i < n; i++) {
        char from[PATHBUF + 32], to[PATHBUF + 32];
        snprintf(from, sizeof from, "%s/%s", tmp, names[i]);
        snprintf(to, sizeof to, "%s/%s", out, names[i]);
        if (i < 2) mlm_remove_tree(to);
        if (rename(from, to) != 0) return mlm_fail(err, len, "%s: cannot move into place: %s", to, strerror(errno));
    }
    mlm_remove_tree(tmp);
    return mlm_fsync_dir(out, err, len);
}

/* ---------------------------------------------------------------- driver */

static void progress(const window_job *j, uint64_t done_before, uint64_t total, double t0, int final) {
    double dt = mlm_now_s() - t0;
    uint64_t done = done_before + atomic_load(&j->bytes_done);
    double rate = dt > 0 ? done / dt : 0;
    fprintf(stderr, "\rmlmgpu: prepare: %.1f of %.1f MB (%.0f%%), %.1f MB/s, ETA %.0f s   %s", done / 1e6,
            total / 1e6, total ? 100.0 * done / total : 100.0, rate / 1e6,
            rate > 0 ? (total - done) / rate : 0.0, final ? "\n" : "");
}

/* Tokenizes one window of files on the workers, with progress from the main thread. */
static void run_window(window_job *j, int threads, uint64_t done_before, uint64_t total, double t0) {
    pthread_t *tid = mlm_xmalloc(threads * sizeof(pthread_t), "threads");
    for (int t = 0; t < threads; t++)
        if (pthread_create(&tid[t], NULL, worker, j) != 0) mlm_die(MLM_EXIT_RUNTIME, "cannot start threads");
    while (j->o->progress && atomic_load(&j->finished) < threads) {
        progress(j, done_before, total, t0, 0);
        nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    free(tid);
}

/* Packs a tokenized window in file order, each document to its split. */
static int pack_window(const window_job *j, packer pk[2], double val_fraction, char *err, size_t len) {
    for (int i = 0; i < j->count; i++) {
        const file_docs *fd = &j->docs[i];
        const char *name = j->files->paths[j->first + i] + j->files->name_off[j->first + i];
        if (fd->err[0]) return mlm_fail(err, len, "%s", fd->err);
        if (fd->nul_at >= 0)
            mlm_log("warning: %s: skipped: not text (a NUL byte at offset %ld)", j->files->paths[j->first + i],
                    fd->nul_at);
        for (int k = 0; k < fd->ndocs; k++) {
            size_t start = k ? fd->doc_end[k - 1] : 0;
            if (pack_doc(&pk[is_val(name, k, val_fraction)], fd->ids + start, fd->doc_end[k] - start, err, len) != 0)
                return -1;
        }
    }
    return 0;
}

static int check_opts(const mlm_prepare_opts *o, char *err, size_t len) {
    if (o->seq_len < 3) return mlm_fail(err, len, "--seq-len %d: a sequence needs [CLS], a token and [SEP]", o->seq_len);
    if (!(o->val_fraction >= 0 && o->val_fraction < 1))
        return mlm_fail(err, len, "--val-fraction %g: expected a number in [0, 1)", o->val_fraction);
    if (o->shard_sequences < 1) return mlm_fail(err, len, "--shard-sequences must be at least 1");
    if (!o->force && output_taken(o->out))
        return mlm_fail(err, len, "%s: already holds prepared data (train/, val/ or manifest.json); "
                        "choose another --out or pass --force to replace it", o->out);
    return 0;
}

/* Tokenizes and packs every window; the packers hold the two splits. */
static int run_all(const mlm_prepare_opts *o, const mlm_tokenizer *tok, const mlm_file_list *files, packer pk[2],
                   mlm_prepare_stats *st, char *err, size_t len) {
    uint64_t total = 0, done = 0;
    for (int i = 0; i < files->n; i++) total += files->sizes[i];
    double t0 = mlm_now_s();
    int threads = o->threads > 0 ? o->threads : 1, rc = 0;
    for (int first = 0; first < files->n && rc == 0; first += WINDOW_FILES) {
        window_job j = {.o = o, .tok = tok, .files = files, .first = first};
        j.count = files->n - first < WINDOW_FILES ? files->n - first : WINDOW_FILES;
        j.docs = mlm_xcalloc(j.count, sizeof(file_docs), "documents");
        run_window(&j, threads, done, total, t0);
        rc = pack_window(&j, pk, o->val_fraction, err, len);
        done += atomic_load(&j.bytes_done);
        for (int i = 0; i < j.count; i++) free(j.docs[i].ids), free(j.docs[i].doc_end);
        free(j.docs);
        if (o->progress && rc == 0) progress(&j, done - atomic_load(&j.bytes_done), total, t0, first + j.count >= files->n);
    }
    for (int s = 0; s < 2 && rc == 0; s++) rc = emit(&pk[s], err, len) || flush_shard(&pk[s], err, len) ? -1 : 0;
    if (rc == 0 && pk[0].st.sequences == 0)
        rc = mlm_fail(err, len, "no document went to train (%" PRIu64 " documents, --val-fraction %g)",
                      pk[0].st.docs + pk[1].st.docs, o->val_fraction);
    if (rc == 0 && o->val_fraction > 0 && pk[1].st.sequences == 0)
        mlm_log("warning: --val-fraction %g put none of the %" PRIu64 " documents in val (the split is drawn per "
                "document): val/ is empty, so leave data.val empty in the config, or give more documents "
                "(%s)", o->val_fraction, pk[0].st.docs,
                o->file_documents ? "without --file-documents, blank lines split files into documents"
                                  : "separate them with blank lines");
    st->bytes = total;
    st->files = files->n;
    st->seconds = mlm_now_s() - t0;
    return rc;
}

/* Drops the input files inside out (--out within --input): a second run would
 * otherwise tokenize the vocabulary, manifest and temporary files of the first. */
static void drop_output_files(mlm_file_list *fl, const char *out) {
    char *root = realpath(out, NULL);
    if (!root) return;   // not there yet: nothing of it can be an input
    size_t k = strlen(root);
    int kept = 0, dropped = 0;
    for (int i = 0; i < fl->n; i++) {
        char *real = realpath(fl->paths[i], NULL);
        int inside = real && !strncmp(real, root, k) && (real[k] == '/' || real[k] == 0);
        free(real);
        if (inside) {
            free(fl->paths[i]);
            dropped++;
            continue;
        }
        fl->paths[kept] = fl->paths[i];
        fl->sizes[kept] = fl->sizes[i];
        fl->name_off[kept++] = fl->name_off[i];
    }
    fl->n = kept;
    if (dropped) mlm_log("warning: skipped %d input file(s) inside --out %s (the output is never an input)", dropped, out);
    free(root);
}

int mlm_prepare(const mlm_prepare_opts *o, mlm_prepare_stats *st, char *err, size_t len) {
    memset(st, 0, sizeof *st);
    if (check_opts(o, err, len) != 0) return -1;
    mlm_tokenizer *tok = mlm_tokenizer_open(o->vocab, o->cased, err, len);
    if (!tok) return -1;
    mlm_file_list files = {0};
    int rc = mlm_list_inputs(o->inputs, o->ninputs, &files, err, len);
    if (rc == 0) drop_output_files(&files, o->out);
    if (rc == 0 && files.n == 0) rc = mlm_fail(err, len, "the inputs hold no files");
    char tmp[PATHBUF];
    snprintf(tmp, sizeof tmp, "%s/.tmp.prepare.%d", o->out, (int)getpid());
    if (rc == 0 && (mlm_mkdir_p(o->out) != 0 || mlm_mkdir_p(tmp) != 0))
        rc = mlm_fail(err, len, "%s: cannot create: %s", o->out, strerror(errno));
    int dtype = mlm_tokenizer_size(tok) <= 65536 ? 2 : 4;
    const char *vfiles[2];
    int nvfiles = mlm_tokenizer_files(tok, vfiles);
    uint64_t vhash = rc == 0 ? mlm_vocab_hash_files(vfiles, nvfiles, err, len) : 0;
    if (rc == 0 && vhash == 0) rc = -1;
    packer pk[2];
    packer_init(&pk[0], "train", tmp, o, dtype, vhash, mlm_tokenizer_special(tok));
    packer_init(&pk[1], "val", tmp, o, dtype, vhash, pk[0].sp);
    for (int s = 0; s < 2 && rc == 0; s++)
        if (mlm_mkdir_p(pk[s].dir) != 0) rc = mlm_fail(err, len, "%s: cannot create: %s", pk[s].dir, strerror(errno));
    if (rc == 0) rc = run_all(o, tok, &files, pk, st, err, len);
    if (rc == 0) rc = copy_vocab(tok, tmp, err, len);
    if (rc == 0) rc = write_manifest(tmp, o, pk, dtype, vhash, tok, &files, err, len);
    if (rc == 0) rc = move_into_place(tok, tmp, o->out, err, len);
    else mlm_remove_tree(tmp);
    st->train = pk[0].st;
    st->val = pk[1].st;
    packer_free(&pk[0]);
    packer_free(&pk[1]);
    mlm_file_list_free(&files);
    mlm_tokenizer_free(tok);
    return rc;
}
