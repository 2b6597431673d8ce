/*
 * The mlmgpu command line: `mlmgpu COMMAND [options]`, one function per command,
 * each with its own --help. Bad arguments exit with code 2 and a message naming
 * the argument.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/backend.h"
#include "mlm/backend_cuda.h"
#include "mlm/cli.h"
#include "mlm/config.h"
#include "mlm/dist.h"
#include "mlm/log.h"
#include "mlm/train.h"

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

    "\n"
    "  mlmgpu COMMAND --help   options of a command\n"
    "  mlmgpu --version        print the version\n";

static const char *TRAIN_USAGE =
    "usage: mlmgpu train --config FILE [--set section.key=value ...] [--device auto|cpu|cuda]\n"
    "                    [--resume auto|DIR]\n"
    "\n"
    "Trains the model described by FILE (an INI file; see configs/ and README.md).\n"
    "\n"
    "  --config FILE            the run configuration\n"
    "  --set section.key=value  override one config key (repeatable, applied in order)\n"
    "  --device auto|cpu|cuda   where to train (default auto: a usable GPU, else the CPU)\n"
    "  --resume auto|DIR        continue from a checkpoint: auto = the latest in\n"
    "                           train.out_dir/checkpoints, if any\n"
    "\n"
    "Logs go to stderr; the resolved config, metrics.jsonl and checkpoints/ go to\n"
    "train.out_dir. SIGINT or SIGTERM: the step finishes, a checkpoint is written, exit 0.\n"
    "\n"
    "Data parallel on several GPUs or nodes: mpirun -np N [--hostfile H] mlmgpu train ...\n"
    "(rank r uses GPU = its rank on the node; see docs/SCALING.md).\n";

_Noreturn void mlm_usage_error(const char *usage, const char *fmt, const char *arg) {
    fprintf(stderr, "mlmgpu: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", usage);
    exit(MLM_EXIT_INPUT);
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
    if (!quiet) mlm_log("device: %s", be->name);
    return be;
}

int mlm_cmd_train(int argc, char **argv) {
    const char *config = NULL, *device = "auto", *resume = NULL;
    const char **sets = mlm_xcalloc(argc, sizeof(char *), "arguments");
    int nsets = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(TRAIN_USAGE, stdout);
            free(sets);
            return 0;
        }
        int has_value = i + 1 < argc;
        if (strcmp(a, "--config") == 0 && has_value) config = argv[++i];
        else if (strcmp(a, "--set") == 0 && has_value) sets[nsets++] = argv[++i];
        else if (strcmp(a, "--device") == 0 && has_value) device = argv[++i];
        else if (strcmp(a, "--resume") == 0 && has_value) resume = argv[++i];
        else if (!strcmp(a, "--config") || !strcmp(a, "--set") || !strcmp(a, "--device") || !strcmp(a, "--resume"))
            mlm_usage_error(TRAIN_USAGE, "%s needs a value", a);
        else mlm_usage_error(TRAIN_USAGE, "unknown argument '%s'", a);
    }
    if (!config) mlm_usage_error(TRAIN_USAGE, "%s", "--config FILE is required");
    if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda"))
        mlm_usage_error(TRAIN_USAGE, "--device '%s': expected auto, cpu or cuda", device);
    mlm_config cfg;
    char err[2048];
    if (mlm_config_load(&cfg, config, sets, nsets, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        free(sets);
        return MLM_EXIT_INPUT;
    }
    free(sets);
    mlm_dist_init(NULL, NULL);
    mlm_backend *be = mlm_choose_backend(device, mlm_dist_cpu_threads(cfg.train.threads));
    if (mlm_dist_rank() == 0) {
        printf("# resolved configuration\n");
        mlm_config_write(&cfg, stdout);
        fflush(stdout);
    }
    int rc = mlm_train(&cfg, be, resume);
    be->destroy(be);
    mlm_dist_finalize();
    return rc;
}

int main(int argc, char **argv) {
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
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmd, cmds[i].name)) return cmds[i].run(argc - 2, argv + 2);
    fprintf(stderr, "mlmgpu: error: unknown command '%s'\n\n%s", cmd, USAGE);
    return MLM_EXIT_INPUT;
}
