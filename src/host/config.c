/*
 * Run configuration (include/mlm/config.h): defaults, INI files (read here, with no
 * line length limit, so the resolved config mlm_config_write saves always reads back),
 * `--set section.key=value` overrides, validation, and writing the resolved config.
 *
 * One table, FIELDS, lists every key once: its section, name, type, place in
 * mlm_config, default and accepted range. Defaults, parsing, overrides, range checks,
 * error messages and mlm_config_write are loops over that table; only the checks
 * that relate two keys (hidden_size % num_heads, ...) are written out by hand.
 *
 * Every error is one line `where: section.key: what is wrong`, where `where` is
 * `file:line`, `--set section.key=value`, or for values nobody set, the file name
 * (or "(default)" when there is no file). Validation blames the latest place that
 * set the offending key.
 */
#include "mlm/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlm/fileio.h"
#include "mlm/log.h"

/* ---- the table ---- */

typedef enum { T_INT, T_U64, T_FLOAT, T_PATH, T_ENUM } field_type;

enum { OPEN_LO = 1, OPEN_HI = 2 };  // range bounds that are excluded

typedef struct {
    const char *section, *key;
    size_t offset;        // into mlm_config
    field_type type;
    const char *def;      // default, parsed like a file value
    double lo, hi;        // accepted range of numbers
    int open;             // OPEN_LO | OPEN_HI
    const char *const *names;   // T_ENUM: the values' names, in the enum's order, NULL-ended
    const char *what;           // T_ENUM: what a value is, for the error ("schedule")
} field;

/* The names of the enum-valued keys, each in its C enum's order (include/mlm/config.h). */
static const char *const SCHEDULES[] = {"linear", "cosine", "constant", NULL};
static const char *const ARCHS[] = {"bert", "roberta", NULL};
static const char *const POSITION_INITS[] = {"normal", "sinusoidal", NULL};
#define ENUM(names, what) -INFINITY, INFINITY, 0, names, what

// AT names a key and where it lives; the section is the struct member of mlm_config.
#define AT(sec, name) #sec, #name, offsetof(mlm_config, sec.name)
#define ANY -INFINITY, INFINITY, 0, NULL, NULL
#define AT_LEAST(x) x, INFINITY, 0, NULL, NULL
#define ABOVE(x) x, INFINITY, OPEN_LO, NULL, NULL
#define UNIT 0, 1, 0, NULL, NULL               // [0, 1]
#define UNIT_BELOW_1 0, 1, OPEN_HI, NULL, NULL // [0, 1)

