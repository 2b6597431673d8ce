/*
 * safetensors reader and writer (include/mlm/safetensors.h,
 * https://huggingface.co/docs/safetensors); checkpoint.c reads and writes models and
 * AdamW moments with it.
 *
 * File = u64 little-endian header length N, N bytes of UTF-8 JSON, data section.
 * The JSON object maps tensor names to {"dtype", "shape", "data_offsets": [begin,
 * end]} (offsets relative to the data section), plus an optional "__metadata__"
 * object of strings. The reader reads the whole file into memory (read(), not
 * mmap, so a file truncated under us is an error rather than a SIGBUS) and trusts
 * nothing: every length, number and offset is checked before it is used, and each
 * error says `path: what is wrong`, naming the tensor. The writer writes
 * PATH.tmp.<pid>, fsyncs it, renames it over PATH and fsyncs the directory, so
 * PATH is either the old file or the complete new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mlm/fileio.h"
#include "mlm/log.h"
#include "mlm/safetensors.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads and writes little-endian data in place: port it for this host"
#endif

#define HEADER_LIMIT 100000000ull   // bytes of JSON we accept, as the reference reader
#define MAX_EXACT_INT 9007199254740992.0   // 2^53: cJSON numbers are doubles

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [MLM_ST_F32] = {"F32", 4}, [MLM_ST_F16] = {"F16", 2}, [MLM_ST_BF16] = {"BF16", 2},
    [MLM_ST_I32] = {"I32", 4}, [MLM_ST_I64] = {"I64", 8}, [MLM_ST_U8] = {"U8", 1},
    [MLM_ST_F64] = {"F64", 8},
};
#define NUM_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

/* "[4, 4]" (also valid JSON, used in the header we write). */
static const char *fmt_shape(char *buf, size_t len, const int64_t *shape, int ndim) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
    return buf;
}

/* numel and bytes of a shape, 0 on success, -1 on a negative dim or overflow. */
static int shape_size(const int64_t *shape, int ndim, size_t elem, size_t *numel, size_t *bytes) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(n, (uint64_t)shape[i], &n)) return -1;
    *numel = n;
    return __builtin_mul_overflow(n, elem, bytes) ? -1 : 0;
}

/* ---------------------------------------------------------------- reading */

/* Index of the first byte that is not well-formed UTF-8 (or is NUL), else n. */
static size_t utf8_bad_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (k == 0 || c == 0 || k > n - i) return i;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return i;
        i += k;
    }
    return n;
}

/* A JSON number that is an integer in [0, 2^53]. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= MAX_EXACT_INT) || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* The three fields of a tensor entry: each exactly once, nothing else. */
static int entry_fields(const cJSON *e, const cJSON *field[3], const char *where, char *err, size_t len) {
    static const char *const names[3] = {"dtype", "shape", "data_offsets"};
    if (!cJSON_IsObject(e)) return mlm_fail(err, len, "%s: is not a JSON object", where);
    field[0] = field[1] = field[2] = NULL;
    for (const cJSON *c = e->child; c; c = c->next) {
        int k = 0;
        while (k < 3 && strcmp(c->string, names[k]) != 0) k++;
        if (k == 3) return mlm_fail(err, len, "%s: unknown field \"%s\"", where, c->string);
        if (field[k]) return mlm_fail(err, len, "%s: field \"%s\" appears twice", where, names[k]);
        field[k] = c;
    }
    for (int k = 0; k < 3; k++)
        if (!field[k]) return mlm_fail(err, len, "%s: missing \"%s\"", where, names[k]);
    return 0;
}

static int parse_dtype(const cJSON *v, mlm_st_dtype *dt, const char *where, char *err, size_t len) {
    if (!cJSON_IsString(v)) return mlm_fail(err, len, "%s: \"dtype\" is not a string", where);
    for (int i = 0; i < NUM_DTYPES; i++)
        if (strcmp(v->valuestring, dtypes[i].name) == 0) {
            *dt = (mlm_st_dtype)i;
            return 0;
        }
    return mlm_fail(err, len, "%s: unknown dtype \"%s\" (known: F32 F16 BF16 I32 I64 U8 F64)", where, v->valuestring);
}

