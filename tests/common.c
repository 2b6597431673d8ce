/* Helpers shared by the test suites (tests/common.h). */
#include "common.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "mlm/fileio.h"
#include "mlm/safetensors.h"

char tmpdir[64];

void make_tmpdir(void) {
    strcpy(tmpdir, "/tmp/mlm_test_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

void rm_tmpdir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

void write_file(const char *name, const char *text) {
    char path[256];
    tmp_path(path, sizeof path, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

int run_mlmgpu(const char *env, const char *args, char *out, size_t n) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd %s && OMP_NUM_THREADS=2 %s %s %s", tmpdir, env, MLM_BIN, args);
    return run_shell(cmd, out, n);
}

int run_shell(const char *cmd, char *out, size_t n) {
    char full[8300];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    // all of it is read (a writer stopped by a full pipe would hang or die of
    // SIGPIPE); what does not fit in out keeps its beginning and its end
    size_t cap = 1 << 16, got = 0, r;
    char *all = malloc(cap);
    cr_assert_not_null(all);
    while ((r = fread(all + got, 1, cap - got, p)) > 0) {
        if ((got += r) < cap) continue;
        all = realloc(all, cap *= 2);
        cr_assert_not_null(all);
    }
    if (got < n) {
        memcpy(out, all, got);
        out[got] = 0;
    } else {
        char cut[64];
        int m = snprintf(cut, sizeof cut, "\n[... %zu bytes of output left out ...]\n", got - (n - 1));
        size_t head = (n - 1 - (size_t)m) / 2, tail = n - 1 - (size_t)m - head;
        memcpy(out, all, head);
        memcpy(out + head, cut, (size_t)m);
        memcpy(out + head + m, all + got - tail, tail);
        out[n - 1] = 0;
    }
    free(all);
    int st = pclose(p);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 255;
    return code;   // the shell reports a killed child as 128 + signal too
}

int read_metric_losses(const char *run, const char *split, double *loss, int max) {
    char path[256], line[1024], key[64];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", tmpdir, run);
    snprintf(key, sizeof key, "\"split\":\"%s\"", split);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        const char *l = strstr(line, "\"loss\":");
        if (strstr(line, key) && l) loss[n++] = atof(l + 7);
    }
    fclose(f);
    return n;
}

char *read_path(const char *path, size_t *n) {
    char *text, err[1024];
    size_t len;
    cr_assert_eq(mlm_read_file(path, &text, &len, err, sizeof err), 0, "%s", err);
    if (n) *n = len;
    return text;
}

char *read_tmp(const char *name, size_t *n) {
    char path[256];
    tmp_path(path, sizeof path, name);
    return read_path(path, n);
}

size_t unhex(const char *s, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        sscanf(s + i, "%2x", &v);
        out[k++] = (char)v;
    }
    return k;
}

int same_tmp_files(const char *a, const char *b) {
    size_t na, nb;
    char *x = read_tmp(a, &na), *y = read_tmp(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

double max_rel_diff(const char *a, const char *b, char *worst, size_t n) {
    char pa[256], pb[256], err[1024];
    tmp_path(pa, sizeof pa, a);
    tmp_path(pb, sizeof pb, b);
    mlm_st_file fa, fb;
    cr_assert_eq(mlm_st_open(&fa, pa, err, sizeof err), 0, "%s", err);
    cr_assert_eq(mlm_st_open(&fb, pb, err, sizeof err), 0, "%s", err);
    cr_assert_eq(fa.count, fb.count);
    double rel = 0;
    for (int i = 0; i < fa.count; i++) {
        const mlm_st_tensor *ta = &fa.tensors[i], *tb = mlm_st_find(&fb, ta->name);
        cr_assert(tb && tb->numel == ta->numel && ta->dtype == MLM_ST_F32, "%s", ta->name);
        const float *x = ta->data, *y = tb->data;
        double diff = 0, mag = 0;
        for (size_t k = 0; k < ta->numel; k++) {
            diff = fmax(diff, fabs((double)x[k] - y[k]));
            mag = fmax(mag, fabs((double)x[k]));
        }
        double r = diff / fmax(mag, 1e-3);
        if (r >= rel) rel = r, snprintf(worst, n, "%s", ta->name);
    }
    mlm_st_close(&fa);
    mlm_st_close(&fb);
    return rel;
}

void prepare_roberta_data(void) {
    char out[8192];
    int rc = run_mlmgpu("", "prepare --input " MLM_SOURCE_ROOT "/tests/fixtures/vocab_corpus --vocab " MLM_SOURCE_ROOT
                        "/tests/fixtures/roberta_bpe --seq-len 64 --out rdata --val-fraction 0.1 --threads 2",
                        out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
}

size_t parse_ids(const char *s, size_t n, int32_t *ids, size_t max) {
    size_t k = 0, i = 0;
    while (i < n) {
        if (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t') {
            i++;
            continue;
        }
        if (s[i] < '0' || s[i] > '9') break;
        int32_t v = 0;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) v = 10 * v + (s[i] - '0');
        cr_assert_lt(k, max, "more than %zu ids", max);
        ids[k++] = v;
    }
    return k;
}

void expect_ids(const int32_t *got, size_t ngot, const int32_t *want, size_t nwant, const char *what, int line) {
    size_t i = 0;
    while (i < ngot && i < nwant && got[i] == want[i]) i++;
    cr_expect(ngot == nwant && i == ngot, "%s, case %d: %zu ids, HF's %zu; first difference at %zu: %d vs %d", what,
              line, ngot, nwant, i, i < ngot ? got[i] : -1, i < nwant ? want[i] : -1);
}