static const field FIELDS[] = {
    {AT(model, architecture), T_ENUM, "bert", ENUM(ARCHS, "architecture")},
    {AT(model, vocab_size), T_INT, "30522", AT_LEAST(1)},
    {AT(model, hidden_size), T_INT, "128", AT_LEAST(1)},
    {AT(model, num_layers), T_INT, "2", AT_LEAST(1)},
    {AT(model, num_heads), T_INT, "2", AT_LEAST(1)},
    {AT(model, intermediate_size), T_INT, "512", AT_LEAST(1)},
    {AT(model, max_position), T_INT, "512", AT_LEAST(1)},
    {AT(model, type_vocab_size), T_INT, "2", AT_LEAST(1)},
    {AT(model, layer_norm_eps), T_FLOAT, "1e-12", ABOVE(0)},
    {AT(model, hidden_dropout), T_FLOAT, "0.1", UNIT_BELOW_1},
    {AT(model, attention_dropout), T_FLOAT, "0.1", UNIT_BELOW_1},
    {AT(model, init_range), T_FLOAT, "0.02", AT_LEAST(0)},
    {AT(model, position_init), T_ENUM, "normal", ENUM(POSITION_INITS, "position_init")},
    {AT(model, init_from), T_PATH, "", ANY},

    {AT(data, train), T_PATH, "", ANY},
    {AT(data, val), T_PATH, "", ANY},
    {AT(data, vocab), T_PATH, "", ANY},
    {AT(data, seq_len), T_INT, "128", AT_LEAST(2)},  // at least [CLS] and [SEP]
    {AT(data, cased), T_INT, "0", UNIT},
    {AT(data, mask_prob), T_FLOAT, "0.15", 0, 1, OPEN_LO, NULL, NULL},   // 0 would train and score nothing
    {AT(data, mask_token_prob), T_FLOAT, "0.8", UNIT},
    {AT(data, random_token_prob), T_FLOAT, "0.1", UNIT},
    {AT(data, whole_word_mask), T_INT, "0", UNIT},

    {AT(train, micro_batch), T_INT, "32", AT_LEAST(1)},
    {AT(train, batch), T_INT, "32", AT_LEAST(1)},
    {AT(train, steps), T_INT, "1000", AT_LEAST(1)},
    {AT(train, seed), T_U64, "1234", ANY},
    {AT(train, log_every), T_INT, "10", AT_LEAST(1)},
    {AT(train, eval_every), T_INT, "0", AT_LEAST(0)},
    {AT(train, eval_steps), T_INT, "20", AT_LEAST(1)},
    {AT(train, checkpoint_every), T_INT, "0", AT_LEAST(0)},
    {AT(train, checkpoint_keep), T_INT, "3", AT_LEAST(1)},
    {AT(train, threads), T_INT, "0", 0, 1024, 0, NULL, NULL},   // prepare's --threads has the same cap
    {AT(train, out_dir), T_PATH, "runs/default", ANY},

    {AT(optim, lr), T_FLOAT, "1e-4", ABOVE(0)},
    {AT(optim, warmup_steps), T_INT, "100", AT_LEAST(0)},
    {AT(optim, schedule), T_ENUM, "linear", ENUM(SCHEDULES, "schedule")},
    {AT(optim, min_lr), T_FLOAT, "0", AT_LEAST(0)},  // <= lr: checked in check_pairs
    {AT(optim, weight_decay), T_FLOAT, "0.01", AT_LEAST(0)},
    {AT(optim, beta1), T_FLOAT, "0.9", UNIT_BELOW_1},
    {AT(optim, beta2), T_FLOAT, "0.999", UNIT_BELOW_1},
    {AT(optim, eps), T_FLOAT, "1e-6", ABOVE(0)},
    {AT(optim, grad_clip), T_FLOAT, "1.0", AT_LEAST(0)},

    {AT(dist, timeout_s), T_INT, "300", AT_LEAST(1)},
};
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])

/* names[v], or "unknown" for a value outside the table. */
static const char *enum_name(const char *const *names, int v) {
    for (int i = 0; names[i]; i++)
        if (i == v) return names[i];
    return "unknown";
}

const char *mlm_schedule_name(mlm_schedule s) { return enum_name(SCHEDULES, (int)s); }
const char *mlm_arch_name(mlm_arch a) { return enum_name(ARCHS, (int)a); }
const char *mlm_position_init_name(mlm_position_init p) { return enum_name(POSITION_INITS, (int)p); }

static const field *find_field(const char *section, const char *key) {
    for (size_t i = 0; i < NFIELDS; i++)
        if (!strcmp(FIELDS[i].section, section) && !strcmp(FIELDS[i].key, key)) return &FIELDS[i];
    return NULL;
}

static const field *field_at(size_t offset) {
    for (size_t i = 0; i < NFIELDS; i++)
        if (FIELDS[i].offset == offset) return &FIELDS[i];
    return NULL;
}

static int known_section(const char *section) {
    for (size_t i = 0; i < NFIELDS; i++)
        if (!strcmp(FIELDS[i].section, section)) return 1;
    return 0;
}

static void *slot(mlm_config *cfg, const field *f) { return (char *)cfg + f->offset; }
static const void *cslot(const mlm_config *cfg, const field *f) {
    return (const char *)cfg + f->offset;
}

/* ---- values: text <-> struct ---- */

// strto* stop at trailing blanks; the whole value must be consumed apart from those.
static int only_blanks(const char *s) {
    while (isspace((unsigned char)*s)) s++;
    return *s == '\0';
}