static int parse_shape(const cJSON *v, mlm_st_tensor *t, const char *where, char *err, size_t len) {
    if (!cJSON_IsArray(v)) return mlm_fail(err, len, "%s: \"shape\" is not an array", where);
    t->ndim = cJSON_GetArraySize(v);
    if (t->ndim > MLM_ST_MAX_DIMS)
        return mlm_fail(err, len, "%s: shape has %d dimensions, at most %d supported", where, t->ndim, MLM_ST_MAX_DIMS);
    int i = 0;
    for (const cJSON *d = v->child; d; d = d->next, i++) {
        uint64_t dim;
        if (json_uint(d, &dim) != 0) {
            char *text = cJSON_PrintUnformatted(d);
            mlm_fail(err, len, "%s: shape dimension %d is %s, not a non-negative integer", where, i, text ? text : "?");
            free(text);
            return -1;
        }
        t->shape[i] = (int64_t)dim;
    }
    return 0;
}

static int parse_offsets(const cJSON *v, uint64_t off[2], const char *where, char *err, size_t len) {
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || json_uint(v->child, &off[0]) != 0 ||
        json_uint(v->child->next, &off[1]) != 0)
        return mlm_fail(err, len, "%s: \"data_offsets\" is not [begin, end] of non-negative integers", where);
    if (off[0] > off[1])
        return mlm_fail(err, len, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin", where,
                        off[0], off[1]);
    return 0;
}

/* One tensor entry: fields, dtype, shape, offsets within data, bytes == shape. */
static int parse_entry(const cJSON *e, mlm_st_tensor *t, const uint8_t *data, size_t data_bytes,
                       const char *path, char *err, size_t len) {
    char where[512], shape[256];
    snprintf(where, sizeof where, "%s: tensor \"%s\"", path, e->string);
    const cJSON *field[3];
    uint64_t off[2] = {0, 0};
    if (entry_fields(e, field, where, err, len) || parse_dtype(field[0], &t->dtype, where, err, len) ||
        parse_shape(field[1], t, where, err, len) || parse_offsets(field[2], off, where, err, len))
        return -1;
    if (off[1] > data_bytes)
        return mlm_fail(err, len, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the %zu-byte "
                        "data section", where, off[0], off[1], data_bytes);
    fmt_shape(shape, sizeof shape, t->shape, t->ndim);
    size_t need;
    if (shape_size(t->shape, t->ndim, dtypes[t->dtype].size, &t->numel, &need) != 0)
        return mlm_fail(err, len, "%s: shape %s %s overflows the addressable size", where, shape,
                        dtypes[t->dtype].name);
    if (need != off[1] - off[0])
        return mlm_fail(err, len, "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes but shape %s %s "
                        "needs %zu", where, off[0], off[1], off[1] - off[0], shape, dtypes[t->dtype].name, need);
    t->name = mlm_xmalloc(strlen(e->string) + 1, "a tensor name");
    strcpy(t->name, e->string);
    t->data = data + off[0];
    t->bytes = need;
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(const mlm_st_tensor *const *)a)->name, (*(const mlm_st_tensor *const *)b)->name);
}

static int by_offset(const void *a, const void *b) {
    const mlm_st_tensor *x = *(const mlm_st_tensor *const *)a, *y = *(const mlm_st_tensor *const *)b;
    if (x->data != y->data) return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
    return (x->bytes > y->bytes) - (x->bytes < y->bytes);
}

/* Names are unique; sorted by offset, tensors tile [0, data_bytes) exactly. */
static int check_layout(mlm_st_file *f, const uint8_t *data, size_t data_bytes, const char *path, char *err,
                        size_t len) {
    const mlm_st_tensor **t = mlm_xmalloc(sizeof *t * (size_t)f->count, "the tensor index");
    for (int i = 0; i < f->count; i++) t[i] = &f->tensors[i];
    int rc = 0;
    qsort(t, (size_t)f->count, sizeof *t, by_name);
    for (int i = 1; i < f->count && rc == 0; i++)
        if (strcmp(t[i - 1]->name, t[i]->name) == 0)
            rc = mlm_fail(err, len, "%s: tensor \"%s\" appears twice", path, t[i]->name);
    qsort(t, (size_t)f->count, sizeof *t, by_offset);
    size_t at = 0;   // end of the previous tensor
    for (int i = 0; i < f->count && rc == 0; i++) {
        size_t begin = (size_t)((const uint8_t *)t[i]->data - data), end = begin + t[i]->bytes;
        if (begin > at)
            rc = mlm_fail(err, len, "%s: tensor \"%s\": gap of %zu bytes before data_offsets [%zu, %zu]", path,
                          t[i]->name, begin - at, begin, end);
        else if (begin < at)
            rc = mlm_fail(err, len, "%s: tensor \"%s\": data_offsets [%zu, %zu] overlap tensor \"%s\", which ends "
                          "at %zu", path, t[i]->name, begin, end, t[i - 1]->name, at);
        at = end;
    }
    if (rc == 0 && at != data_bytes)
        rc = mlm_fail(err, len, "%s: tensors cover %zu bytes but the data section holds %zu", path, at, data_bytes);
    free(t);
    return rc;
}

