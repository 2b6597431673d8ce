/*
 * A picture of a run (src/host/train/plot.c): RUN_DIR/loss.svg drawn from
 * RUN_DIR/metrics.jsonl, with the train and validation loss over the steps on a
 * log axis and the learning rate in a panel below. Plain SVG 1.1 (no scripts, no
 * fonts beyond the generic sans-serif) that any browser shows. The trainer writes
 * it at the end of a run and after a signal's checkpoint; `mlmgpu plot RUN_DIR`
 * on demand. docs/FORMATS.md, "loss.svg", describes what it holds.
 */
#ifndef MLM_PLOT_H
#define MLM_PLOT_H

#include <stddef.h>

/* What the picture shows: the points of each line, in step order. */
typedef struct {
    int train, val, lr;   // points of the train loss, validation loss and learning-rate lines
    int last_step;        // the highest step (0: none)
} mlm_plot_counts;

/* Reads metrics (a metrics.jsonl) and builds the SVG into a malloc'd *svg of *len
 * bytes, titled title. A line whose step is not after the one before it of its
 * split (a run resumed from a checkpoint older than its last line) replaces the
 * points from that step on, as TensorBoard shows it. Lines of other splits are
 * ignored; a validation line with "loss":null (nothing to score) has no point, and
 * neither has a loss that is not positive (no place on a log axis). Returns 0, or
 * -1 with `metrics.jsonl:LINE: what is wrong` (a missing file, a line that is not
 * a JSON object with the fields of its split). counts may be NULL. */
int mlm_plot_svg(const char *metrics, const char *title, char **svg, size_t *len, mlm_plot_counts *counts,
                 char *err, size_t err_len);

/* dir/metrics.jsonl to dir/loss.svg, written atomically. Returns 0, or
 * MLM_EXIT_INPUT (log.h) when metrics.jsonl is missing or malformed (nothing is
 * written), or MLM_EXIT_RUNTIME when the write failed, with err. */
int mlm_plot_run(const char *dir, mlm_plot_counts *counts, char *err, size_t err_len);

#endif
