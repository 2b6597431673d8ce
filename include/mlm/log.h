/*
 * Logging and fatal errors. Every error message names the culprit and where it
 * is; fatal paths exit with a non-zero code instead of crashing.
 *
 * Exit codes: 2 = bad input (config, file, argument), 1 = runtime failure.
 */
#ifndef MLM_LOG_H
#define MLM_LOG_H

#include <stddef.h>

enum { MLM_EXIT_RUNTIME = 1, MLM_EXIT_INPUT = 2 };

/* printf to stderr with a "mlmgpu: " prefix and a newline. */
void mlm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* prints like mlm_log with "error: " and exits with code. */
_Noreturn void mlm_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Formats a one-line error message into err (err_len bytes) and returns -1, for
 * functions that report `where: what is wrong` to their caller. */
int mlm_fail(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The NULL-terminated names as "a, b or c" into out (n bytes); returns out. */
const char *mlm_choices_text(const char *const *names, char *out, size_t n);

/* An environment switch (MLM_CUDA_GRAPHS, MLM_FLASH_BWD, MLM_BIAS_GRAD, ...): the
 * index in choices (NULL-terminated) of variable name's value, 0 (the default) when
 * it is unset or empty; any other value dies with MLM_EXIT_INPUT, naming the
 * variable, its value and the choices. */
int mlm_env_choice(const char *name, const char *const *choices);

/* Seconds on the monotonic clock, for durations and deadlines. */
double mlm_now_s(void);

/* malloc/calloc that die with a message naming what did not fit. */
void *mlm_xmalloc(size_t bytes, const char *what);
void *mlm_xcalloc(size_t count, size_t size, const char *what);

#endif
