/*
 * loss.svg (include/mlm/plot.h, `mlmgpu plot`): the picture parsed back as XML by
 * a well-formedness check of this file's own, its polylines holding one point per
 * metrics line, on a log loss axis and a linear learning-rate axis; resumed runs,
 * null validation losses, bad input (exit 2, the line named, nothing written);
 * rendered by rsvg-convert where it is installed (skipped otherwise).
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "mlm/fileio.h"

static char out[1 << 16];

TestSuite(plot, .init = make_tmpdir, .fini = rm_tmpdir, .timeout = 60);

/* ---------------------------------------------------------------- XML */

static int entity(const char **p) {
    const char *s = *p + 1;
    static const char *const named[] = {"amp;", "lt;", "gt;", "quot;", "apos;"};
    for (int i = 0; i < 5; i++)
        if (!strncmp(s, named[i], strlen(named[i]))) {
            *p = s + strlen(named[i]);
            return 0;
        }
    if (*s++ != '#') return -1;
    int hex = *s == 'x', digits = 0;
    if (hex) s++;
    while (hex ? isxdigit((unsigned char)*s) : isdigit((unsigned char)*s)) s++, digits++;
    if (!digits || *s != ';') return -1;
    *p = s + 1;
    return 0;
}

static const char *xml_name(const char *p, char *name, size_t n) {
    size_t k = 0;
    if (!isalpha((unsigned char)*p) && *p != '_') return NULL;
    while (isalnum((unsigned char)*p) || strchr("_:.-", *p)) {
        if (k + 1 < n) name[k++] = *p;
        p++;
    }
    name[k] = 0;
    return p;
}

/* Well-formed XML: an optional prolog, one root element, matched tags, quoted
 * attributes without '<' and unique per element, valid entity references, no
 * text outside the root. 0, or -1 with why (and the byte offset). */
static int xml_check(const char *doc, char *why, size_t wn) {
    const char *p = doc;
    char stack[64][64];
    int depth = 0, roots = 0;
#define BAD(msg) return snprintf(why, wn, "%s at byte %ld", msg, (long)(p - doc)), -1
    if (!strncmp(p, "<?xml", 5)) {
        p = strstr(p, "?>");
        if (!p) BAD("unterminated prolog");
        p += 2;
    }
    while (*p) {
        if (*p != '<') {
            if (depth == 0 && !isspace((unsigned char)*p)) BAD("text outside the root");
            if (*p != '&') p++;
            else if (entity(&p) != 0) BAD("bad entity in text");
            continue;
        }
        if (!strncmp(p, "<!--", 4)) {
            p = strstr(p + 4, "-->");
            if (!p) BAD("unterminated comment");
            p += 3;
            continue;
        }
        char name[64];
        if (p[1] == '/') {
            const char *q = xml_name(p + 2, name, sizeof name);
            if (!q) BAD("bad end tag");
            if (depth == 0 || strcmp(stack[depth - 1], name) != 0) BAD("end tag does not match");
            while (isspace((unsigned char)*q)) q++;
            if (*q != '>') BAD("end tag not closed");
            depth--;
            p = q + 1;
            continue;
        }
        const char *q = xml_name(p + 1, name, sizeof name);
        if (!q) BAD("bad element name");
        if (depth == 0 && ++roots > 1) BAD("a second root element");
        char attrs[64][64];
        int na = 0;
        for (;;) {
            int space = isspace((unsigned char)*q);
            while (isspace((unsigned char)*q)) q++;
            if (!strncmp(q, "/>", 2)) {
                q += 2;
                break;
            }
            if (*q == '>') {
                if (depth == 64) BAD("too deep");
                snprintf(stack[depth++], 64, "%s", name);
                q++;
                break;
            }
            p = q;
            if (!space) BAD("attributes not separated by a blank");
            char an[64];
            q = xml_name(q, an, sizeof an);
            if (!q) BAD("bad attribute name");
            for (int i = 0; i < na; i++)
                if (!strcmp(attrs[i], an)) BAD("repeated attribute");
            if (na < 64) snprintf(attrs[na++], 64, "%s", an);
            if (*q++ != '=') BAD("attribute without '='");
            char quote = *q++;
            if (quote != '"' && quote != '\'') BAD("unquoted attribute");
            while (*q && *q != quote) {
                p = q;
                if (*q == '<') BAD("'<' in an attribute");
                if (*q == '&') {
                    if (entity(&q) != 0) BAD("bad entity in an attribute");
                } else {
                    q++;
                }
            }
            if (!*q) BAD("unterminated attribute");
            q++;
        }
        p = q;
    }
    if (depth != 0) BAD("unclosed element");
    if (roots != 1) BAD("no root element");
#undef BAD
    return 0;
}

