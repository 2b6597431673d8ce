/*
 * Token shards (include/mlm/data.h; text/prepare.c writes them): open a shard file or
 * a directory of them, validate every header and checksum, and read sequences in
 * order (docs/FORMATS.md). Files are memory-mapped read-only; a corrupt, truncated or
 * foreign file is an error naming it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

_Static_assert(sizeof(mlm_shard_header) == MLM_SHARD_HEADER_BYTES, "shard header is 64 bytes");

uint64_t mlm_fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Maps a whole file read-only; an empty file maps to NULL with bytes = 0. */
static int map_file(const char *path, const uint8_t **map, size_t *bytes, char *err, size_t len) {
    int fd = open(path, O_RDONLY | O_NONBLOCK);   // a FIFO named *.shard: refused below, not waited on
    if (fd < 0) return mlm_fail(err, len, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mlm_fail(err, len, "%s: not a regular file", path);
    }
    *bytes = (size_t)st.st_size;
    *map = NULL;
    if (*bytes) {
        void *p = mmap(NULL, *bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return mlm_fail(err, len, "%s: cannot map: %s", path, strerror(errno));
        }
        *map = p;
    }
    close(fd);
    return 0;
}

uint64_t mlm_vocab_hash_files(const char *const *paths, int n, char *err, size_t err_len) {
    uint64_t h = MLM_FNV_OFFSET;
    for (int i = 0; i < n; i++) {
        const uint8_t *map = NULL;
        size_t bytes = 0;
        if (map_file(paths[i], &map, &bytes, err, err_len) != 0) return 0;
        h = mlm_fnv1a(h, map, bytes);
        if (map) munmap((void *)map, bytes);
    }
    return h ? h : 1;   // 0 means "unknown"
}

/* The files of the vocabulary path names, as mlm_tokenizer_open reads them. */
uint64_t mlm_vocab_hash(const char *path, char *err, size_t err_len) {
    char *vocab, *merges;
    if (mlm_vocab_paths(path, &vocab, &merges, err, err_len) != 0) return 0;
    const char *files[2] = {vocab, merges};
    uint64_t h = mlm_vocab_hash_files(files, merges ? 2 : 1, err, err_len);
    free(vocab);
    free(merges);
    return h;
}

/* Checks one mapped shard's header and payload against its checksum. */
static int check_shard(const char *path, const uint8_t *map, size_t bytes, mlm_shard_header *h,
                       char *err, size_t len) {
    if (bytes < MLM_SHARD_HEADER_BYTES)
        return mlm_fail(err, len, "%s: truncated: %zu bytes, a shard header alone is %d", path, bytes,
                    MLM_SHARD_HEADER_BYTES);
    memcpy(h, map, sizeof *h);
    if (memcmp(h->magic, MLM_SHARD_MAGIC, 8) != 0)
        return mlm_fail(err, len, "%s: not an mlmgpu shard (bad magic)", path);
    if (h->version < 1 || h->version > MLM_SHARD_VERSION)
        return mlm_fail(err, len, "%s: shard version %u, this mlmgpu reads versions 1 to %u", path, h->version,
                    MLM_SHARD_VERSION);
    if (h->version == 1 && h->pad_id != 0)
        return mlm_fail(err, len, "%s: version 1 shard with a nonzero reserved field (%u): corrupt header", path,
                        h->pad_id);
    if (h->dtype_bytes != 2 && h->dtype_bytes != 4)
        return mlm_fail(err, len, "%s: id width %u bytes, expected 2 or 4", path, h->dtype_bytes);
    if (h->seq_len < 2 || h->seq_len > (1u << 20))
        return mlm_fail(err, len, "%s: seq_len %u out of range", path, h->seq_len);
    uint64_t payload = bytes - MLM_SHARD_HEADER_BYTES;
    uint64_t per_seq = (uint64_t)h->seq_len * h->dtype_bytes;
    if (h->count > payload / per_seq || payload != h->count * per_seq)
        return mlm_fail(err, len, "%s: truncated or padded: header says %llu sequences of %llu bytes, payload is %llu bytes",
                    path, (unsigned long long)h->count, (unsigned long long)per_seq, (unsigned long long)payload);
    uint64_t sum = mlm_fnv1a(MLM_FNV_OFFSET, map + MLM_SHARD_HEADER_BYTES, payload);
    if (sum != h->checksum)
        return mlm_fail(err, len, "%s: checksum mismatch (file %016llx, computed %016llx): corrupt shard", path,
                    (unsigned long long)h->checksum, (unsigned long long)sum);
    return 0;
}

