/*
 * safetensors reader and writer: round trips of every dtype (0-d and empty tensors
 * included), files written by Python (tests/fixtures, made by
 * tests/reference/make_fixtures.py), and hostile files built byte by byte, each of
 * which must be an error whose message names the file and the problem.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlm/safetensors.h"

#ifndef MLM_SOURCE_ROOT
#define MLM_SOURCE_ROOT "."
#endif
#define FIXTURES MLM_SOURCE_ROOT "/tests/fixtures/"

static char tmpdir[64];

static void make_tmpdir(void) {
    strcpy(tmpdir, "/tmp/mlm_st_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static int remove_entry(const char *p, const struct stat *st, int type, struct FTW *ftw) {
    return remove(p);
}

static void remove_tmpdir(void) {
    nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(safetensors, .init = make_tmpdir, .fini = remove_tmpdir);

/* Path of name inside this test's temporary directory (one static buffer). */
static const char *tmp_path(const char *name) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static int entries_in(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    cr_assert_eq(fwrite(p, 1, n, fp), n);
    fclose(fp);
}

/* A file with header length field n, len bytes of header json and data_bytes of data. */
static const char *raw_file(uint64_t n, const char *json, size_t len, size_t data_bytes) {
    size_t total = 8 + len + data_bytes;
    uint8_t *buf = calloc(total, 1);
    memcpy(buf, &n, 8);
    memcpy(buf + 8, json, len);
    for (size_t i = 0; i < data_bytes; i++) buf[8 + len + i] = (uint8_t)i;
    const char *path = tmp_path("bad.safetensors");
    write_bytes(path, buf, total);
    free(buf);
    return path;
}

static const char *hostile(uint64_t n, const char *json, size_t data_bytes) {
    return raw_file(n, json, strlen(json), data_bytes);
}

/* Same, with the header length field equal to the header text's length. */
static const char *bad_file(const char *json, size_t data_bytes) {
    return hostile(strlen(json), json, data_bytes);
}

static void expect_error(const char *path, const char *fragment) {
    mlm_st_file f;
    char err[512] = "";
    cr_assert_eq(mlm_st_open(&f, path, err, sizeof err), -1, "opened, expected an error with \"%s\"", fragment);
    cr_assert_eq(strncmp(err, path, strlen(path)), 0, "error does not start with the path: %s", err);
    cr_assert_not_null(strstr(err, fragment), "error \"%s\" lacks \"%s\"", err, fragment);
    cr_assert(f.count == 0 && f.tensors == NULL && f.map == NULL && f.metadata_json == NULL);
}

/* ---------------------------------------------------------------- round trip */

