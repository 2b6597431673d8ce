/*
 * `mlmgpu tokenize`: text on stdin to token ids (or pieces) on stdout, one output
 * line per input line, with the ids HF gives: BertTokenizerFast for a WordPiece
 * vocab.txt, RobertaTokenizerFast for a byte-level BPE vocab.json + merges.txt.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlm/cli.h"
#include "mlm/log.h"
#include "mlm/tokenizer.h"

static const char *TOKENIZE_USAGE =
    "usage: mlmgpu tokenize --vocab PATH [--cased] [--no-special] [--tokens]\n"
    "\n"
    "Reads UTF-8 text on stdin and prints one line per input line: its token ids,\n"
    "separated by spaces, between [CLS] and [SEP] (<s> and </s> for byte-level BPE).\n"
    "Invalid UTF-8 bytes are dropped by WordPiece; byte-level BPE reads each ill-formed\n"
    "sequence as U+FFFD, as Python's decode(errors=\"replace\") does.\n"
    "\n"
    "  --vocab PATH   the vocabulary: a vocab.txt (WordPiece, one token per line, id =\n"
    "                 line number), a vocab.json with merges.txt beside it (byte-level\n"
    "                 BPE, RoBERTa's), or a directory holding one of them\n"
    "  --cased        WordPiece only (an error with BPE, which never changes the text):\n"
    "                 keep case and accents (default: lowercase and strip accents, as\n"
    "                 bert-base-uncased does)\n"
    "  --no-special   leave out [CLS] and [SEP] (<s> and </s>)\n"
    "  --tokens       print the tokens instead of their ids (byte-level BPE tokens as\n"
    "                 in vocab.json: a space is \"\u0120\", a newline \"\u010A\")\n";

typedef struct {
    const char *vocab;
    int cased, special, tokens;
} tokenize_args;

static tokenize_args parse_args(int argc, char **argv) {
    tokenize_args a = {NULL, 0, 1, 0};
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            fputs(TOKENIZE_USAGE, stdout);
            exit(0);
        }
        if (!strcmp(s, "--vocab")) {
            if (i + 1 == argc) mlm_usage_error(TOKENIZE_USAGE, "%s needs a value", s);
            a.vocab = argv[++i];
        } else if (!strcmp(s, "--cased")) a.cased = 1;
        else if (!strcmp(s, "--no-special")) a.special = 0;
        else if (!strcmp(s, "--tokens")) a.tokens = 1;
        else mlm_usage_error(TOKENIZE_USAGE, "unknown argument '%s'", s);
    }
    if (!a.vocab) mlm_usage_error(TOKENIZE_USAGE, "%s", "--vocab FILE is required");
    return a;
}

/* Prints ids (or their tokens) as one line. Ids go through a small formatter
 * because printf per id would dominate the run time. */
static void print_line(const mlm_tokenizer *t, const int32_t *ids, size_t n, int tokens) {
    for (size_t i = 0; i < n; i++) {
        if (i) putchar(' ');
        if (tokens) {
            fputs(mlm_tokenizer_token(t, ids[i]), stdout);
            continue;
        }
        char buf[12], *p = buf + sizeof buf;
        uint32_t x = (uint32_t)ids[i];
        do *--p = (char)('0' + x % 10);
        while (x /= 10);
        fwrite(p, 1, (size_t)(buf + sizeof buf - p), stdout);
    }
    putchar('\n');
}

static void tokenize_stream(const mlm_tokenizer *t, const tokenize_args *a) {
    char *line = NULL;
    size_t line_cap = 0, cap = 0;
    int32_t *ids = NULL;
    for (ssize_t len; (len = getline(&line, &line_cap, stdin)) >= 0;) {
        if (len && line[len - 1] == '\n') len--;
        size_t n = 0;
        if (a->special) mlm_encode(t, line, (size_t)len, &ids, &n, &cap);
        else mlm_tokenize(t, line, (size_t)len, &ids, &n, &cap);
        print_line(t, ids, n, a->tokens);
    }
    // getline's -1 is end of input or an error: stdin a directory (EISDIR) or
    // unreadable must not look like empty input
    if (ferror(stdin)) mlm_die(MLM_EXIT_INPUT, "reading stdin failed: %s", strerror(errno));
    free(line);
    free(ids);
}

int mlm_cmd_tokenize(int argc, char **argv) {
    tokenize_args a = parse_args(argc, argv);
    char err[1024];
    mlm_tokenizer *t = mlm_tokenizer_open(a.vocab, a.cased, err, sizeof err);
    if (!t) mlm_die(MLM_EXIT_INPUT, "%s", err);
    if (a.cased && mlm_tokenizer_kind(t) == MLM_TOK_BPE)
        mlm_die(MLM_EXIT_INPUT, "%s: --cased applies to WordPiece vocabularies only (byte-level BPE keeps the text as is)",
                a.vocab);
    struct stat st;
    if (fstat(STDIN_FILENO, &st) == 0 && S_ISDIR(st.st_mode))   // checked before any work
        mlm_die(MLM_EXIT_INPUT, "%s", "stdin is a directory: give text on stdin (mlmgpu tokenize --vocab V < file.txt)");
    tokenize_stream(t, &a);
    mlm_tokenizer_free(t);
    if (fflush(stdout) != 0 || ferror(stdout)) mlm_die(MLM_EXIT_RUNTIME, "writing to stdout failed");
    return 0;
}