static int parse_metadata(const cJSON *m, mlm_st_file *f, const char *path, char *err, size_t len) {
    if (f->metadata_json) return mlm_fail(err, len, "%s: \"__metadata__\" appears twice", path);
    if (!cJSON_IsObject(m)) return mlm_fail(err, len, "%s: \"__metadata__\" is not a JSON object", path);
    for (const cJSON *c = m->child; c; c = c->next)
        if (!cJSON_IsString(c))
            return mlm_fail(err, len, "%s: \"__metadata__\" value \"%s\" is not a string", path, c->string);
    f->metadata_json = cJSON_PrintUnformatted(m);
    return f->metadata_json ? 0 : mlm_fail(err, len, "%s: out of memory", path);
}

/* The JSON header: an object (with nothing but spaces after it) of tensors. */
static int parse_header(mlm_st_file *f, const uint8_t *json, size_t n, const char *path, char *err, size_t len) {
    size_t bad = utf8_bad_at(json, n);
    if (bad < n) return mlm_fail(err, len, "%s: header byte %zu is not UTF-8 text", path, bad);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)json, n, &end, 0);
    if (!root)
        return mlm_fail(err, len, "%s: header is not valid JSON (error near byte %td)", path,
                        end ? end - (const char *)json : 0);
    int rc = 0;
    for (const char *p = end; p < (const char *)json + n && rc == 0; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            rc = mlm_fail(err, len, "%s: header has text after its JSON value (byte %td)", path,
                          p - (const char *)json);
    if (rc == 0 && !cJSON_IsObject(root)) rc = mlm_fail(err, len, "%s: header is not a JSON object", path);
    int count = rc == 0 ? cJSON_GetArraySize(root) : 0;
    f->tensors = mlm_xcalloc((size_t)count, sizeof *f->tensors, "the tensor table");
    const uint8_t *data = json + n;
    size_t data_bytes = f->map_bytes - 8 - n;
    for (const cJSON *e = rc == 0 ? root->child : NULL; e && rc == 0; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0)
            rc = parse_metadata(e, f, path, err, len);
        else if ((rc = parse_entry(e, &f->tensors[f->count], data, data_bytes, path, err, len)) == 0)
            f->count++;
    }
    cJSON_Delete(root);
    return rc == 0 ? check_layout(f, data, data_bytes, path, err, len) : rc;
}

int mlm_st_parse(mlm_st_file *f, void *buf, size_t bytes, const char *path, char *err, size_t err_len) {
    memset(f, 0, sizeof *f);
    f->map = buf;
    f->map_bytes = bytes;
    uint64_t n = 0;
    int rc = 0;
    if (f->map_bytes < 8)
        rc = mlm_fail(err, err_len, "%s: file is %zu bytes, too short for the 8-byte header length", path,
                      f->map_bytes);
    else
        memcpy(&n, buf, 8);
    if (rc == 0 && n > HEADER_LIMIT)
        rc = mlm_fail(err, err_len, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes", path, n,
                      HEADER_LIMIT);
    else if (rc == 0 && n > f->map_bytes - 8)
        rc = mlm_fail(err, err_len, "%s: header length %" PRIu64 " runs past the end of the %zu-byte file", path,
                      n, f->map_bytes);
    if (rc == 0) rc = parse_header(f, (uint8_t *)buf + 8, (size_t)n, path, err, err_len);
    if (rc != 0) mlm_st_close(f);
    return rc;
}