/* Lists path itself, or the *.shard files of a directory sorted by name. */
static int list_shards(const char *path, char ***out, int *n, char *err, size_t len) {
    struct stat st;
    if (stat(path, &st) != 0) return mlm_fail(err, len, "%s: cannot open: %s", path, strerror(errno));
    *n = 0;
    if (!S_ISDIR(st.st_mode)) {
        *out = mlm_xmalloc(sizeof(char *), "shard list");
        (*out)[(*n)++] = strdup(path);
        return 0;
    }
    DIR *dir = opendir(path);
    if (!dir) return mlm_fail(err, len, "%s: cannot read directory: %s", path, strerror(errno));
    int cap = 16;
    *out = mlm_xmalloc(cap * sizeof(char *), "shard list");
    for (struct dirent *e; (e = readdir(dir));) {
        size_t l = strlen(e->d_name);
        if (l < 7 || strcmp(e->d_name + l - 6, ".shard") != 0) continue;
        if (*n == cap) *out = realloc(*out, (cap *= 2) * sizeof(char *));
        if (!*out) mlm_die(MLM_EXIT_RUNTIME, "out of memory listing %s", path);
        if (asprintf(&(*out)[(*n)++], "%s/%s", path, e->d_name) < 0)
            mlm_die(MLM_EXIT_RUNTIME, "out of memory listing %s", path);
    }
    closedir(dir);
    if (*n == 0) {
        free(*out);
        return mlm_fail(err, len, "%s: directory holds no *.shard files", path);
    }
    qsort(*out, *n, sizeof(char *), mlm_cmp_str);
    return 0;
}

/* Id k of a payload of dtype_bytes-wide little-endian ids. */
static inline uint32_t id_at(const uint8_t *p, int dtype_bytes, uint64_t k) {
    if (dtype_bytes == 2) {
        uint16_t u;
        memcpy(&u, p + 2 * k, 2);
        return u;
    }
    uint32_t v;
    memcpy(&v, p + 4 * k, 4);
    return v;
}

/* The largest id of file i and where it first stands, so that ids outside a
 * vocabulary are found when the shards are opened, not steps into a run. */
static void scan_max_id(mlm_shards *sh, int i, uint64_t count) {
    const uint8_t *p = sh->maps[i] + MLM_SHARD_HEADER_BYTES;
    uint64_t n = count * (uint64_t)sh->seq_len;
    uint32_t best = 0;
    uint64_t at = 0;
    for (uint64_t k = 0; k < n; k++) {
        uint32_t v = id_at(p, sh->dtype_bytes, k);
        if (v > best) best = v, at = k;
    }
    if (i == 0 || best > sh->max_id) {
        sh->max_id = best;
        sh->max_file = i;
        sh->max_at = at;
    }
}

int mlm_shards_check_ids(const mlm_shards *sh, int vocab_size, char *err, size_t err_len) {
    if (sh->max_id < (uint32_t)vocab_size) return 0;
    return mlm_fail(err, err_len, "%s: sequence %llu, position %llu: token id %u is outside the vocabulary (size %d)",
                    sh->paths[sh->max_file], (unsigned long long)(sh->max_at / (uint64_t)sh->seq_len),
                    (unsigned long long)(sh->max_at % (uint64_t)sh->seq_len), sh->max_id, vocab_size);
}