/* The points of <polyline id="id" ...>: x into xs, y into ys; returns how many. */
static int polyline(const char *svg, const char *id, double *xs, double *ys, int max) {
    char key[64];
    snprintf(key, sizeof key, "<polyline id=\"%s\"", id);
    const char *p = strstr(svg, key);
    cr_assert_not_null(p, "no %s", key);
    const char *end = strchr(p, '>');
    p = strstr(p, " points=\"");
    cr_assert(p && p < end, "%s: no points", id);
    p += 9;
    int n = 0;
    while (*p != '"') {
        char *e;
        double x = strtod(p, &e);
        cr_assert(e != p && *e == ',', "%s: bad point at %.20s", id, p);
        double y = strtod(e + 1, &e);
        cr_assert(*e == ' ' || *e == '"', "%s: bad point at %.20s", id, p);
        cr_assert_lt(n, max);
        xs[n] = x, ys[n++] = y;
        p = *e == ' ' ? e + 1 : e;
    }
    return n;
}

/* tmpdir/run/loss.svg, checked well-formed and plain (no scripts, nothing fetched). */
static char *read_svg(const char *run) {
    char path[256], why[256];
    snprintf(path, sizeof path, "%s/%s/loss.svg", tmpdir, run);
    char *svg = read_path(path, NULL);
    cr_assert_eq(xml_check(svg, why, sizeof why), 0, "%s: not well-formed XML: %s", path, why);
    cr_expect(strstr(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\""), "root");
    cr_expect(!strstr(svg, "<script") && !strstr(svg, "href") && !strstr(svg, "@font-face") &&
              !strstr(svg, "@import"), "scripts or external references");
    return svg;
}

static void write_metrics(const char *run, const char *text) {
    char dir[256], name[256];
    tmp_path(dir, sizeof dir, run);
    mkdir(dir, 0755);
    snprintf(name, sizeof name, "%s/metrics.jsonl", run);
    write_file(name, text);
}

#define TRAIN(step, loss, lr)                                                                                  \
    "{\"split\":\"train\",\"step\":" #step ",\"loss\":" #loss ",\"acc\":0.1,\"lr\":" #lr                          \
    ",\"grad_norm\":1.0,\"tokens_per_s\":100.0,\"elapsed_s\":1.0}\n"
#define VAL(step, loss)                                                                                     \
    "{\"split\":\"val\",\"step\":" #step ",\"loss\":" #loss ",\"acc\":0.2,\"ppl\":3.0,\"tokens\":9}\n"
#define VAL_NULL(step) "{\"split\":\"val\",\"step\":" #step ",\"loss\":null,\"acc\":null,\"ppl\":null,\"tokens\":0}\n"

/* ---------------------------------------------------------------- tests */