int mlm_st_open(mlm_st_file *f, const char *path, char *err, size_t err_len) {
    memset(f, 0, sizeof *f);
    char *buf = NULL;
    size_t bytes = 0;
    if (mlm_read_file(path, &buf, &bytes, err, err_len) != 0) return -1;
    return mlm_st_parse(f, buf, bytes, path, err, err_len);
}

void mlm_st_close(mlm_st_file *f) {
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->metadata_json);
    free(f->map);
    memset(f, 0, sizeof *f);
}

const mlm_st_tensor *mlm_st_find(const mlm_st_file *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* The tensor called name holding expect values, or NULL with err. */
static const mlm_st_tensor *find_sized(const mlm_st_file *f, const char *name, size_t expect, char *err,
                                       size_t len) {
    const mlm_st_tensor *t = mlm_st_find(f, name);
    char shape[256];
    if (!t)
        mlm_fail(err, len, "tensor \"%s\" is not in the file", name);
    else if (t->numel != expect)
        mlm_fail(err, len, "tensor \"%s\" has shape %s (%zu values), expected %zu values", name,
                 fmt_shape(shape, sizeof shape, t->shape, t->ndim), t->numel, expect);
    return t && t->numel == expect ? t : NULL;
}

/* IEEE half to float, including subnormals, infinities and NaN. */
static float f16_to_f32(uint16_t h) {
    int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v = exp == 0 ? ldexpf((float)man, -24) : exp == 31 ? (man ? NAN : INFINITY)
                                                              : ldexpf((float)(man | 0x400), exp - 25);
    return h & 0x8000 ? -v : v;
}

static float element_f32(const uint8_t *p, mlm_st_dtype dt) {
    union { float f; double d; uint32_t u32; uint16_t u16; int32_t i32; int64_t i64; } v;
    memcpy(&v, p, dtypes[dt].size);
    switch (dt) {
    case MLM_ST_F32: return v.f;
    case MLM_ST_F16: return f16_to_f32(v.u16);
    case MLM_ST_BF16: v.u32 = (uint32_t)v.u16 << 16; return v.f;
    case MLM_ST_I32: return (float)v.i32;
    case MLM_ST_I64: return (float)v.i64;
    case MLM_ST_U8: return (float)p[0];
    case MLM_ST_F64: return (float)v.d;
    }
    return NAN;
}

int mlm_st_read_f32(const mlm_st_file *f, const char *name, float *out, size_t expect_numel, char *err,
                    size_t err_len) {
    const mlm_st_tensor *t = find_sized(f, name, expect_numel, err, err_len);
    if (!t) return -1;
    const uint8_t *p = t->data;
    if (t->dtype == MLM_ST_F32) {
        memcpy(out, p, t->bytes);
        return 0;
    }
    for (size_t i = 0; i < t->numel; i++) out[i] = element_f32(p + i * dtypes[t->dtype].size, t->dtype);
    return 0;
}

int mlm_st_read_i32(const mlm_st_file *f, const char *name, int32_t *out, size_t expect_numel, char *err,
                    size_t err_len) {
    const mlm_st_tensor *t = find_sized(f, name, expect_numel, err, err_len);
    if (!t) return -1;
    if (t->dtype != MLM_ST_I32 && t->dtype != MLM_ST_I64)
        return mlm_fail(err, err_len, "tensor \"%s\" is %s, expected I32 or I64", name, dtypes[t->dtype].name);
    const uint8_t *p = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        int64_t v;
        if (t->dtype == MLM_ST_I32) {
            int32_t w;
            memcpy(&w, p + 4 * i, 4);
            v = w;
        } else {
            memcpy(&v, p + 8 * i, 8);
        }
        if (v < INT32_MIN || v > INT32_MAX)
            return mlm_fail(err, err_len, "tensor \"%s\": value %" PRId64 " at index %zu does not fit in int32", name,
                            v, i);
        out[i] = (int32_t)v;
    }
    return 0;
}

/* ---------------------------------------------------------------- writing */

