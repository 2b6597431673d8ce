/*
 * Word counts of a text corpus for the vocab trainer (word_counts.c):
 * files and directories read in parallel, words from mlm_pretokenize.
 */
#ifndef MLM_WORD_COUNTS_H
#define MLM_WORD_COUNTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *word; // UTF-8, not NUL-terminated
    uint32_t len;
    uint64_t count;
} mlm_word_count;

typedef struct {
    mlm_word_count *items; // (n) sorted by their bytes
    size_t n;
    char *arena;           // the words' bytes
    uint64_t bytes, words; // input bytes read, words counted
    int files;
} mlm_word_counts;

/* Counts the words of inputs (files, or directories read recursively: regular
 * files in name order) with threads threads, normalised as cased says. Returns 0
 * or -1 with err naming an unreadable or unsuitable path. Progress lines on
 * stderr when progress is set. */
int mlm_count_words(const char *const *inputs, int ninputs, int cased, int threads, int progress,
                    mlm_word_counts *out, char *err, size_t err_len);
void mlm_word_counts_free(mlm_word_counts *wc);

#endif
