/*
 * `mlmgpu vocab`: trains a WordPiece vocabulary on text files and writes
 * vocab.txt, or a byte-level BPE one (--type bpe) and writes vocab.json and
 * merges.txt (include/mlm/vocab_trainer.h has how).
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlm/cli.h"
#include "mlm/fileio.h"
#include "mlm/log.h"
#include "mlm/vocab_trainer.h"

static const char *VOCAB_USAGE =
    "usage: mlmgpu vocab --input PATH... --vocab-size N --out FILE [--cased]\n"
    "                    [--min-frequency F] [--limit-alphabet A] [--threads T]\n"
    "       mlmgpu vocab --type bpe --input PATH... --vocab-size N --out DIR\n"
    "                    [--min-frequency F] [--threads T]\n"
    "\n"
    "Trains a WordPiece vocabulary the way HF's BertWordPieceTokenizer.train does and\n"
    "writes it as FILE (one token per line; [PAD] [UNK] [CLS] [SEP] [MASK] first).\n"
    "With --type bpe, trains a byte-level BPE vocabulary the way HF's\n"
    "ByteLevelBPETokenizer.train does with special tokens <s> <pad> </s> <unk> <mask>\n"
    "(RoBERTa's) and writes DIR/vocab.json and DIR/merges.txt, byte for byte as its\n"
    "save_model does.\n"
    "\n"
    "  --type T            wordpiece (default) or bpe\n"
    "  --input PATH...     text files, or directories read recursively (repeatable)\n"
    "  --vocab-size N      tokens in the vocabulary, special tokens included\n"
    "  --out FILE|DIR      where to write it (atomically)\n"
    "  --cased             wordpiece: keep case and accents (default: lowercase and\n"
    "                      strip accents, as the uncased tokenizer does)\n"
    "  --min-frequency F   never merge a pair seen fewer than F times (default 2)\n"
    "  --limit-alphabet A  wordpiece: keep only the A most frequent characters\n"
    "                      (default: all)\n"
    "  --threads T         threads counting words (default: all CPUs)\n"
    "\n"
    "Progress goes to stderr. The result depends only on the text and the options.\n";

typedef struct {
    const char **inputs;
    int ninputs;
    const char *out;
    mlm_vocab_train_opts o;
} vocab_args;

/* The value after the option at argv[*i], or a usage error when there is none. */
static const char *option_value(int argc, char **argv, int *i) {
    if (*i + 1 == argc || !strncmp(argv[*i + 1], "--", 2)) mlm_usage_error(VOCAB_USAGE, "%s needs a value", argv[*i]);
    return argv[++*i];
}

/* One option at argv[*i]; --input takes every value up to the next option. */
static void parse_option(vocab_args *a, int argc, char **argv, int *i) {
    const char *s = argv[*i];
    if (!strcmp(s, "--type")) {
        const char *t = option_value(argc, argv, i);
        if (!strcmp(t, "wordpiece")) a->o.type = MLM_VOCAB_WORDPIECE;
        else if (!strcmp(t, "bpe")) a->o.type = MLM_VOCAB_BPE;
        else mlm_usage_error(VOCAB_USAGE, "--type '%s': expected wordpiece or bpe", t);
    } else if (!strcmp(s, "--input")) {
        a->inputs[a->ninputs++] = option_value(argc, argv, i);
        while (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2)) a->inputs[a->ninputs++] = argv[++*i];
    } else if (!strcmp(s, "--vocab-size")) {
        a->o.vocab_size = (int)mlm_cli_int(VOCAB_USAGE, s, option_value(argc, argv, i), 1, INT_MAX / 2);
    } else if (!strcmp(s, "--out")) {
        a->out = option_value(argc, argv, i);
    } else if (!strcmp(s, "--cased")) {
        a->o.cased = 1;
    } else if (!strcmp(s, "--min-frequency")) {
        a->o.min_frequency = (uint64_t)mlm_cli_int(VOCAB_USAGE, s, option_value(argc, argv, i), 0, LONG_MAX);
    } else if (!strcmp(s, "--limit-alphabet")) {
        a->o.limit_alphabet = (int)mlm_cli_int(VOCAB_USAGE, s, option_value(argc, argv, i), 1, INT_MAX);
    } else if (!strcmp(s, "--threads")) {
        a->o.threads = (int)mlm_cli_int(VOCAB_USAGE, s, option_value(argc, argv, i), 1, 1024);
    } else {
        mlm_usage_error(VOCAB_USAGE, "unknown argument '%s'", s);
    }
}