Test(plot, the_checker_rejects_what_is_not_well_formed) {
    char why[256];
    cr_expect_eq(xml_check("<a x=\"1\"><b/>t &amp; &#60;</a>", why, sizeof why), 0, "%s", why);
    const char *bad[] = {"<a><b></a></b>", "<a x=1/>", "<a>&nope;</a>", "<a x=\"<\"/>", "<a/><b/>", "<a>",
                         "<a x=\"1\" x=\"2\"/>", "text<a/>", "<a x=\"1\"y=\"2\"/>"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_neq(xml_check(bad[i], why, sizeof why), 0, "accepted %s", bad[i]);
}

/* Losses a decade apart must sit equally far apart (a log axis), the learning rate
 * on a linear one, both on one step axis; one point per metrics line. */
Test(plot, one_point_per_line_on_log_and_linear_axes) {
    write_metrics("r&d <1>", TRAIN(10, 10, 1e-3) TRAIN(20, 5, 2e-3) VAL(20, 2.5) TRAIN(30, 2, 3e-3)
                  "{\"split\":\"baseline\",\"step\":30,\"loss\":4}\n" TRAIN(40, 1, 3e-3) VAL_NULL(40)
                  TRAIN(50, 0.5, 2e-3) TRAIN(60, 0.2, 1e-3) TRAIN(70, 0.1, 0) VAL(70, 0.15));
    int rc = run_mlmgpu("", "plot 'r&d <1>'", out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "7 train and 2 validation points, up to step 70"), "%s", out);
    char *svg = read_svg("r&d <1>");
    cr_expect(strstr(svg, "r&amp;d &lt;1&gt;"), "the title, escaped");
    double x[16], y[16], vx[16], vy[16], lx[16], ly[16];
    cr_assert_eq(polyline(svg, "train-loss", x, y, 16), 7);
    cr_assert_eq(polyline(svg, "val-loss", vx, vy, 16), 2, "the null validation loss has no point");
    cr_assert_eq(polyline(svg, "lr", lx, ly, 16), 7);
    for (int i = 1; i < 7; i++) {
        cr_expect(fabs((x[i] - x[i - 1]) - (x[1] - x[0])) < 0.15, "steps 10 apart, x %f %f", x[i - 1], x[i]);
        cr_expect_gt(y[i], y[i - 1], "a lower loss is drawn lower (larger y)");
        cr_expect_eq(lx[i], x[i]);
    }
    double decade = y[3] - y[0];   // 10 -> 1
    cr_expect_gt(decade, 50);
    cr_expect(fabs((y[6] - y[3]) - decade) < 0.15, "1 -> 0.1 spans %f, 10 -> 1 spans %f", y[6] - y[3], decade);
    cr_expect(fabs((y[1] - y[0]) - decade * log10(2)) < 0.15, "10 -> 5");
    cr_expect(fabs((y[2] - y[0]) - decade * log10(5)) < 0.15, "10 -> 2");
    // validation on the same axes: step 20 at train's x, 2.5 between 5 and 2 as logs say
    cr_expect(fabs(vx[0] - x[1]) < 0.01 && fabs(vx[1] - x[6]) < 0.01);
    cr_expect(fabs((vy[0] - y[1]) - decade * log10(2)) < 0.15, "2.5 at %f", vy[0]);
    cr_expect(fabs((vy[1] - y[6]) - decade * log10(0.1 / 0.15)) < 0.15, "0.15 at %f", vy[1]);
    // learning rate: linear, 0 to 3e-3, in its own panel below the loss
    double unit = ly[0] - ly[1];   // 1e-3
    cr_expect_gt(unit, 10);
    cr_expect(fabs((ly[6] - ly[0]) - unit) < 0.15 && fabs(ly[2] - ly[3]) < 0.01, "linear lr axis");
    for (int i = 0; i < 7; i++) cr_expect_gt(ly[i], y[6], "lr panel below the loss panel");
    free(svg);
}

/* A run resumed from a checkpoint older than its last line writes those steps
 * again: each step is drawn once, with the values written last. */