Test(safetensors, round_trip_all_dtypes_scalar_and_empty) {
    const float f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f};
    const uint16_t f16[4] = {0x3c00, 0xb800, 0x7bff, 0x0001};    // 1, -0.5, 65504, 2^-24
    const uint16_t bf16[4] = {0x3f80, 0xc020, 0x4049, 0x0000};   // 1, -2.5, 3.140625, 0
    const int32_t i32[3] = {-5, 0, 2147483647};
    const int64_t i64[2] = {-(1ll << 31), 123456789};
    const uint8_t u8[5] = {0, 1, 127, 128, 255};
    const double f64[2] = {0.125, -1e10};
    const float scalar = 42.5f;
    const mlm_st_out out[] = {
        {"w.f32", MLM_ST_F32, 2, {2, 3}, f32},   {"h.f16", MLM_ST_F16, 1, {4}, f16},
        {"b.bf16", MLM_ST_BF16, 2, {2, 2}, bf16}, {"i.i32", MLM_ST_I32, 1, {3}, i32},
        {"i.i64", MLM_ST_I64, 1, {2}, i64},      {"u.u8", MLM_ST_U8, 1, {5}, u8},
        {"d.f64", MLM_ST_F64, 1, {2}, f64},      {"scalar", MLM_ST_F32, 0, {0}, &scalar},
        {"empty", MLM_ST_F32, 2, {0, 4}, NULL},
    };
    const int count = sizeof out / sizeof out[0];
    const char *keys[] = {"config", "note"}, *values[] = {"{\"vocab_size\": 128}", "quote \" and \\ survive"};
    const char *path = tmp_path("rt.safetensors");
    char err[512] = "";
    cr_assert_eq(mlm_st_write(path, out, count, keys, values, 2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(entries_in(tmpdir), 1, "temporary file left behind");

    mlm_st_file f;
    cr_assert_eq(mlm_st_open(&f, path, err, sizeof err), 0, "%s", err);
    uint64_t header_len;
    memcpy(&header_len, f.map, 8);
    cr_assert_eq(header_len % 8, 0);
    cr_assert_eq(f.count, count);
    for (int i = 0; i < count; i++) {
        const mlm_st_tensor *t = &f.tensors[i];
        cr_assert_str_eq(t->name, out[i].name);   // file order = given order
        cr_assert_eq(t->dtype, out[i].dtype);
        cr_assert_eq(t->ndim, out[i].ndim);
        for (int d = 0; d < t->ndim; d++) cr_assert_eq(t->shape[d], out[i].shape[d]);
        if (t->bytes) cr_assert_eq(memcmp(t->data, out[i].data, t->bytes), 0, "%s data differs", t->name);
    }
    cr_assert_eq(mlm_st_find(&f, "scalar")->numel, 1);
    cr_assert_eq(mlm_st_find(&f, "empty")->numel, 0);
    cr_assert_null(mlm_st_find(&f, "nope"));
    cr_assert_not_null(strstr(f.metadata_json, "\"config\":\"{\\\"vocab_size\\\": 128}\""), "%s", f.metadata_json);
    cr_assert_not_null(strstr(f.metadata_json, "quote \\\" and \\\\ survive"), "%s", f.metadata_json);

    float v[6];
    cr_assert_eq(mlm_st_read_f32(&f, "h.f16", v, 4, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == 1.0f && v[1] == -0.5f && v[2] == 65504.0f && v[3] == 0x1p-24f);
    cr_assert_eq(mlm_st_read_f32(&f, "b.bf16", v, 4, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == 1.0f && v[1] == -2.5f && v[2] == 3.140625f && v[3] == 0.0f);
    cr_assert_eq(mlm_st_read_f32(&f, "d.f64", v, 2, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == 0.125f && v[1] == -1e10f);
    cr_assert_eq(mlm_st_read_f32(&f, "i.i64", v, 2, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == -2147483648.0f && v[1] == 123456789.0f);
    cr_assert_eq(mlm_st_read_f32(&f, "u.u8", v, 5, err, sizeof err), 0, "%s", err);
    cr_assert(v[3] == 128.0f && v[4] == 255.0f);
    cr_assert_eq(mlm_st_read_f32(&f, "scalar", v, 1, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == 42.5f);
    cr_assert_eq(mlm_st_read_f32(&f, "empty", v, 0, err, sizeof err), 0, "%s", err);

    int32_t iv[3];
    cr_assert_eq(mlm_st_read_i32(&f, "i.i32", iv, 3, err, sizeof err), 0, "%s", err);
    cr_assert(iv[0] == -5 && iv[1] == 0 && iv[2] == 2147483647);
    cr_assert_eq(mlm_st_read_i32(&f, "i.i64", iv, 2, err, sizeof err), 0, "%s", err);
    cr_assert(iv[0] == INT32_MIN && iv[1] == 123456789);
    mlm_st_close(&f);
}

Test(safetensors, write_replaces_an_existing_file_and_no_metadata_when_none) {
    const float a[2] = {1, 2}, b[3] = {3, 4, 5};
    const char *path = tmp_path("x.safetensors");
    char err[512] = "";
    mlm_st_out out = {"a", MLM_ST_F32, 1, {2}, a};
    cr_assert_eq(mlm_st_write(path, &out, 1, NULL, NULL, 0, err, sizeof err), 0, "%s", err);
    out = (mlm_st_out){"b", MLM_ST_F32, 1, {3}, b};
    cr_assert_eq(mlm_st_write(path, &out, 1, NULL, NULL, 0, err, sizeof err), 0, "%s", err);
    mlm_st_file f;
    cr_assert_eq(mlm_st_open(&f, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.count, 1);
    cr_assert_str_eq(f.tensors[0].name, "b");
    cr_assert_null(f.metadata_json);
    mlm_st_close(&f);
    cr_assert_eq(entries_in(tmpdir), 1);
}

Test(safetensors, write_zero_tensors) {
    const char *path = tmp_path("none.safetensors");
    char err[512] = "";
    cr_assert_eq(mlm_st_write(path, NULL, 0, NULL, NULL, 0, err, sizeof err), 0, "%s", err);
    mlm_st_file f;
    cr_assert_eq(mlm_st_open(&f, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.count, 0);
    mlm_st_close(&f);
}

Test(safetensors, write_into_missing_directory_fails_and_leaves_nothing) {
    const float a[1] = {1};
    mlm_st_out out = {"a", MLM_ST_F32, 1, {1}, a};
    char path[256], err[512] = "";
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", tmpdir);
    cr_assert_eq(mlm_st_write(path, &out, 1, NULL, NULL, 0, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, "No such file or directory"), "%s", err);
    cr_assert_eq(entries_in(tmpdir), 0);
}

Test(safetensors, write_rejects_bad_tensors_and_leaves_nothing) {
    const float a[2] = {1, 2};
    const char *path = tmp_path("x.safetensors");
    char err[512] = "";
    mlm_st_out dup[2] = {{"a", MLM_ST_F32, 1, {2}, a}, {"a", MLM_ST_F32, 1, {2}, a}};
    cr_assert_eq(mlm_st_write(path, dup, 2, NULL, NULL, 0, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "tensor \"a\" given twice"), "%s", err);
    mlm_st_out neg = {"n", MLM_ST_F32, 2, {2, -1}, a};
    cr_assert_eq(mlm_st_write(path, &neg, 1, NULL, NULL, 0, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "tensor 0 (\"n\")"), "%s", err);
    const char *keys[] = {"k", "k"}, *values[] = {"1", "2"};
    mlm_st_out ok = {"a", MLM_ST_F32, 1, {2}, a};
    cr_assert_eq(mlm_st_write(path, &ok, 1, keys, values, 2, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "metadata \"k\" given twice"), "%s", err);
    mlm_st_out reserved = {"__metadata__", MLM_ST_F32, 1, {2}, a};
    cr_assert_eq(mlm_st_write(path, &reserved, 1, NULL, NULL, 0, err, sizeof err), -1);
    cr_assert_eq(entries_in(tmpdir), 0);
}

/* ---------------------------------------------------------------- Python's files */

Test(safetensors, reads_file_written_by_python) {
    const char *path = FIXTURES "python_small.safetensors";
    mlm_st_file f;
    char err[512] = "";
    cr_assert_eq(mlm_st_open(&f, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.count, 6);
    cr_assert_not_null(strstr(f.metadata_json, "make_fixtures.py"), "%s", f.metadata_json);

    const mlm_st_tensor *t = mlm_st_find(&f, "f32");
    cr_assert(t && t->dtype == MLM_ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    float v[6];
    cr_assert_eq(mlm_st_read_f32(&f, "f32", v, 6, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == 0.5f && v[1] == -1.0f && v[4] == 4.25f && v[5] == -6.0f);
    cr_assert_eq(mlm_st_read_f32(&f, "bf16", v, 3, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == 1.0f && v[1] == -2.5f && v[2] == 3.140625f);
    cr_assert_eq(mlm_st_read_f32(&f, "f16", v, 4, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == 1.0f && v[1] == -0.5f && v[2] == 65504.0f && v[3] == 0x1p-24f);
    cr_assert_eq(mlm_st_read_f32(&f, "i64", v, 4, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == -2.0f && v[2] == 7.0f && v[3] == 0x1p40f);
    t = mlm_st_find(&f, "scalar");
    cr_assert(t && t->ndim == 0 && t->numel == 1);
    cr_assert_eq(mlm_st_read_f32(&f, "scalar", v, 1, err, sizeof err), 0, "%s", err);
    cr_assert(v[0] == 42.5f);
    t = mlm_st_find(&f, "empty");
    cr_assert(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 3 && t->numel == 0 && t->bytes == 0);

    int32_t iv[6];
    cr_assert_eq(mlm_st_read_i32(&f, "i64", iv, 4, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "value 1099511627776 at index 3 does not fit in int32"), "%s", err);
    cr_assert_eq(mlm_st_read_i32(&f, "f32", iv, 6, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "tensor \"f32\" is F32, expected I32 or I64"), "%s", err);
    cr_assert_eq(mlm_st_read_f32(&f, "f32", v, 5, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "tensor \"f32\" has shape [2, 3] (6 values), expected 5"), "%s", err);
    cr_assert_eq(mlm_st_read_f32(&f, "missing", v, 1, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "tensor \"missing\" is not in the file"), "%s", err);
    mlm_st_close(&f);
}

Test(safetensors, reads_hf_tiny_fixture) {
    mlm_st_file f;
    char err[512] = "";
    cr_assert_eq(mlm_st_open(&f, FIXTURES "hf_tiny.safetensors", err, sizeof err), 0, "%s", err);
    const mlm_st_tensor *wte = mlm_st_find(&f, "bert.embeddings.word_embeddings.weight");
    cr_assert(wte && wte->dtype == MLM_ST_F32 && wte->shape[0] == 128 && wte->shape[1] == 32);
    cr_assert_not_null(mlm_st_find(&f, "grad.cls.predictions.bias"));
    cr_assert_null(mlm_st_find(&f, "cls.predictions.decoder.weight"));   // tied, stored once
    cr_assert_not_null(strstr(f.metadata_json, "\\\"vocab_size\\\": 128"), "%s", f.metadata_json);
    float losses[10];
    cr_assert_eq(mlm_st_read_f32(&f, "ref.adamw_losses", losses, 10, err, sizeof err), 0, "%s", err);
    cr_assert(losses[9] < losses[0]);
    mlm_st_close(&f);
}

/* ---------------------------------------------------------------- hostile files */

#define A_F32_2 "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

Test(safetensors, missing_file_and_directory) {
    expect_error(tmp_path("absent.safetensors"), "cannot open");
    expect_error(tmpdir, "not a regular file");
}

Test(safetensors, file_shorter_than_length_field) {
    const char *path = tmp_path("short.safetensors");
    write_bytes(path, "\x10\0\0\0\0", 5);
    expect_error(path, "file is 5 bytes, too short for the 8-byte header length");
    write_bytes(path, "", 0);
    expect_error(path, "file is 0 bytes");
}

Test(safetensors, header_length_past_end_of_file) {
    expect_error(hostile(100, "{}", 10), "header length 100 runs past the end of the 20-byte file");
}

Test(safetensors, header_length_over_limit) {
    expect_error(hostile(100000001, "{}", 0), "header length 100000001 exceeds the limit");
    expect_error(hostile(UINT64_MAX, "{}", 0), "exceeds the limit");
}

Test(safetensors, data_shorter_than_header_says) {
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8),
                 "tensor \"a\": data_offsets [0, 16] run past the end of the 8-byte data section");
}

Test(safetensors, invalid_json) {
    expect_error(bad_file("{\"a\": ", 0), "header is not valid JSON");
    expect_error(bad_file("{} x", 0), "header has text after its JSON value");
    expect_error(hostile(0, "", 0), "header is not valid JSON");
}

Test(safetensors, json_not_an_object) {
    expect_error(bad_file("[1, 2]", 0), "header is not a JSON object");
    expect_error(bad_file("{\"a\": 3}", 0), "tensor \"a\": is not a JSON object");
}

Test(safetensors, header_not_utf8) {
    expect_error(bad_file("{\"\xff\":" A_F32_2 "}", 8), "header byte 2 is not UTF-8 text");
    expect_error(raw_file(4, "{}\0 ", 4, 0), "header byte 2 is not UTF-8 text");
}

Test(safetensors, deeply_nested_json) {
    char json[8002];
    memset(json, '[', 4000);
    memset(json + 4000, ']', 4000);
    json[8000] = '\0';
    expect_error(bad_file(json, 0), "header is not valid JSON");
}

Test(safetensors, missing_fields) {
    expect_error(bad_file("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8), "tensor \"a\": missing \"dtype\"");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8), "tensor \"a\": missing \"shape\"");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), "tensor \"a\": missing \"data_offsets\"");
}

Test(safetensors, unknown_or_repeated_field) {
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8),
                 "tensor \"a\": unknown field \"x\"");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                 "tensor \"a\": field \"dtype\" appears twice");
}

Test(safetensors, unknown_dtype) {
    expect_error(bad_file("{\"a\":{\"dtype\":\"F8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2),
                 "tensor \"a\": unknown dtype \"F8\"");
    expect_error(bad_file("{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                 "tensor \"a\": \"dtype\" is not a string");
}

Test(safetensors, offsets_out_of_bounds_or_malformed) {
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8),
                 "tensor \"a\": data_offsets [4, 12] run past the end of the 8-byte data section");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8),
                 "tensor \"a\": data_offsets [8, 4] end before they begin");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8),
                 "tensor \"a\": \"data_offsets\" is not [begin, end]");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8),
                 "tensor \"a\": \"data_offsets\" is not [begin, end]");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e300]}}", 8),
                 "tensor \"a\": \"data_offsets\" is not [begin, end]");
}