static vocab_args parse_args(int argc, char **argv) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    vocab_args a = {.inputs = mlm_xcalloc((size_t)argc + 1, sizeof(char *), "arguments")};
    a.o = (mlm_vocab_train_opts){.min_frequency = 2, .threads = cpus > 0 ? (int)cpus : 1, .progress = 1};
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(VOCAB_USAGE, stdout);
            exit(0);
        }
        parse_option(&a, argc, argv, &i);
    }
    if (!a.ninputs) mlm_usage_error(VOCAB_USAGE, "%s", "--input PATH is required");
    if (!a.o.vocab_size) mlm_usage_error(VOCAB_USAGE, "%s", "--vocab-size N is required");
    if (!a.out) mlm_usage_error(VOCAB_USAGE, "%s", "--out FILE is required");
    if (a.o.type == MLM_VOCAB_BPE && a.o.cased)
        mlm_usage_error(VOCAB_USAGE, "%s", "--cased applies to --type wordpiece only (BPE keeps the text as it is)");
    if (a.o.type == MLM_VOCAB_BPE && a.o.limit_alphabet)
        mlm_usage_error(VOCAB_USAGE, "%s", "--limit-alphabet applies to --type wordpiece only (BPE's alphabet is "
                                           "the 256 bytes)");
    return a;
}

/* Fails before the training, not after it, when --out cannot be written: its
 * directory, or for BPE the existing directory --out itself. */
static void check_out_dir(const char *out, mlm_vocab_type type) {
    struct stat st;
    if (type == MLM_VOCAB_BPE && stat(out, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) mlm_die(MLM_EXIT_INPUT, "--out %s: not a directory", out);
        if (access(out, W_OK) != 0) mlm_die(MLM_EXIT_INPUT, "--out %s: cannot write in it: %s", out, strerror(errno));
        return;
    }
    char *copy = strdup(out), *dir = dirname(copy);
    if (access(dir, W_OK) != 0)
        mlm_die(MLM_EXIT_INPUT, "--out %s: cannot write in %s: %s", out, dir, strerror(errno));
    free(copy);
    char err[4096], *target;   // a FIFO, device or directory there is refused now, not after training
    if (type != MLM_VOCAB_BPE && mlm_output_target(out, &target, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "--out %s", err);
    if (type != MLM_VOCAB_BPE) free(target);
}

int mlm_cmd_vocab(int argc, char **argv) {
    vocab_args a = parse_args(argc, argv);
    check_out_dir(a.out, a.o.type);
    mlm_trained_vocab v;
    char err[2048];
    if (mlm_vocab_train(a.inputs, a.ninputs, &a.o, &v, err, sizeof err) != 0) {
        free(a.inputs);
        mlm_die(MLM_EXIT_INPUT, "%s", err);
    }
    mlm_log("vocab: %llu words (%llu distinct), alphabet %d characters + %d continuations, %d merges",
            (unsigned long long)v.words, (unsigned long long)v.distinct_words, v.alphabet, v.continuations,
            v.merges);
    int bpe = a.o.type == MLM_VOCAB_BPE;
    int rc = bpe ? mlm_vocab_write_bpe(&v, a.out, err, sizeof err) : mlm_vocab_write(&v, a.out, err, sizeof err);
    if (rc == 0 && bpe) mlm_log("vocab: wrote %d tokens and %d merges to %s/vocab.json and merges.txt", v.count,
                                v.merges, a.out);
    else if (rc == 0) mlm_log("vocab: wrote %d tokens to %s", v.count, a.out);
    mlm_trained_vocab_free(&v);
    free(a.inputs);
    if (rc != 0) mlm_die(MLM_EXIT_RUNTIME, "%s", err);
    return 0;
}
