/*
 * vocab.txt (include/mlm/data.h): one WordPiece token per line, the id is the line
 * number (0-based). Loaded whole; tokens point into the file's bytes. Lookup is a
 * linear scan, used only at start-up and for printing (the tokenizer builds its own
 * hash table).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/data.h"
#include "mlm/fileio.h"
#include "mlm/log.h"

int mlm_vocab_load(mlm_vocab *v, const char *path, char *err, size_t err_len) {
    memset(v, 0, sizeof *v);
    size_t n;
    char *text;
    if (mlm_read_file(path, &text, &n, err, err_len) != 0) return -1;
    if (memchr(text, 0, n)) {
        free(text);
        return mlm_fail(err, err_len, "%s: contains a NUL byte: not a vocab.txt", path);
    }
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
    if (n && text[n - 1] != '\n') lines++;
    if (lines == 0) {
        free(text);
        return mlm_fail(err, err_len, "%s: empty vocabulary", path);
    }
    v->tokens = mlm_xmalloc(lines * sizeof(char *), "vocab");
    v->text = text;
    for (char *p = text, *end = text + n; p < end && v->count < lines;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        *nl = 0;
        if (nl > p && nl[-1] == '\r') nl[-1] = 0;
        if (!*p) {
            int line = v->count + 1;
            mlm_vocab_free(v);
            return mlm_fail(err, err_len, "%s:%d: empty token", path, line);
        }
        v->tokens[v->count++] = p;
        p = nl + 1;
    }
    return 0;
}

void mlm_vocab_free(mlm_vocab *v) {
    free(v->tokens);
    free(v->text);
    memset(v, 0, sizeof *v);
}

int mlm_vocab_find(const mlm_vocab *v, const char *token) {
    for (int i = 0; i < v->count; i++)
        if (strcmp(v->tokens[i], token) == 0) return i;
    return -1;
}

int mlm_special_ids_from_vocab(const mlm_vocab *v, int model_vocab_size, mlm_special_ids *out,
                               const char *path, char *err, size_t err_len) {
    if (v->count > model_vocab_size)
        return mlm_fail(err, err_len, "%s: %d tokens do not fit model.vocab_size = %d", path, v->count,
                    model_vocab_size);
    const char *names[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    int ids[5];
    for (int i = 0; i < 5; i++) {
        ids[i] = mlm_vocab_find(v, names[i]);
        if (ids[i] < 0) return mlm_fail(err, err_len, "%s: has no %s token", path, names[i]);
    }
    if (ids[0] != 0)
        return mlm_fail(err, err_len, "%s: [PAD] is id %d, mlmgpu needs it at id 0 (padding)", path, ids[0]);
    *out = (mlm_special_ids){v->count, ids[0], ids[1], ids[2], ids[3], ids[4]};
    return 0;
}