/* Bytes of an output tensor, or -1 if its dtype or shape is invalid. */
static int out_bytes(const mlm_st_out *t, size_t *bytes) {
    size_t numel;
    if ((int)t->dtype < 0 || (int)t->dtype >= NUM_DTYPES || t->ndim < 0 || t->ndim > MLM_ST_MAX_DIMS) return -1;
    return shape_size(t->shape, t->ndim, dtypes[t->dtype].size, &numel, bytes);
}

/* What the writer is given: unique metadata keys; named tensors of known dtypes and
 * shapes, with data, under unique names. */
static int check_outputs(const mlm_st_out *t, int count, const char *const *keys, const char *const *values,
                         int nmeta, const char *path, char *err, size_t len) {
    for (int i = 0; i < nmeta; i++) {
        if (!keys[i] || !values[i]) return mlm_fail(err, len, "%s: metadata entry %d has no key or value", path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(keys[j], keys[i]) == 0)
                return mlm_fail(err, len, "%s: metadata \"%s\" given twice", path, keys[i]);
    }
    for (int i = 0; i < count; i++) {
        size_t bytes;
        const char *name = t[i].name ? t[i].name : "";
        if (!*name || strcmp(name, "__metadata__") == 0 || out_bytes(&t[i], &bytes) != 0 || (bytes && !t[i].data))
            return mlm_fail(err, len, "%s: tensor %d (\"%s\"): invalid name, dtype, shape or data", path, i, name);
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, name) == 0) return mlm_fail(err, len, "%s: tensor \"%s\" given twice", path, name);
    }
    return 0;
}

/* Header JSON (tensors in order, contiguous offsets) padded with spaces to a
 * multiple of 8 bytes, so the data section starts 8-aligned; NULL if out of memory. */
static char *build_header(const mlm_st_out *t, int count, const char *const *keys, const char *const *values,
                          int nmeta, size_t *padded) {
    cJSON *root = cJSON_CreateObject(), *meta = nmeta > 0 ? cJSON_AddObjectToObject(root, "__metadata__") : NULL;
    int ok = root != NULL && (nmeta <= 0 || meta != NULL);
    for (int i = 0; ok && i < nmeta; i++) ok = cJSON_AddStringToObject(meta, keys[i], values[i]) != NULL;
    size_t at = 0, bytes = 0;
    for (int i = 0; ok && i < count; i++) {
        char shape[256], offsets[64];
        out_bytes(&t[i], &bytes);
        snprintf(offsets, sizeof offsets, "[%zu, %zu]", at, at + bytes);
        at += bytes;
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        ok = e && cJSON_AddStringToObject(e, "dtype", dtypes[t[i].dtype].name) &&
             cJSON_AddRawToObject(e, "shape", fmt_shape(shape, sizeof shape, t[i].shape, t[i].ndim)) &&
             cJSON_AddRawToObject(e, "data_offsets", offsets);
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    size_t n = json ? strlen(json) : 0;
    char *out = json ? realloc(json, (n + 7) / 8 * 8 + 1) : NULL;
    if (!out) {
        free(json);
        return NULL;
    }
    *padded = (n + 7) / 8 * 8;
    memset(out + n, ' ', *padded - n);
    out[*padded] = '\0';
    return out;
}

int mlm_st_write(const char *path, const mlm_st_out *tensors, int count, const char *const *meta_keys,
                 const char *const *meta_values, int nmeta, char *err, size_t err_len) {
    if (check_outputs(tensors, count, meta_keys, meta_values, nmeta, path, err, err_len) != 0) return -1;
    size_t header_bytes;
    char *header = build_header(tensors, count, meta_keys, meta_values, nmeta, &header_bytes);
    if (!header) return mlm_fail(err, err_len, "%s: out of memory building the header", path);
    uint64_t length = header_bytes;
    int nparts = count + 2;
    const void **parts = mlm_xmalloc(nparts * sizeof(void *), "safetensors parts");
    size_t *sizes = mlm_xmalloc(nparts * sizeof(size_t), "safetensors parts");
    parts[0] = &length;
    sizes[0] = 8;
    parts[1] = header;
    sizes[1] = header_bytes;
    for (int i = 0; i < count; i++) {
        parts[i + 2] = tensors[i].data;
        out_bytes(&tensors[i], &sizes[i + 2]);
    }
    int rc = mlm_write_file_atomic(path, parts, sizes, nparts, err, err_len);
    free(parts);
    free(sizes);
    free(header);
    return rc;
}