int mlm_shards_open(mlm_shards *sh, const char *path, int expect_seq_len, uint64_t expect_vocab_hash,
                    char *err, size_t err_len) {
    memset(sh, 0, sizeof *sh);
    if (list_shards(path, &sh->paths, &sh->nfiles, err, err_len) != 0) return -1;
    sh->maps = mlm_xcalloc(sh->nfiles, sizeof *sh->maps, "shard maps");
    sh->map_bytes = mlm_xcalloc(sh->nfiles, sizeof *sh->map_bytes, "shard maps");
    sh->first = mlm_xcalloc(sh->nfiles + 1, sizeof *sh->first, "shard index");
    for (int i = 0; i < sh->nfiles; i++) {
        const char *p = sh->paths[i];
        mlm_shard_header h;
        if (map_file(p, &sh->maps[i], &sh->map_bytes[i], err, err_len) != 0 ||
            check_shard(p, sh->maps[i], sh->map_bytes[i], &h, err, err_len) != 0)
            goto bad;
        if (i == 0) {
            sh->seq_len = (int)h.seq_len;
            sh->dtype_bytes = (int)h.dtype_bytes;
            sh->pad_id = (int)h.pad_id;
            sh->vocab_hash = h.vocab_hash;
        } else if ((int)h.seq_len != sh->seq_len || (int)h.dtype_bytes != sh->dtype_bytes ||
                   (int)h.pad_id != sh->pad_id || h.vocab_hash != sh->vocab_hash) {
            mlm_fail(err, err_len, "%s: seq_len/id width/pad id/vocab differ from %s", p, sh->paths[0]);
            goto bad;
        }
        if (expect_seq_len > 0 && (int)h.seq_len != expect_seq_len) {
            mlm_fail(err, err_len, "%s: shard seq_len is %u but data.seq_len is %d", p, h.seq_len, expect_seq_len);
            goto bad;
        }
        if (expect_vocab_hash && h.vocab_hash && h.vocab_hash != expect_vocab_hash) {
            mlm_fail(err, err_len, "%s: made with another vocabulary (vocab hash %016llx) than the model's (%016llx)",
                 p, (unsigned long long)h.vocab_hash, (unsigned long long)expect_vocab_hash);
            goto bad;
        }
        sh->first[i + 1] = sh->first[i] + h.count;
        scan_max_id(sh, i, h.count);
    }
    sh->total = sh->first[sh->nfiles];
    if (sh->total == 0) {
        mlm_fail(err, err_len, "%s: holds no sequences", path);
        goto bad;
    }
    return 0;
bad:
    mlm_shards_close(sh);
    return -1;
}

void mlm_shards_close(mlm_shards *sh) {
    for (int i = 0; i < sh->nfiles; i++) {
        if (sh->maps && sh->maps[i]) munmap((void *)sh->maps[i], sh->map_bytes[i]);
        free(sh->paths[i]);
    }
    free(sh->paths);
    free(sh->maps);
    free(sh->map_bytes);
    free(sh->first);
    memset(sh, 0, sizeof *sh);
}

int mlm_shards_get(const mlm_shards *sh, uint64_t idx, int32_t *ids, int vocab_size, char *err,
                   size_t err_len) {
    idx %= sh->total;
    int f = 0;
    while (sh->first[f + 1] <= idx) f++;
    const uint8_t *p = sh->maps[f] + MLM_SHARD_HEADER_BYTES +
                       (idx - sh->first[f]) * (uint64_t)sh->seq_len * sh->dtype_bytes;
    int len = 0;
    uint32_t pad = (uint32_t)sh->pad_id;
    for (int s = 0; s < sh->seq_len; s++) {
        uint32_t v = id_at(p, sh->dtype_bytes, (uint64_t)s);
        if (v >= (uint32_t)vocab_size)
            return mlm_fail(err, err_len, "%s: sequence %llu, position %d: token id %u is outside the vocabulary (size %d)",
                        sh->paths[f], (unsigned long long)(idx - sh->first[f]), s, v, vocab_size);
        ids[s] = (int32_t)v;
        if (v != pad) len = s + 1;
    }
    return len;
}

int mlm_shard_write(const char *path, const int32_t *ids, uint64_t count, int seq_len, int dtype_bytes,
                    uint64_t vocab_hash, char *err, size_t err_len) {
    return mlm_shard_write_padded(path, ids, count, seq_len, dtype_bytes, vocab_hash, 0, err, err_len);
}

int mlm_shard_write_padded(const char *path, const int32_t *ids, uint64_t count, int seq_len, int dtype_bytes,
                           uint64_t vocab_hash, int pad_id, char *err, size_t err_len) {
    size_t n = (size_t)count * seq_len, bytes = n * dtype_bytes;
    uint8_t *payload = mlm_xmalloc(bytes, "shard payload");
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        if (dtype_bytes == 2 && v > 0xffff) {
            free(payload);
            return mlm_fail(err, err_len, "%s: token id %u does not fit 16 bits", path, v);
        }
        memcpy(payload + i * dtype_bytes, &v, dtype_bytes);   // little-endian host
    }
    // version 1 where it says all (pad 0): readers older than version 2 keep reading BERT data
    mlm_shard_header h = {.version = pad_id ? 2u : 1u, .dtype_bytes = (uint32_t)dtype_bytes,
                          .seq_len = (uint32_t)seq_len, .pad_id = (uint32_t)pad_id, .count = count,
                          .vocab_hash = vocab_hash,
                          .checksum = mlm_fnv1a(MLM_FNV_OFFSET, payload, bytes)};
    memcpy(h.magic, MLM_SHARD_MAGIC, 8);
    const void *parts[2] = {&h, payload};
    size_t sizes[2] = {sizeof h, bytes};
    int rc = mlm_write_file_atomic(path, parts, sizes, 2, err, err_len);
    free(payload);
    return rc;
}
