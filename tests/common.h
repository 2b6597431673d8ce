/*
 * Helpers shared by the test suites: a private temporary directory per test,
 * files written into it, and the mlmgpu binary run inside it with its output
 * captured.
 */
#ifndef MLM_TESTS_COMMON_H
#define MLM_TESTS_COMMON_H

#include <stddef.h>
#include <stdint.h>

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
/* Runs a shell command, stdout+stderr into out; exit code as run_mlmgpu's. Output
 * longer than out keeps its beginning and its end, a line between them saying how
 * much was left out. */
int run_shell(const char *cmd, char *out, size_t n);
/* A tiny RoBERTa on tests/fixtures/roberta_bpe's 300 tokens, its data in tmpdir/rdata
 * (prepare_roberta_data): the [model] and [data] sections; a suite adds [train]. */
#define ROBERTA_TINY_MODEL_AND_DATA                                                                        \
    "[model]\narchitecture = roberta\nvocab_size = 300\nhidden_size = 32\nnum_layers = 2\nnum_heads = 2\n"     \
    "intermediate_size = 64\nmax_position = 66\ntype_vocab_size = 1\nlayer_norm_eps = 1e-5\n"                  \
    "[data]\ntrain = rdata/train\nval = rdata/val\nvocab = rdata/vocab.json\nseq_len = 64\n"
/* Prepares tests/fixtures/vocab_corpus with that vocabulary into tmpdir/rdata (64-token
 * sequences, a tenth for validation); fails the test when prepare does. */
void prepare_roberta_data(void);

/* Parses the blank-separated (space, tab, line break) decimal ids of s[0..n) into ids (at most max: more fail
 * the test), stopping at anything else; returns how many. */
size_t parse_ids(const char *s, size_t n, int32_t *ids, size_t max);
/* Expects got == want, naming the first difference (what, line: the case). */
void expect_ids(const int32_t *got, size_t ngot, const int32_t *want, size_t nwant, const char *what, int line);

/* The file at path whole, NUL-terminated (free it), its length into *n unless n is
 * NULL; the test fails when it cannot be read. */
char *read_path(const char *path, size_t *n);
/* read_path of tmpdir/name. */
char *read_tmp(const char *name, size_t *n);
/* The bytes of the hex digits s[0..n) (pairs; an odd last digit is ignored) into
 * out; returns how many. */
size_t unhex(const char *s, size_t n, char *out);
/* Whether tmpdir/a and tmpdir/b hold the same bytes. */
int same_tmp_files(const char *a, const char *b);
/* Largest |a - b| over largest |a| per tensor of two fp32 safetensors files in
 * tmpdir, the worst tensor's name into worst. The denominator is at least 1e-3: the
 * key bias has a gradient of exactly zero in exact arithmetic (softmax ignores a
 * shift of all of a query's scores), so it holds only rounding noise of about 1e-10
 * that no relative measure can match. */
double max_rel_diff(const char *a, const char *b, char *worst, size_t n);

#endif
