/*
 * loss.svg from metrics.jsonl (include/mlm/plot.h). Two panels over one step
 * axis: the loss on a log axis (train line, validation line with a dot at each
 * evaluation, a legend), and the learning rate on a linear axis below. Ticks on
 * the step and learning-rate axes are 1, 2 or 5 times a power of ten; the loss
 * axis has ticks at 1, 2 and 5 times powers of ten, or, for a range within a
 * decade, at multiples of such a step; its ends snap to ticks. Everything is drawn with polylines,
 * lines and text, in plain SVG 1.1.
 */
#include "mlm/plot.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/config.h"
#include "mlm/fileio.h"
#include "mlm/log.h"

/* ---------------------------------------------------------------- the data */

/* Points in step order; a point at a step not after the last one first drops the
 * points from that step on (a resumed run writes those steps again). */
typedef struct {
    double *x, *y;
    int n, cap;
} series;

static void s_preempt(series *s, double step) {
    while (s->n > 0 && s->x[s->n - 1] >= step) s->n--;
}

static void s_add(series *s, double x, double y) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->x = realloc(s->x, sizeof *s->x * (size_t)s->cap);
        s->y = realloc(s->y, sizeof *s->y * (size_t)s->cap);
        if (!s->x || !s->y) mlm_die(MLM_EXIT_RUNTIME, "out of memory reading metrics.jsonl");
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

static void s_free(series *s) {
    free(s->x);
    free(s->y);
}

typedef struct {
    series train, val, lr;   // train loss, val loss, learning rate
} run_data;

/* A number field of o, or -1 with `path:line: "key" ...`; *null set when null is
 * allowed and found. */
static int number(const cJSON *o, const char *key, double *v, int *null, const char *path, int line, char *err,
                  size_t err_len) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, key);
    if (null && cJSON_IsNull(f)) {
        *null = 1;
        return 0;
    }
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble))
        return mlm_fail(err, err_len, "%s:%d: \"%s\" %s", path, line, key,
                        f ? "is not a finite number" : "is missing");
    if (null) *null = 0;
    *v = f->valuedouble;
    return 0;
}

/* One line of metrics.jsonl into d. */
static int parse_line(run_data *d, char *text, const char *path, int line, char *err, size_t err_len) {
    cJSON *o = cJSON_Parse(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return mlm_fail(err, err_len, "%s:%d: not a JSON object", path, line);
    }
    int rc = 0, null = 0;
    const cJSON *split = cJSON_GetObjectItemCaseSensitive(o, "split");
    double step = 0, loss = 0, lr = 0;
    if (!cJSON_IsString(split)) {
        rc = mlm_fail(err, err_len, "%s:%d: \"split\" %s", path, line, split ? "is not a string" : "is missing");
    } else if (!strcmp(split->valuestring, "train") || !strcmp(split->valuestring, "val")) {
        int train = split->valuestring[0] == 't';
        rc = number(o, "step", &step, NULL, path, line, err, err_len);
        if (rc == 0 && (step < 0 || step > 2e9 || step != floor(step)))
            rc = mlm_fail(err, err_len, "%s:%d: \"step\" %g is not a step number", path, line, step);
        if (rc == 0) rc = number(o, "loss", &loss, train ? NULL : &null, path, line, err, err_len);
        if (rc == 0 && train) rc = number(o, "lr", &lr, NULL, path, line, err, err_len);
        if (rc == 0 && train) {
            s_preempt(&d->train, step);
            s_preempt(&d->lr, step);
            if (loss > 0) s_add(&d->train, step, loss);
            s_add(&d->lr, step, lr);
        } else if (rc == 0) {
            s_preempt(&d->val, step);
            if (!null && loss > 0) s_add(&d->val, step, loss);
        }
    }   // other splits: not drawn
    cJSON_Delete(o);
    return rc;
}

/* Reads path into d: every line, numbered from 1; blank lines are skipped. A last
 * line without its newline that does not parse is one being written (plotting a
 * live run): left out, with a note. */