__attribute__((format(printf, 3, 4)))
static int reject(char *why, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int parse_int(const char *text, int *out, char *why, size_t n) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || !only_blanks(end))
        return reject(why, n, "expected an integer, got \"%s\"", text);
    if (errno == ERANGE || v < INT_MIN || v > INT_MAX)
        return reject(why, n, "integer %s does not fit in an int", text);
    *out = (int)v;
    return 0;
}

static int parse_u64(const char *text, uint64_t *out, char *why, size_t n) {
    const char *s = text;
    while (isspace((unsigned char)*s)) s++;
    // strtoull would accept "-1" and wrap it, so insist on a leading digit.
    if (!isdigit((unsigned char)*s))
        return reject(why, n, "expected a non-negative integer, got \"%s\"", text);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!only_blanks(end))
        return reject(why, n, "expected a non-negative integer, got \"%s\"", text);
    if (errno == ERANGE) return reject(why, n, "integer %s does not fit in 64 bits", text);
    *out = (uint64_t)v;
    return 0;
}

static int parse_float(const char *text, float *out, char *why, size_t n) {
    char *end;
    float v = strtof(text, &end);
    if (end == text || !only_blanks(end))
        return reject(why, n, "expected a number, got \"%s\"", text);
    // Overflow ("1e999") comes back as inf; underflow to a tiny value is harmless.
    if (!isfinite(v)) return reject(why, n, "expected a finite float, got \"%s\"", text);
    *out = v;
    return 0;
}

static int parse_path(const char *text, char *out, char *why, size_t n) {
    size_t len = strlen(text);
    if (len > MLM_PATH_MAX - 1)
        return reject(why, n, "path is %zu characters long, the limit is %d", len,
                      MLM_PATH_MAX - 1);
    // what mlm_config_write writes must read back the same: no comment start, no
    // line break (values are trimmed on reading, so blanks at the ends cannot be kept)
    for (const char *c = text; *c; c++) {
        if ((*c == ';' || *c == '#') && c > text && (c[-1] == ' ' || c[-1] == '\t'))
            return reject(why, n, "'%c' after a blank starts a comment: the path would read back cut short", *c);
        if (*c == '\n' || *c == '\r') return reject(why, n, "a path cannot hold a line break");
    }
    memcpy(out, text, len + 1);
    return 0;
}

/* One of f's names into *out (its index: enum slots are ints, see the assert below). */
static int parse_enum(const field *f, const char *text, int *out, char *why, size_t n) {
    for (int i = 0; f->names[i]; i++)
        if (!strcmp(text, f->names[i])) {
            *out = i;
            return 0;
        }
    char expected[256];
    return reject(why, n, "unknown %s \"%s\" (expected %s)", f->what, text,
                  mlm_choices_text(f->names, expected, sizeof expected));
}
_Static_assert(sizeof(mlm_schedule) == sizeof(int) && sizeof(mlm_arch) == sizeof(int) &&
               sizeof(mlm_position_init) == sizeof(int), "enum-valued config slots are read as int");

/* Parses text into cfg's slot for f; on failure leaves the slot alone and says why. */
static int parse_value(const field *f, const char *text, mlm_config *cfg, char *why, size_t n) {
    void *p = slot(cfg, f);
    switch (f->type) {
    case T_INT: return parse_int(text, p, why, n);
    case T_U64: return parse_u64(text, p, why, n);
    case T_FLOAT: return parse_float(text, p, why, n);
    case T_PATH: return parse_path(text, p, why, n);
    case T_ENUM: return parse_enum(f, text, p, why, n);
    }
    return -1;
}

/* Shortest %g text that strtof turns back into exactly v (at most 9 digits do). */
static void format_float(float v, char *buf, size_t n) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, n, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
}

static void format_value(const field *f, const mlm_config *cfg, char *buf, size_t n) {
    const void *p = cslot(cfg, f);
    switch (f->type) {
    case T_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case T_U64: snprintf(buf, n, "%" PRIu64, *(const uint64_t *)p); break;
    case T_FLOAT: format_float(*(const float *)p, buf, n); break;
    case T_PATH: snprintf(buf, n, "%s", (const char *)p); break;
    case T_ENUM: snprintf(buf, n, "%s", enum_name(f->names, *(const int *)p)); break;
    }
}

