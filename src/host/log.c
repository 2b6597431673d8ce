/*
 * Logging to stderr, fatal errors with exit codes, and allocation that names
 * what did not fit.
 */
#include "mlm/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void mlm_log(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("mlmgpu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

_Noreturn void mlm_die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("mlmgpu: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

const char *mlm_choices_text(const char *const *names, char *out, size_t n) {
    int count = 0;
    while (names[count]) count++;
    out[0] = 0;
    for (int i = 0; i < count; i++)
        snprintf(out + strlen(out), n - strlen(out), "%s%s", i == 0 ? "" : i == count - 1 ? " or " : ", ", names[i]);
    return out;
}

int mlm_env_choice(const char *name, const char *const *choices) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    for (int i = 0; choices[i]; i++)
        if (!strcmp(v, choices[i])) return i;
    char list[256];
    mlm_die(MLM_EXIT_INPUT, "%s=%s: expected %s", name, v, mlm_choices_text(choices, list, sizeof list));
}

void *mlm_xmalloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) mlm_die(MLM_EXIT_RUNTIME, "out of host memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *mlm_xcalloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) mlm_die(MLM_EXIT_RUNTIME, "out of host memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

int mlm_fail(char *err, size_t err_len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && err_len) vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -1;
}

double mlm_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
