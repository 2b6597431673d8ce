/*
 * Helpers shared by the test suites: a private temporary directory per test,
 * files written into it, and the mlmgpu binary run inside it with its output
 * captured.
 */
#ifndef MLM_TESTS_COMMON_H
#define MLM_TESTS_COMMON_H

#include <stddef.h>

#define SAMPLE MLM_SOURCE_ROOT "/data/sample"

extern char tmpdir[64];
void make_tmpdir(void);   // a TestSuite .init
void rm_tmpdir(void);     // a TestSuite .fini

/* Writes text to tmpdir/name. */
void write_file(const char *name, const char *text);
/* tmpdir/name into out. */
void tmp_path(char *out, size_t n, const char *name);
/* Runs `env mlmgpu ARGS` in tmpdir (env may be ""), stdout+stderr into out;
 * returns the exit code, or 128 + signal when killed. */
int run_mlmgpu(const char *env, const char *args, char *out, size_t n);
/* The "loss" of the lines of tmpdir/run/metrics.jsonl whose split is split
 * ("train" or "val"), in order, into loss (at most max); returns how many. */
int read_metric_losses(const char *run, const char *split, double *loss, int max);
/* Runs a shell command, stdout+stderr into out; exit code as run_mlmgpu's. */
int run_shell(const char *cmd, char *out, size_t n);

#endif