static double numeric_value(const field *f, const mlm_config *cfg) {
    const void *p = cslot(cfg, f);
    return f->type == T_INT ? (double)*(const int *)p : (double)*(const float *)p;
}

void mlm_config_defaults(mlm_config *cfg) {
    memset(cfg, 0, sizeof *cfg);  // padding and string tails compare equal with memcmp
    char why[64];
    for (size_t i = 0; i < NFIELDS; i++)
        parse_value(&FIELDS[i], FIELDS[i].def, cfg, why, sizeof why);  // constants: cannot fail
}

/* Values are written bare; parse_path refuses what would not read back (a comment
 * start, a line break), and lines have no length limit. */
void mlm_config_write(const mlm_config *cfg, FILE *f) {
    fprintf(f, "; mlmgpu resolved config (from %s); every key, mlm_config_load reads it back\n",
            cfg->source[0] ? cfg->source : "defaults");
    const char *section = "";
    char value[MLM_PATH_MAX];
    for (size_t i = 0; i < NFIELDS; i++) {
        if (strcmp(section, FIELDS[i].section))
            fprintf(f, "\n[%s]\n", section = FIELDS[i].section);
        format_value(&FIELDS[i], cfg, value, sizeof value);
        fprintf(f, "%s = %s\n", FIELDS[i].key, value);
    }
}

/* ---- loading: where each value came from, and errors that say so ---- */

// "When" a value was set, ordered so that a later setting compares greater:
// 0 = default (or the file as a whole), 1.. = line of the file, FROM_SET + i = the i-th --set.
enum { FROM_DEFAULT = 0, WHOLE_FILE = 0, FROM_SET = 1 << 30 };

typedef struct {
    mlm_config *cfg;
    const char *path;           // the file, or NULL
    const char *const *sets;
    int origin[NFIELDS];        // when each field was last set
    int line;                   // lines of the file read so far
    int section_line;           // line of the latest [section] header
    int failed_at;              // when the first error happened; -1 if none yet
    char *err;
    size_t err_len;
} loader;

static void vfail(loader *ld, int when, const char *section, const char *key, const char *fmt,
                  va_list ap) {
    // Keep the earliest error: a pair of keys is checked after the whole file, by
    // which time a bad value on an earlier --set may already have failed.
    if (ld->failed_at >= 0 && ld->failed_at <= when) return;
    ld->failed_at = when;
    if (!ld->err || !ld->err_len) return;
    char where[MLM_PATH_MAX + 32], subject[160] = "";
    if (when >= FROM_SET) {   // one line: control characters of the value shown as '?'
        snprintf(where, sizeof where, "--set %s", ld->sets[when - FROM_SET]);
        for (char *c = where; *c; c++)
            if ((unsigned char)*c < 0x20) *c = '?';
    }
    else if (when > 0) snprintf(where, sizeof where, "%s:%d", ld->path, when);
    else snprintf(where, sizeof where, "%s", ld->path ? ld->path : "(default)");
    if (key) snprintf(subject, sizeof subject, "%s.%s: ", section, key);
    else if (section) snprintf(subject, sizeof subject, "[%s]: ", section);
    char what[MLM_PATH_MAX + 128];
    vsnprintf(what, sizeof what, fmt, ap);
    snprintf(ld->err, ld->err_len, "%s: %s%s", where, subject, what);
}

/* Records an error `where: section.key: what` (key NULL: `[section]`; both NULL: none). */
__attribute__((format(printf, 5, 6)))
static void fail(loader *ld, int when, const char *section, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(ld, when, section, key, fmt, ap);
    va_end(ap);
}

static int failed(const loader *ld) { return ld->failed_at >= 0; }

// Edit distance of short names, for "did you mean" hints; long names get no hint.
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return INT_MAX;
    int row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j], sub = diag + (a[i - 1] != b[j - 1]);
            int best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            diag = up;
        }
    }
    return row[lb];
}