Test(safetensors, shape_bytes_mismatch) {
    const char *path = bad_file("{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,12]}}", 12);
    mlm_st_file f;
    char err[512], want[512];
    cr_assert_eq(mlm_st_open(&f, path, err, sizeof err), -1);
    snprintf(want, sizeof want,
             "%s: tensor \"a.weight\": data_offsets [0, 12] hold 12 bytes but shape [4, 4] F32 needs 64", path);
    cr_assert_str_eq(err, want);
}

Test(safetensors, bad_dims) {
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1,2],\"data_offsets\":[0,8]}}", 8),
                 "tensor \"a\": shape dimension 0 is -1, not a non-negative integer");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,8]}}", 8),
                 "tensor \"a\": shape dimension 1 is 1.5, not a non-negative integer");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8),
                 "tensor \"a\": shape has 9 dimensions, at most 8 supported");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8),
                 "tensor \"a\": \"shape\" is not an array");
    expect_error(bad_file("{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4294967296],"
                          "\"data_offsets\":[0,8]}}", 8),
                 "tensor \"a\": shape [4294967296, 4294967296, 4294967296] F64 overflows");
}

Test(safetensors, gap_between_tensors) {
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12),
                 "tensor \"b\": gap of 4 bytes before data_offsets [8, 12]");
    expect_error(bad_file("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8),
                 "tensor \"b\": gap of 4 bytes before data_offsets [4, 8]");
}