static int read_metrics(run_data *d, const char *path, char *err, size_t err_len) {
    char *buf;
    size_t n;
    if (mlm_read_file(path, &buf, &n, err, err_len) != 0) return -1;
    if (memchr(buf, 0, n)) {
        int line = 1;
        for (const char *p = buf; *p; p++) line += *p == '\n';
        free(buf);
        return mlm_fail(err, err_len, "%s:%d: a NUL byte: not a text file", path, line);
    }
    int rc = 0, line = 0;
    for (char *p = buf; rc == 0 && *p;) {
        char *nl = strchr(p, '\n');
        line++;
        if (nl) *nl = 0;
        if (strspn(p, " \t\r") != strlen(p)) {
            if (!nl) {
                cJSON *o = cJSON_Parse(p);
                int ok = cJSON_IsObject(o);
                cJSON_Delete(o);
                if (!ok) {
                    mlm_log("%s:%d: an unfinished last line (a run still writing it?): left out", path, line);
                    break;
                }
            }
            rc = parse_line(d, p, path, line, err, err_len);
        }
        if (!nl) break;
        p = nl + 1;
    }
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- SVG text */

typedef struct {
    char *b;
    size_t n, cap;
} sbuf;

__attribute__((format(printf, 2, 3)))
static void sb_printf(sbuf *s, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(s->b ? s->b + s->n : NULL, s->b ? s->cap - s->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) mlm_die(MLM_EXIT_RUNTIME, "loss.svg: formatting failed");
        if (s->b && s->n + (size_t)k < s->cap) {
            s->n += (size_t)k;
            return;
        }
        s->cap = (s->cap ? 2 * s->cap : 65536) + (size_t)k;
        s->b = realloc(s->b, s->cap);
        if (!s->b) mlm_die(MLM_EXIT_RUNTIME, "out of memory drawing loss.svg");
    }
}

/* text as XML character data: markup characters escaped, control bytes and
 * bytes outside ASCII (a path need not be UTF-8) as '?'. */
static void sb_escaped(sbuf *s, const char *text) {
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        switch (*c) {
        case '&': sb_printf(s, "&amp;"); break;
        case '<': sb_printf(s, "&lt;"); break;
        case '>': sb_printf(s, "&gt;"); break;
        case '"': sb_printf(s, "&quot;"); break;
        case '\'': sb_printf(s, "&apos;"); break;
        default: sb_printf(s, "%c", *c >= 0x20 && *c < 0x7F ? *c : '?');
        }
    }
}

/* ---------------------------------------------------------------- axes */

enum { W = 900, H = 640, PL = 90, PR = 870, LOSS_T = 70, LOSS_B = 400, LR_T = 450, LR_B = 570 };

/* 1, 2 or 5 times a power of ten, at least raw. */
static double nice_step(double raw) {
    if (!(raw > 0)) return 1;
    double e = pow(10, floor(log10(raw))), f = raw / e;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
}

typedef struct {
    double lo, hi;   // the axis ends
    double ticks[64];
    int label[64];
    int nticks;
} log_axis;

/* The nice step below step (10 -> 5 -> 2 -> 1 -> 0.5 ...). */
static double smaller_step(double step) {
    double e = pow(10, floor(log10(step) + 1e-9)), f = step / e;
    return (f > 4 ? 0.4 : 0.5) * step;
}

/* A log axis covering [lo, hi] (lo > 0). Over more than a decade: ticks at 1, 2
 * and 5 times powers of ten (past three decades, the powers alone), the ends
 * snapped to ticks. Within a decade (a loss late in training) those would leave
 * most of the panel empty: ticks at multiples of a nice step instead, the ends
 * snapped to them. At most 8 labels, spread over the ticks. */
