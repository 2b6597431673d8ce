/*
 * `mlmgpu plot RUN_DIR`: draws RUN_DIR/loss.svg from RUN_DIR/metrics.jsonl
 * (include/mlm/plot.h), for any run, finished, stopped, resumed or still going.
 * The trainer draws the same picture at the end of a run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/cli.h"
#include "mlm/log.h"
#include "mlm/plot.h"

static const char *PLOT_USAGE =
    "usage: mlmgpu plot RUN_DIR\n"
    "\n"
    "Draws RUN_DIR/loss.svg from RUN_DIR/metrics.jsonl: the train and validation loss over the steps\n"
    "(log scale) and the learning rate, as an SVG picture any browser shows.\n";

int mlm_cmd_plot(int argc, char **argv) {
    const char *dir = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(PLOT_USAGE, stdout);
            return 0;
        }
        if (argv[i][0] == '-' || dir) mlm_usage_error(PLOT_USAGE, "unexpected argument '%s'", argv[i]);
        dir = argv[i];
    }
    if (!dir) mlm_usage_error(PLOT_USAGE, "%s", "RUN_DIR is required");
    char err[4096];
    mlm_plot_counts c;
    int rc = mlm_plot_run(dir, &c, err, sizeof err);
    if (rc != 0) mlm_die(rc, "%s", err);
    mlm_log("%s/loss.svg: %d train and %d validation points, up to step %d", dir, c.train, c.val, c.last_step);
    return 0;
}