/* The known key closest to section.key: a typo in the same section, or the same key
 * put in the wrong section. NULL if nothing is close. */
static const field *closest_field(const char *section, const char *key) {
    const field *best = NULL;
    int best_d = 3;  // more than 2 edits is not a typo
    for (size_t i = 0; i < NFIELDS; i++) {
        int d = edit_distance(key, FIELDS[i].key);
        if (d < INT_MAX && strcmp(section, FIELDS[i].section)) d += 2;  // a misplaced key
        if (d < best_d) best_d = d, best = &FIELDS[i];
    }
    return best;
}

static void fail_unknown_key(loader *ld, int when, const char *section, const char *key) {
    const field *near = closest_field(section, key);
    if (near)
        fail(ld, when, section, key, "unknown key (did you mean %s.%s?)", near->section, near->key);
    else
        fail(ld, when, section, key, "unknown key");
}

static void fail_unknown_section(loader *ld, int when, const char *section) {
    char known[128] = "";
    for (size_t i = 0; i < NFIELDS; i++)
        if (i == 0 || strcmp(FIELDS[i - 1].section, FIELDS[i].section))
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s[%s]",
                     known[0] ? ", " : "", FIELDS[i].section);
    fail(ld, when, section, NULL, "unknown section (known sections: %s)", known);
}

static void fail_no_section(loader *ld, int when, const char *key) {
    const field *home = closest_field("", key);  // only an exact key name is close enough
    if (home)
        fail(ld, when, NULL, NULL, "%s: key outside any section (it belongs under [%s])", key,
             home->section);
    else
        fail(ld, when, NULL, NULL, "%s: key outside any section", key);
}

/* Sets section.key = value, set at `when`; section_when locates the section name. */
static void apply(loader *ld, int when, int section_when, const char *section, const char *key,
                  const char *value) {
    const field *f = find_field(section, key);
    size_t i = f ? (size_t)(f - FIELDS) : 0;
    char why[MLM_PATH_MAX + 64];
    if (!section[0])
        fail_no_section(ld, when, key);
    else if (!known_section(section))
        fail_unknown_section(ld, section_when, section);
    else if (!f)
        fail_unknown_key(ld, when, section, key);
    // Within one file a second setting is a mistake; --set exists to override.
    else if (when < FROM_SET && ld->origin[i] > FROM_DEFAULT)
        fail(ld, when, section, key, "duplicate key (first set at line %d)", ld->origin[i]);
    else if (parse_value(f, value, ld->cfg, why, sizeof why))
        fail(ld, when, section, key, "%s", why);
    else
        ld->origin[i] = when;
}

/* ---- the INI file ---- */

/* A config file is small: a bound on what is read keeps /dev/zero or a huge file
 * named by mistake from being read without end. */
#define CONFIG_MAX_BYTES (1u << 20)

static char *trim(char *s);

// ';' or '#' at the start of a line or after a blank begins a comment.
static void cut_comment(char *s) {
    for (char *p = s; *p; p++)
        if ((*p == ';' || *p == '#') && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            return;
        }
}

/* One line: "[section]", "key = value" (or "key: value"), a comment or blank. Lines
 * have no length limit, so whatever mlm_config_write writes reads back. */
static void parse_line(loader *ld, char *s, char *section, size_t section_cap) {
    cut_comment(s);
    s = trim(s);
    if (!*s) return;
    if (*s == '[') {
        char *close = strchr(s, ']');
        if (!close || *trim(close + 1)) {
            fail(ld, ld->line, NULL, NULL, "expected \"[section]\"");
            return;
        }
        *close = '\0';
        snprintf(section, section_cap, "%s", trim(s + 1));
        ld->section_line = ld->line;
        return;
    }
    size_t k = strcspn(s, "=:");
    if (!s[k]) {
        fail(ld, ld->line, NULL, NULL, "expected \"[section]\" or \"key = value\"");
        return;
    }
    s[k] = '\0';
    char *key = trim(s), *value = trim(s + k + 1);
    if (!*key) {
        fail(ld, ld->line, NULL, NULL, "expected \"[section]\" or \"key = value\"");
        return;
    }
    apply(ld, ld->line, ld->section_line, section, key, value);
}