static void make_log_axis(log_axis *a, double lo, double hi) {
    if (hi <= lo) lo /= 1.2, hi *= 1.2;
    a->nticks = 0;
    if (hi / lo <= 10) {
        double step = nice_step((hi - lo) / 4);
        while (floor(lo / step + 1e-9) * step <= 0) step = smaller_step(step);
        a->lo = floor(lo / step + 1e-9) * step;
        a->hi = ceil(hi / step - 1e-9) * step;
        for (double t = a->lo; t <= a->hi * (1 + 1e-9) && a->nticks < 64; t += step)
            a->ticks[a->nticks++] = t;
    } else {
        static const int few[] = {1, 2, 5}, one[] = {1};
        const int *m = hi / lo > 1000 ? one : few;
        int nm = hi / lo > 1000 ? 1 : 3;
        int k0 = (int)floor(log10(lo)) - 1, k1 = (int)ceil(log10(hi)) + 1;
        a->lo = 0, a->hi = INFINITY;
        for (int k = k0; k <= k1; k++)
            for (int i = 0; i < nm; i++) {
                double t = m[i] * pow(10, k);
                if (t <= lo * (1 + 1e-12) && t > a->lo) a->lo = t;
                if (t >= hi * (1 - 1e-12) && t < a->hi) a->hi = t;
            }
        for (int k = k0; k <= k1; k++)
            for (int i = 0; i < nm && a->nticks < 64; i++) {
                double t = m[i] * pow(10, k);
                if (t >= a->lo * (1 - 1e-9) && t <= a->hi * (1 + 1e-9)) a->ticks[a->nticks++] = t;
            }
    }
    int every = (a->nticks + 7) / 8;
    for (int i = 0; i < a->nticks; i++) a->label[i] = (a->nticks - 1 - i) % every == 0;   // the top one labelled
}

/* ---------------------------------------------------------------- drawing */

typedef struct {
    double x0, x1;        // step axis
    log_axis loss;
    double lr1;           // learning-rate axis: 0 to lr1
} frame;

static double px(const frame *f, double step) { return PL + (step - f->x0) / (f->x1 - f->x0) * (PR - PL); }

static double py_loss(const frame *f, double v) {
    return LOSS_B - (log10(v) - log10(f->loss.lo)) / (log10(f->loss.hi) - log10(f->loss.lo)) * (LOSS_B - LOSS_T);
}

static double py_lr(const frame *f, double v) { return LR_B - v / f->lr1 * (LR_B - LR_T); }

static void polyline(sbuf *s, const char *id, const char *style, const frame *f, const series *ser, int lr) {
    sb_printf(s, "<polyline id=\"%s\" %s points=\"", id, style);
    for (int i = 0; i < ser->n; i++)
        sb_printf(s, "%s%.1f,%.1f", i ? " " : "", px(f, ser->x[i]), lr ? py_lr(f, ser->y[i]) : py_loss(f, ser->y[i]));
    sb_printf(s, "\"/>\n");
}

