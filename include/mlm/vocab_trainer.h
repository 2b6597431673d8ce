/*
 * WordPiece vocabulary training, the way HF's BertWordPieceTokenizer.train does it
 * (its WordPiece trainer is BPE underneath): words are counted with the
 * tokenizer's own normaliser and pre-tokenizer (mlm_pretokenize), every character
 * becomes a token (and "##c" for a character inside a word), then the most
 * frequent adjacent pair of tokens is merged, again and again, until the vocabulary
 * has vocab_size tokens or no pair is seen min_frequency times.
 *
 * Order of the vocabulary: [PAD] [UNK] [CLS] [SEP] [MASK], the characters by code
 * point, their "##" forms by code point, then the merged tokens in merge order.
 * Ties between pairs of equal count go to the pair of smaller ids, so the result
 * depends only on the word counts: not on file order, chunking or thread count.
 * (HF's own order of "##" forms and ties follows its hash maps and varies.)
 * Invalid UTF-8 bytes are dropped, as the tokenizer drops them.
 */
#ifndef MLM_VOCAB_TRAINER_H
#define MLM_VOCAB_TRAINER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int vocab_size;         // target size, special tokens included
    int cased;              // 0: lowercase and strip accents (as the uncased tokenizer)
    uint64_t min_frequency; // a pair seen fewer times is never merged (HF's default: 2)
    int limit_alphabet;     // keep only the most frequent characters; 0: all of them
    int threads;            // word-counting threads, >= 1
    int progress;           // progress lines on stderr
} mlm_vocab_train_opts;

typedef struct {
    int count;
    char **tokens;          // (count) in id order, pointing into text
    char *text;
    int alphabet;           // characters in the initial alphabet
    int continuations;      // "##c" tokens in the initial vocabulary
    int merges;             // merges done
    uint64_t bytes;         // input bytes read
    uint64_t words;         // words counted, and distinct words
    uint64_t distinct_words;
} mlm_trained_vocab;

/* Trains on inputs: files, or directories read recursively (regular files, in
 * name order). Returns 0, or -1 with err naming the culprit: an unreadable path,
 * input without any word, or a vocab_size below the initial vocabulary. */
int mlm_vocab_train(const char *const *inputs, int ninputs, const mlm_vocab_train_opts *o,
                    mlm_trained_vocab *out, char *err, size_t err_len);

/* Writes one token per line to path: a temporary file, fsynced, renamed into place.
 * Returns 0 or -1 with err. */
int mlm_vocab_write(const mlm_trained_vocab *v, const char *path, char *err, size_t err_len);

void mlm_trained_vocab_free(mlm_trained_vocab *v);

#endif
