/*
 * `mlmgpu train`: reads the run configuration, chooses the device, joins the MPI job
 * when launched by mpirun, and runs the training loop (src/host/train/trainer.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/cli.h"
#include "mlm/config.h"
#include "mlm/dist.h"
#include "mlm/log.h"
#include "mlm/train.h"

static const char *TRAIN_USAGE =
    "usage: mlmgpu train --config FILE [--set section.key=value ...] [--device auto|cpu|cuda]\n"
    "                    [--resume auto|DIR | --overwrite]\n"
    "\n"
    "Trains the model described by FILE (an INI file; see configs/ and README.md).\n"
    "\n"
    "  --config FILE            the run configuration\n"
    "  --set section.key=value  override one config key (repeatable, applied in order)\n"
    "  --device auto|cpu|cuda   where to train (default auto: a usable GPU, else the CPU)\n"
    "  --resume auto|DIR        continue from a checkpoint: auto = the latest in\n"
    "                           train.out_dir/checkpoints (none there: a fresh start)\n"
    "  --overwrite              start over in a train.out_dir that holds a run, deleting\n"
    "                           its checkpoints and metrics (without it, that is refused)\n"
    "\n"
    "Logs go to stderr; the resolved config, metrics.jsonl and checkpoints/ go to\n"
    "train.out_dir, which one trainer at a time may use (a lock, out_dir/.lock).\n"
    "Exit codes: 0 finished, 1 runtime error, 2 bad input; SIGINT or SIGTERM: the step\n"
    "finishes, a checkpoint is written, exit 130 (SIGINT) or 143 (SIGTERM); a second\n"
    "signal ends it at once.\n"
    "\n"
    "Data parallel on several GPUs or nodes: mpirun -np N [--hostfile H] mlmgpu train ...\n"
    "(rank r uses GPU = its rank on the node; see docs/SCALING.md).\n";

int mlm_cmd_train(int argc, char **argv) {
    const char *config = NULL, *device = "auto", *resume = NULL;
    const char **sets = mlm_xcalloc(argc, sizeof(char *), "arguments");
    int nsets = 0, device_given = 0, overwrite = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(TRAIN_USAGE, stdout);
            free(sets);
            return 0;
        }
        int has_value = i + 1 < argc;
        // one value each: a second --config (or --device, --resume) would silently win
        const char **once = !strcmp(a, "--config") ? &config : !strcmp(a, "--device") ? &device
                          : !strcmp(a, "--resume") ? &resume : NULL;
        if (once && has_value) {
            if (*once && (once != &device || device_given)) {
                char what[2 * MLM_PATH_MAX];
                snprintf(what, sizeof what, "%s given twice ('%s', then '%s')", a, *once, argv[i + 1]);
                mlm_usage_error(TRAIN_USAGE, "%s", what);
            }
            device_given |= once == &device;
            *once = argv[++i];
        } else if (strcmp(a, "--set") == 0 && has_value) sets[nsets++] = argv[++i];
        else if (strcmp(a, "--overwrite") == 0) overwrite = 1;
        else if (!strcmp(a, "--config") || !strcmp(a, "--set") || !strcmp(a, "--device") || !strcmp(a, "--resume"))
            mlm_usage_error(TRAIN_USAGE, "%s needs a value", a);
        else mlm_usage_error(TRAIN_USAGE, "unknown argument '%s'", a);
    }
    if (!config) mlm_usage_error(TRAIN_USAGE, "%s", "--config FILE is required");
    if (overwrite && resume) mlm_usage_error(TRAIN_USAGE, "%s", "--overwrite and --resume exclude each other");
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
    int rc = mlm_train(&cfg, be, resume, overwrite);
    be->destroy(be);
    mlm_dist_finalize();
    return rc;
}