static void draw_axes(sbuf *s, const frame *f, double xtick, double lrtick) {
    sb_printf(s, "<g id=\"grid\" stroke=\"#dddddd\" stroke-width=\"1\">\n");
    for (double x = f->x0; x <= f->x1 + xtick * 1e-9; x += xtick) {
        sb_printf(s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", px(f, x), LOSS_T, px(f, x), LOSS_B);
        sb_printf(s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", px(f, x), LR_T, px(f, x), LR_B);
    }
    for (int i = 0; i < f->loss.nticks; i++)
        sb_printf(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", PL, py_loss(f, f->loss.ticks[i]), PR,
                  py_loss(f, f->loss.ticks[i]));
    for (double v = 0; v <= f->lr1 * (1 + 1e-9); v += lrtick)
        sb_printf(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", PL, py_lr(f, v), PR, py_lr(f, v));
    sb_printf(s, "</g>\n<g id=\"frames\" fill=\"none\" stroke=\"#333333\" stroke-width=\"1\">\n"
              "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\"/>\n"
              "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\"/>\n",
              PL, LOSS_T, PR - PL, LOSS_B - LOSS_T, PL, LR_T, PR - PL, LR_B - LR_T);
    for (double x = f->x0; x <= f->x1 + xtick * 1e-9; x += xtick)   // tick marks below each panel
        sb_printf(s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" "
                  "y2=\"%d\"/>\n", px(f, x), LOSS_B, px(f, x), LOSS_B + 5, px(f, x), LR_B, px(f, x), LR_B + 5);
    for (int i = 0; i < f->loss.nticks; i++)
        sb_printf(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", PL - 5, py_loss(f, f->loss.ticks[i]), PL,
                  py_loss(f, f->loss.ticks[i]));
    for (double v = 0; v <= f->lr1 * (1 + 1e-9); v += lrtick)
        sb_printf(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", PL - 5, py_lr(f, v), PL, py_lr(f, v));
    sb_printf(s, "</g>\n<g id=\"labels\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#333333\">\n");
    for (double x = f->x0; x <= f->x1 + xtick * 1e-9; x += xtick)
        sb_printf(s, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", px(f, x), LR_B + 20, x);
    for (int i = 0; i < f->loss.nticks; i++)
        if (f->loss.label[i])
            sb_printf(s, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", PL - 8,
                      py_loss(f, f->loss.ticks[i]) + 4, f->loss.ticks[i]);
    for (double v = 0; v <= f->lr1 * (1 + 1e-9); v += lrtick)
        sb_printf(s, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", PL - 8, py_lr(f, v) + 4,
                  fabs(v) < lrtick * 1e-6 ? 0.0 : v);
    sb_printf(s, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (PL + PR) / 2, LR_B + 45);
    sb_printf(s, "<text x=\"20\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 20 %d)\">loss (log "
              "scale)</text>\n", (LOSS_T + LOSS_B) / 2, (LOSS_T + LOSS_B) / 2);
    sb_printf(s, "<text x=\"20\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 20 %d)\">learning "
              "rate</text>\n</g>\n", (LR_T + LR_B) / 2, (LR_T + LR_B) / 2);
}

static const char TRAIN_STYLE[] = "fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" stroke-linejoin=\"round\"";
static const char VAL_STYLE[] = "fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" stroke-linejoin=\"round\" "
                                "marker-start=\"url(#dot)\" marker-mid=\"url(#dot)\" marker-end=\"url(#dot)\"";
static const char LR_STYLE[] = "fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"1.5\" stroke-linejoin=\"round\"";

static void draw(sbuf *s, const run_data *d, const char *title) {
    frame f = {0};
    double xmax = 1, lo = INFINITY, hi = 0, lrmax = 0;
    const series *losses[2] = {&d->train, &d->val};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < losses[k]->n; i++) {
            xmax = fmax(xmax, losses[k]->x[i]);
            lo = fmin(lo, losses[k]->y[i]);
            hi = fmax(hi, losses[k]->y[i]);
        }
    for (int i = 0; i < d->lr.n; i++) xmax = fmax(xmax, d->lr.x[i]), lrmax = fmax(lrmax, d->lr.y[i]);
    if (!(hi > 0)) lo = 1, hi = 10;   // nothing to draw yet: a decade
    if (!(lrmax > 0)) lrmax = 1e-3;
    double xtick = nice_step(xmax / 6), lrtick = nice_step(lrmax / 3);
    f.x0 = 0;
    f.x1 = ceil(xmax / xtick - 1e-9) * xtick;
    f.lr1 = ceil(lrmax / lrtick - 1e-9) * lrtick;
    make_log_axis(&f.loss, lo, hi);

    sb_printf(s, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
              "viewBox=\"0 0 %d %d\">\n<title>", W, H, W, H);
    sb_escaped(s, title);
    sb_printf(s, "</title>\n<defs>\n<marker id=\"dot\" markerWidth=\"6\" markerHeight=\"6\" refX=\"3\" refY=\"3\" "
              "markerUnits=\"userSpaceOnUse\"><circle cx=\"3\" cy=\"3\" r=\"2.5\" fill=\"#d62728\"/></marker>\n"
              "</defs>\n<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", W, H);
    sb_printf(s, "<text x=\"%d\" y=\"28\" font-family=\"sans-serif\" font-size=\"16\" fill=\"#111111\">", PL);
    sb_escaped(s, title);
    sb_printf(s, "</text>\n<text x=\"%d\" y=\"50\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#555555\">",
              PL);
    if (d->train.n) sb_printf(s, "step %.0f: train loss %.4f", d->train.x[d->train.n - 1], d->train.y[d->train.n - 1]);
    else sb_printf(s, "no training steps logged yet");
    if (d->val.n)
        sb_printf(s, "; validation loss %.4f at step %.0f", d->val.y[d->val.n - 1], d->val.x[d->val.n - 1]);
    sb_printf(s, "</text>\n");
    draw_axes(s, &f, xtick, lrtick);
    sb_printf(s, "<g id=\"lines\">\n");
    polyline(s, "train-loss", TRAIN_STYLE, &f, &d->train, 0);
    polyline(s, "val-loss", VAL_STYLE, &f, &d->val, 0);
    polyline(s, "lr", LR_STYLE, &f, &d->lr, 1);
    sb_printf(s, "</g>\n");
    // the legend, in the loss panel's top right corner
    int lx = PR - 160, ly = LOSS_T + 12;
    sb_printf(s, "<g id=\"legend\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#333333\">\n"
              "<rect x=\"%d\" y=\"%d\" width=\"150\" height=\"64\" fill=\"#ffffff\" stroke=\"#999999\"/>\n"
              "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>"
              "<text x=\"%d\" y=\"%d\">train loss</text>\n"
              "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#d62728\" stroke-width=\"1.5\"/>"
              "<circle cx=\"%d\" cy=\"%d\" r=\"2.5\" fill=\"#d62728\"/><text x=\"%d\" y=\"%d\">validation loss</text>\n"
              "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#2ca02c\" stroke-width=\"1.5\"/>"
              "<text x=\"%d\" y=\"%d\">learning rate</text>\n</g>\n</svg>\n",
              lx, ly - 4, lx + 8, ly + 10, lx + 32, ly + 10, lx + 40, ly + 14, lx + 8, ly + 30, lx + 32, ly + 30,
              lx + 20, ly + 30, lx + 40, ly + 34, lx + 8, ly + 50, lx + 32, ly + 50, lx + 40, ly + 54);
}

/* ---------------------------------------------------------------- entry points */

int mlm_plot_svg(const char *metrics, const char *title, char **svg, size_t *len, mlm_plot_counts *counts,
                 char *err, size_t err_len) {
    run_data d = {0};
    *svg = NULL;
    *len = 0;
    int rc = read_metrics(&d, metrics, err, err_len);
    if (rc == 0) {
        sbuf s = {0};
        draw(&s, &d, title);
        *svg = s.b;
        *len = s.n;
        if (counts) {
            *counts = (mlm_plot_counts){d.train.n, d.val.n, d.lr.n, 0};
            const series *all[3] = {&d.train, &d.val, &d.lr};
            for (int k = 0; k < 3; k++)
                if (all[k]->n && all[k]->x[all[k]->n - 1] > counts->last_step)
                    counts->last_step = (int)all[k]->x[all[k]->n - 1];
        }
    }
    s_free(&d.train);
    s_free(&d.val);
    s_free(&d.lr);
    return rc;
}

int mlm_plot_run(const char *dir, mlm_plot_counts *counts, char *err, size_t err_len) {
    char metrics[MLM_PATH_MAX + 32], out[MLM_PATH_MAX + 32], title[MLM_PATH_MAX + 32];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", dir);
    snprintf(out, sizeof out, "%s/loss.svg", dir);
    snprintf(title, sizeof title, "mlmgpu run: %s", dir);
    char *svg, *target;
    size_t len;
    if (mlm_output_target(out, &target, err, err_len) != 0) return MLM_EXIT_INPUT;   // a FIFO there, say
    free(target);
    if (mlm_plot_svg(metrics, title, &svg, &len, counts, err, err_len) != 0) return MLM_EXIT_INPUT;
    const void *parts[1] = {svg};
    int rc = mlm_write_file_atomic(out, parts, &len, 1, err, err_len) == 0 ? 0 : MLM_EXIT_RUNTIME;
    free(svg);
    return rc;
}