static void load_file(loader *ld) {
    int fd = open(ld->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   // a FIFO: no wait for a writer
    struct stat st;
    if (fd < 0) {
        fail(ld, WHOLE_FILE, NULL, NULL, "cannot open: %s", strerror(errno));
        return;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);   // a FIFO or /dev/zero would be read without end
        fail(ld, WHOLE_FILE, NULL, NULL, "not a regular file");
        return;
    }
    close(fd);
    if ((uint64_t)st.st_size > CONFIG_MAX_BYTES) {
        fail(ld, WHOLE_FILE, NULL, NULL, "%lld bytes: larger than %u, not a config file", (long long)st.st_size,
             CONFIG_MAX_BYTES);
        return;
    }
    char *text, err[MLM_PATH_MAX + 128];
    size_t n;
    if (mlm_read_file(ld->path, &text, &n, err, sizeof err) != 0) {   // rechecks the kind
        fail(ld, WHOLE_FILE, NULL, NULL, "cannot read it (%s)", err);
        return;
    }
    char section[256] = "";
    char *p = text, *end = text + n;
    if (n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3;   // a UTF-8 byte order mark
    while (p < end && !failed(ld)) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        ld->line++;
        if (memchr(p, '\0', (size_t)(nl - p))) {   // it would cut the value short, silently
            fail(ld, ld->line, NULL, NULL, "contains a NUL byte");
            break;
        }
        *nl = '\0';
        parse_line(ld, p, section, sizeof section);
        p = nl + 1;
    }
    free(text);
}

/* ---- --set section.key=value ---- */

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

static void apply_set(loader *ld, int i) {
    int when = FROM_SET + i;
    char *copy = strdup(ld->sets[i]);
    if (!copy) {
        fail(ld, when, NULL, NULL, "out of memory");
        return;
    }
    char *eq = strchr(copy, '='), *dot = eq ? memchr(copy, '.', (size_t)(eq - copy)) : NULL;
    if (!dot) {
        fail(ld, when, NULL, NULL, "expected section.key=value, e.g. model.hidden_size=256");
    } else {
        *eq = *dot = '\0';
        char *section = trim(copy), *key = trim(dot + 1);
        if (!section[0] || !key[0])
            fail(ld, when, NULL, NULL, "expected section.key=value, e.g. model.hidden_size=256");
        else
            apply(ld, when, when, section, key, trim(eq + 1));
    }
    free(copy);
}

/* ---- validation ---- */

static void describe_range(const field *f, char *buf, size_t n) {
    if (isinf(f->hi))
        snprintf(buf, n, "must be %s %g", f->open & OPEN_LO ? ">" : ">=", f->lo);
    else
        snprintf(buf, n, "must be in %c%g, %g%c", f->open & OPEN_LO ? '(' : '[', f->lo, f->hi,
                 f->open & OPEN_HI ? ')' : ']');
}

static int in_range(const field *f, double v) {
    int above_lo = f->open & OPEN_LO ? v > f->lo : v >= f->lo;
    int below_hi = f->open & OPEN_HI ? v < f->hi : v <= f->hi;
    return above_lo && below_hi;
}

static void check_ranges(loader *ld) {
    for (size_t i = 0; i < NFIELDS && !failed(ld); i++) {
        const field *f = &FIELDS[i];
        if (f->type != T_INT && f->type != T_FLOAT) continue;
        if (in_range(f, numeric_value(f, ld->cfg))) continue;
        char range[64], value[32];
        describe_range(f, range, sizeof range);
        format_value(f, ld->cfg, value, sizeof value);
        fail(ld, ld->origin[i], f->section, f->key, "%s, got %s", range, value);
    }
}

/* Two keys that disagree: blame whichever was set later, the one the user just changed. */
__attribute__((format(printf, 4, 5)))
static void fail_pair(loader *ld, size_t offset_a, size_t offset_b, const char *fmt, ...) {
    const field *a = field_at(offset_a), *b = field_at(offset_b);
    int when_a = ld->origin[a - FIELDS], when_b = ld->origin[b - FIELDS];
    const field *culprit = when_b > when_a ? b : a;
    va_list ap;
    va_start(ap, fmt);
    vfail(ld, when_b > when_a ? when_b : when_a, culprit->section, culprit->key, fmt, ap);
    va_end(ap);
}