Test(safetensors, overlapping_tensors) {
    expect_error(bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12),
                 "tensor \"b\": data_offsets [4, 12] overlap tensor \"a\", which ends at 8");
    expect_error(bad_file("{\"a\":" A_F32_2 ",\"b\":" A_F32_2 "}", 8), "overlap tensor");
}

Test(safetensors, data_section_not_covered) {
    expect_error(bad_file("{\"a\":" A_F32_2 "}", 12), "tensors cover 8 bytes but the data section holds 12");
}

Test(safetensors, duplicate_names) {
    expect_error(bad_file("{\"a\":" A_F32_2 ",\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12),
                 "tensor \"a\" appears twice");
}

Test(safetensors, bad_metadata) {
    expect_error(bad_file("{\"__metadata__\":[1],\"a\":" A_F32_2 "}", 8), "\"__metadata__\" is not a JSON object");
    expect_error(bad_file("{\"__metadata__\":{\"k\":1},\"a\":" A_F32_2 "}", 8),
                 "\"__metadata__\" value \"k\" is not a string");
    expect_error(bad_file("{\"__metadata__\":{},\"__metadata__\":{}}", 0), "\"__metadata__\" appears twice");
}

/* Every truncation of a valid file is an error; every single-byte corruption is an
 * error or a file that passes validation, never a crash. */
Test(safetensors, truncated_and_corrupted_files_never_crash) {
    const float a[3] = {1, 2, 3};
    const int32_t b[2] = {4, 5};
    const mlm_st_out out[2] = {{"a", MLM_ST_F32, 1, {3}, a}, {"b", MLM_ST_I32, 2, {1, 2}, b}};
    const char *keys[] = {"k"}, *values[] = {"v"};
    char err[512];
    const char *good = tmp_path("good.safetensors");
    cr_assert_eq(mlm_st_write(good, out, 2, keys, values, 1, err, sizeof err), 0, "%s", err);
    FILE *fp = fopen(good, "rb");
    uint8_t buf[1024];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    const char *path = tmp_path("mutant.safetensors");
    mlm_st_file f;
    for (size_t len = 0; len < n; len++) {
        write_bytes(path, buf, len);
        cr_assert_eq(mlm_st_open(&f, path, err, sizeof err), -1, "truncated to %zu bytes but opened", len);
    }
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (uint8_t)(1u << bit);
            write_bytes(path, buf, n);
            if (mlm_st_open(&f, path, err, sizeof err) == 0) mlm_st_close(&f);
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
}
