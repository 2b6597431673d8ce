/*
 * The mlmgpu command line: `mlmgpu COMMAND [options]`, one file per command in this
 * folder (cmd_*.c, declared in include/mlm/cli.h), each with its own --help, and
 * what they share: the usage error, the backend choice, number arguments. Bad
 * arguments exit with code 2 and a message naming the argument.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/backend.h"
#include "mlm/backend_cuda.h"
#include "mlm/cli.h"
#include "mlm/config.h"
#include "mlm/dist.h"
#include "mlm/log.h"

static const char *USAGE =
    "usage: mlmgpu COMMAND [options]\n"
    "\n"
    "Pretrains BERT-style encoders with the masked-language-model objective.\n"
    "\n"
    "commands:\n"
    "  train     train a model from a config file\n"
    "  tokenize  text on stdin to WordPiece token ids\n"
    "  vocab     train a WordPiece vocabulary on text files\n"
    "  prepare   tokenize text into training shards\n"
    "  eval      masked-LM loss, accuracy and perplexity of a model on shards\n"
    "  fill-mask the most likely tokens for each [MASK] of a text\n"
    "  plot      draw RUN_DIR/loss.svg (loss, learning rate) from its metrics.jsonl\n"

    "\n"
    "  mlmgpu COMMAND --help   options of a command\n"
    "  mlmgpu --version        print the version\n";

_Noreturn void mlm_usage_error(const char *usage, const char *fmt, const char *arg) {
    fprintf(stderr, "mlmgpu: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", usage);
    exit(MLM_EXIT_INPUT);
}

long mlm_cli_int(const char *usage, const char *opt, const char *value, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < lo || v > hi) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s '%%s': expected a whole number from %ld to %ld", opt, lo, hi);
        mlm_usage_error(usage, msg, value);
    }
    return v;
}

mlm_backend *mlm_choose_backend(const char *device, int threads) {
    char why[512] = "this build of mlmgpu has no CUDA backend (configure with -Dcuda=enabled)";
    mlm_backend *be = NULL;
#ifdef MLM_HAVE_CUDA
    if (strcmp(device, "cpu") != 0) be = mlm_backend_cuda(mlm_dist_local_rank(), why, sizeof why);
#endif
    if (!be && strcmp(device, "cuda") == 0) mlm_die(MLM_EXIT_INPUT, "--device cuda: %s", why);
    int quiet = mlm_dist_rank() != 0;   // rank 0 speaks for the job
    if (!be && strcmp(device, "auto") == 0 && !quiet) mlm_log("device: auto: no usable GPU (%s); using the CPU", why);
    if (!be) be = mlm_backend_cpu(threads);
    char cpu[256];
    if (!quiet && !strcmp(be->name, "cpu"))
        mlm_log("device: cpu, %s", mlm_cpu_describe(cpu, sizeof cpu));
    else if (!quiet)
        mlm_log("device: %s", be->name);
    return be;
}

int main(int argc, char **argv) {
    mlm_cpu_blas_reexec(argv);   // OpenBLAS's AVX2/AVX-512 kernels where it misread the CPU
    // every command: a file-size limit is then a write error that names the file (the
    // writers check every write and leave nothing half-written), not a silent kill
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        fputs(USAGE, stderr);
        return MLM_EXIT_INPUT;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("mlmgpu %s\n", MLM_VERSION);
        return 0;
    }
    static const struct { const char *name; int (*run)(int, char **); } cmds[] = {
        {"train", mlm_cmd_train},
        {"tokenize", mlm_cmd_tokenize},
        {"vocab", mlm_cmd_vocab},
        {"prepare", mlm_cmd_prepare},
        {"eval", mlm_cmd_eval},
        {"fill-mask", mlm_cmd_fill_mask},
        {"plot", mlm_cmd_plot},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmd, cmds[i].name)) return cmds[i].run(argc - 2, argv + 2);
    fprintf(stderr, "mlmgpu: error: unknown command '%s'\n\n%s", cmd, USAGE);
    return MLM_EXIT_INPUT;
}