Test(plot, resumed_run_draws_each_step_once) {
    write_metrics("run", TRAIN(1, 9, 1e-3) TRAIN(2, 8, 1e-3) TRAIN(3, 7, 1e-3) VAL(3, 7.5) TRAIN(4, 6, 1e-3)
                  TRAIN(5, 5, 1e-3) TRAIN(3, 7, 1e-3) VAL(3, 7.5) TRAIN(4, 6.5, 1e-3) TRAIN(5, 5.5, 1e-3)
                  TRAIN(6, 4, 1e-3));
    int rc = run_mlmgpu("", "plot run", out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    char *svg = read_svg("run");
    double x[16], y[16];
    cr_assert_eq(polyline(svg, "train-loss", x, y, 16), 6, "steps 1 to 6 once each");
    for (int i = 1; i < 6; i++) cr_expect_gt(x[i], x[i - 1]);
    cr_expect_eq(polyline(svg, "val-loss", x, y, 16), 1);
    free(svg);
}

/* What a run writes: the trainer's lines as they are, nothing to score yet, or
 * nothing at all (a run stopped before its first log line). */
Test(plot, empty_and_null_only_runs_still_draw) {
    write_metrics("run", VAL_NULL(5));
    cr_assert_eq(run_mlmgpu("", "plot run", out, sizeof out), 0, "%s", out);
    char *svg = read_svg("run");
    double x[4], y[4];
    cr_expect_eq(polyline(svg, "train-loss", x, y, 4), 0);
    cr_expect_eq(polyline(svg, "val-loss", x, y, 4), 0);
    free(svg);
    write_metrics("run", "");
    cr_assert_eq(run_mlmgpu("", "plot run", out, sizeof out), 0, "%s", out);
    free(read_svg("run"));
    // a last line still being written is left out, with a note
    write_metrics("run", TRAIN(1, 9, 1e-3) "{\"split\":\"train\",\"st");
    cr_assert_eq(run_mlmgpu("", "plot run", out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "metrics.jsonl:2: an unfinished last line"), "%s", out);
    svg = read_svg("run");
    cr_expect_eq(polyline(svg, "train-loss", x, y, 4), 1);
    free(svg);
}

Test(plot, bad_input_exits_2_naming_the_line_and_writes_nothing) {
    char svg[256];
    tmp_path(svg, sizeof svg, "run/loss.svg");
    cr_expect_eq(run_mlmgpu("", "plot", out, sizeof out), 2);
    cr_expect(strstr(out, "RUN_DIR is required"), "%s", out);
    cr_expect_eq(run_mlmgpu("", "plot nowhere", out, sizeof out), 2);
    cr_expect(strstr(out, "nowhere/metrics.jsonl: cannot open"), "%s", out);
    struct {
        const char *text, *msg;
    } cases[] = {
        {TRAIN(1, 9, 1e-3) TRAIN(2, 8, 1e-3) "not json\n", "run/metrics.jsonl:3: not a JSON object"},
        {TRAIN(1, 9, 1e-3) "{\"split\":\"train\",\"step\":2,\"loss\":8}\n", "run/metrics.jsonl:2: \"lr\" is missing"},
        {"{\"step\":2,\"loss\":8}\n", "run/metrics.jsonl:1: \"split\" is missing"},
        {"\n" VAL(1, "x"), "run/metrics.jsonl:2: \"loss\" is not a finite number"},
        {TRAIN(1.5, 9, 1e-3), "run/metrics.jsonl:1: \"step\" 1.5 is not a step number"},
        {"[1, 2]\n", "run/metrics.jsonl:1: not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_metrics("run", cases[i].text);
        cr_expect_eq(run_mlmgpu("", "plot run", out, sizeof out), 2, "case %zu: %s", i, out);
        cr_expect(strstr(out, cases[i].msg), "case %zu: expected '%s' in: %s", i, cases[i].msg, out);
        cr_expect_neq(access(svg, F_OK), 0, "case %zu: loss.svg written", i);
    }
    // loss.svg a FIFO: refused before any work, left as it is
    write_metrics("run", TRAIN(1, 9, 1e-3));
    cr_assert_eq(mkfifo(svg, 0644), 0);
    cr_expect_eq(run_mlmgpu("", "plot run", out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "loss.svg: is a FIFO"), "%s", out);
}

Test(plot, renders_with_rsvg_convert) {
    if (run_shell("command -v rsvg-convert", out, sizeof out) != 0)
        cr_skip_test("rsvg-convert is not installed: apt-get install librsvg2-bin");
    write_metrics("run", TRAIN(100, 10.3, 1e-4) TRAIN(200, 7.5, 2e-4) VAL(200, 7.9) TRAIN(300, 6.1, 1.5e-4)
                  VAL_NULL(300) TRAIN(400, 5.2, 5e-5) VAL(400, 5.4));
    cr_assert_eq(run_mlmgpu("", "plot run", out, sizeof out), 0, "%s", out);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && rsvg-convert run/loss.svg -o loss.png", tmpdir);
    int rc = run_shell(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "rsvg-convert: exit %d: %s", rc, out);
    size_t n;
    char *png = read_tmp("loss.png", &n);
    cr_assert_gt(n, 24);
    cr_expect_eq(memcmp(png, "\x89PNG\r\n\x1a\n", 8), 0, "a PNG");
    const unsigned char *u = (const unsigned char *)png;
    unsigned w = (unsigned)u[16] << 24 | u[17] << 16 | u[18] << 8 | u[19];
    unsigned h = (unsigned)u[20] << 24 | u[21] << 16 | u[22] << 8 | u[23];
    cr_expect(w == 900 && h == 640, "%ux%u", w, h);
    free(png);
}