#define OFF(member) offsetof(mlm_config, member)

static void check_pairs(loader *ld) {
    const mlm_config *c = ld->cfg;
    if (c->model.hidden_size % c->model.num_heads)
        fail_pair(ld, OFF(model.hidden_size), OFF(model.num_heads),
                  "hidden_size %d is not divisible by num_heads %d", c->model.hidden_size,
                  c->model.num_heads);
    // the arena is sized for micro_batch x seq_len tokens in int arithmetic
    else if ((int64_t)c->train.micro_batch * c->data.seq_len > (1 << 30))
        fail_pair(ld, OFF(train.micro_batch), OFF(data.seq_len),
                  "micro_batch %d x seq_len %d = %lld tokens, more than the limit %d", c->train.micro_batch,
                  c->data.seq_len, (long long)c->train.micro_batch * c->data.seq_len, 1 << 30);
    else if (c->train.batch % c->train.micro_batch)
        fail_pair(ld, OFF(train.batch), OFF(train.micro_batch),
                  "batch %d is not a multiple of micro_batch %d", c->train.batch,
                  c->train.micro_batch);
    else if (c->data.seq_len > c->model.max_position)
        fail_pair(ld, OFF(data.seq_len), OFF(model.max_position),
                  "seq_len %d exceeds model.max_position %d", c->data.seq_len,
                  c->model.max_position);
    // RoBERTa numbers positions from padding_idx + 1 = 2 (model.h mlm_position_offset)
    else if (c->model.architecture == MLM_ARCH_ROBERTA && c->data.seq_len > c->model.max_position - 2)
        fail_pair(ld, OFF(data.seq_len), OFF(model.max_position),
                  "seq_len %d exceeds model.max_position %d - 2 (roberta's positions start at 2)",
                  c->data.seq_len, c->model.max_position);
    // float sums such as 0.7 + 0.3 can land a rounding step above 1
    else if (c->data.mask_token_prob + c->data.random_token_prob > 1.0f + 1e-6f)
        fail_pair(ld, OFF(data.mask_token_prob), OFF(data.random_token_prob),
                  "mask_token_prob %g + random_token_prob %g exceeds 1",
                  (double)c->data.mask_token_prob, (double)c->data.random_token_prob);
    else if (c->optim.min_lr > c->optim.lr)
        fail_pair(ld, OFF(optim.min_lr), OFF(optim.lr), "min_lr %g exceeds lr %g",
                  (double)c->optim.min_lr, (double)c->optim.lr);
    // whole-word masking finds word starts in the vocabulary (loader.c)
    else if (c->data.whole_word_mask && !c->data.vocab[0])
        fail_pair(ld, OFF(data.whole_word_mask), OFF(data.vocab),
                  "whole_word_mask = 1 needs data.vocab: the word starts come from the vocabulary");
}

/* ---- entry point ---- */

int mlm_config_load(mlm_config *cfg, const char *path, const char *const *sets, int nsets,
                    char *err, size_t err_len) {
    loader ld = {.cfg = cfg, .path = path, .sets = sets, .failed_at = -1, .err = err,
                 .err_len = err_len};
    if (err && err_len) err[0] = '\0';
    mlm_config_defaults(cfg);
    if (path && strlen(path) > MLM_PATH_MAX - 1)
        fail(&ld, WHOLE_FILE, NULL, NULL, "file name longer than %d characters", MLM_PATH_MAX - 1);
    else if (path) {
        strcpy(cfg->source, path);
        load_file(&ld);
    }
    for (int i = 0; i < nsets && !failed(&ld); i++) apply_set(&ld, i);
    if (!failed(&ld)) check_ranges(&ld);
    if (!failed(&ld)) check_pairs(&ld);
    return failed(&ld) ? -1 : 0;
}
