/*
 * `mlmgpu prepare`: text files to token shards (include/mlm/prepare.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlm/cli.h"
#include "mlm/log.h"
#include "mlm/prepare.h"

static const char *PREPARE_USAGE =
    "usage: mlmgpu prepare --input PATH... --vocab PATH --seq-len N --out DIR [--val-fraction F]\n"
    "                      [--threads T] [--cased] [--file-documents] [--shard-sequences K] [--force]\n"
    "\n"
    "Tokenizes text files (directories are read recursively, in name order) and packs\n"
    "them into shards of N-token sequences: OUT/train/*.shard, OUT/val/*.shard, the\n"
    "vocabulary (OUT/vocab.txt, or OUT/vocab.json + OUT/merges.txt) and OUT/manifest.json\n"
    "(docs/FORMATS.md).\n"
    "\n"
    "  --input PATH...       text files or directories (UTF-8)\n"
    "  --vocab PATH          the vocabulary: a vocab.txt (WordPiece, BERT), a vocab.json with\n"
    "                        merges.txt beside it (byte-level BPE, RoBERTa), or a directory\n"
    "                        holding either (the files tell which)\n"
    "  --seq-len N           tokens per sequence, [CLS] and [SEP] (<s> and </s>) included\n"
    "  --out DIR             the output directory\n"
    "  --val-fraction F      share of documents for validation (default 0.01)\n"
    "  --threads T           tokenizer threads (default: all cores)\n"
    "  --cased               keep case and accents (for a cased WordPiece vocabulary; BPE\n"
    "                        always keeps the text as is)\n"
    "  --file-documents      a document is a whole file (default: a block of lines between\n"
    "                        blank lines, as in BERT's pretraining data; --paragraphs, the\n"
    "                        old name of that default, is still accepted and changes nothing)\n"
    "  --shard-sequences K   sequences per shard file (default 65536)\n"
    "  --force               replace the prepared data already in DIR\n";

int mlm_cmd_prepare(int argc, char **argv) {
    const char **inputs = mlm_xcalloc(argc + 1, sizeof(char *), "arguments");
    mlm_prepare_opts o = {.inputs = inputs, .val_fraction = 0.01, .shard_sequences = 65536,
                          .progress = isatty(STDERR_FILENO),   // a live line on a terminal, not in logs
                          .threads = (int)sysconf(_SC_NPROCESSORS_ONLN)};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(PREPARE_USAGE, stdout);
            free(inputs);
            return 0;
        }
        // flags take no value: the next argument is not skipped
        int ignored = 0;   // --paragraphs: what used to be asked for is now the default
        int *flag = !strcmp(a, "--cased") ? &o.cased : !strcmp(a, "--file-documents") ? &o.file_documents
                  : !strcmp(a, "--paragraphs") ? &ignored : !strcmp(a, "--force") ? &o.force : NULL;
        if (flag) {
            *flag = 1;
            continue;
        }
        if (!v || !strncmp(v, "--", 2)) mlm_usage_error(PREPARE_USAGE, "%s needs a value", a);
        else if (!strcmp(a, "--input")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) inputs[o.ninputs++] = argv[++i];
            continue;
        } else if (!strcmp(a, "--vocab")) o.vocab = v;
        else if (!strcmp(a, "--out")) o.out = v;
        else if (!strcmp(a, "--seq-len")) o.seq_len = (int)mlm_cli_int(PREPARE_USAGE, a, v, 3, 1 << 20);
        else if (!strcmp(a, "--threads")) o.threads = (int)mlm_cli_int(PREPARE_USAGE, a, v, 1, 1024);
        else if (!strcmp(a, "--shard-sequences")) o.shard_sequences = (uint64_t)mlm_cli_int(PREPARE_USAGE, a, v, 1, 1L << 30);
        else if (!strcmp(a, "--val-fraction")) {
            char *end;
            o.val_fraction = strtod(v, &end);
            if (*end || !(o.val_fraction >= 0 && o.val_fraction < 1))
                mlm_usage_error(PREPARE_USAGE, "--val-fraction '%s': expected a number in [0, 1)", v);
        } else mlm_usage_error(PREPARE_USAGE, "unknown option '%s'", a);
        i++;
    }
    if (!o.ninputs) mlm_usage_error(PREPARE_USAGE, "%s", "--input PATH is required");
    if (!o.vocab) mlm_usage_error(PREPARE_USAGE, "%s", "--vocab PATH is required");
    if (!o.seq_len) mlm_usage_error(PREPARE_USAGE, "%s", "--seq-len N is required");
    if (!o.out) mlm_usage_error(PREPARE_USAGE, "%s", "--out DIR is required");
    mlm_prepare_stats st;
    char err[2048];
    int rc = mlm_prepare(&o, &st, err, sizeof err);
    free(inputs);
    if (rc != 0) {
        fprintf(stderr, "mlmgpu: error: %s\n", err);
        return MLM_EXIT_INPUT;
    }
    printf("prepare: %d files, %.1f MB in %.1f s (%.1f MB/s)\n", st.files, st.bytes / 1e6, st.seconds,
           st.seconds > 0 ? st.bytes / 1e6 / st.seconds : 0.0);
    printf("  train: %llu documents, %llu tokens, %llu sequences in %d shard(s)\n", (unsigned long long)st.train.docs,
           (unsigned long long)st.train.tokens, (unsigned long long)st.train.sequences, st.train.shards);
    printf("  val:   %llu documents, %llu tokens, %llu sequences in %d shard(s)\n", (unsigned long long)st.val.docs,
           (unsigned long long)st.val.tokens, (unsigned long long)st.val.sequences, st.val.shards);
    return 0;
}
