/*
 * Word counts of a text corpus for the vocab trainer (word_counts.c):
 * files and directories read in parallel, words from mlm_pretokenize (WordPiece)
 * or from mlm_bpe_pretokenize line by line (byte-level BPE).
 */
#ifndef MLM_WORD_COUNTS_H
#define MLM_WORD_COUNTS_H

#include <stddef.h>
#include <stdint.h>

/* How text becomes words: the WordPiece normaliser and pre-tokenizer, uncased or
 * cased; or the byte-level BPE pre-tokenizer, applied to every line with its
 * line ending as HF's train_from_files does (each line is one sequence), the
 * words as raw bytes. */
typedef enum { MLM_SPLIT_UNCASED = 0, MLM_SPLIT_CASED = 1, MLM_SPLIT_BYTE_LEVEL = 2 } mlm_word_split;

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
 * files in name order) with threads threads, split as split says. Returns 0 or -1
 * with err naming an unreadable or unsuitable path, or (MLM_SPLIT_BYTE_LEVEL,
 * where HF refuses such a file too) the file and byte offset of invalid UTF-8.
 * Progress lines on stderr when progress is set. */
int mlm_count_words(const char *const *inputs, int ninputs, mlm_word_split split, int threads, int progress,
                    mlm_word_counts *out, char *err, size_t err_len);
void mlm_word_counts_free(mlm_word_counts *wc);

#endif
