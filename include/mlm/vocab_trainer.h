/*
 * Vocabulary training, WordPiece or byte-level BPE, the way HF's tokenizers do it.
 *
 * WordPiece, as HF's BertWordPieceTokenizer.train (its WordPiece trainer is BPE
 * underneath): words are counted with the
 * tokenizer's own normaliser and pre-tokenizer (mlm_pretokenize), every character
 * becomes a token (and "##c" for a character inside a word), then the most
 * frequent adjacent pair of tokens is merged, again and again, until the vocabulary
 * has vocab_size tokens or no pair is seen min_frequency times.
 *
 * Order of the vocabulary: [PAD] [UNK] [CLS] [SEP] [MASK], the characters by code
 * point, their "##" forms by code point, then the merged tokens in merge order.
 * (HF's own order of "##" forms follows its hash maps and varies.) Invalid UTF-8
 * bytes are dropped, as the tokenizer drops them.
 *
 * Byte-level BPE, as HF's ByteLevelBPETokenizer.train with special tokens
 * <s> <pad> </s> <unk> <mask> (RoBERTa's): every line of the text, its line ending
 * kept, is split by mlm_bpe_pretokenize; every byte is a symbol. The vocabulary is
 * the special tokens, the 256 byte characters of GPT-2's byte-to-unicode map by
 * code point (all of them, seen or not), then the merged tokens. The output is
 * byte for byte HF's save_model: vocab.json and merges.txt (mlm_vocab_write_bpe).
 * Text that is not UTF-8 is an error, as it is for HF.
 *
 * Both follow HF's BPE trainer step for step: the most frequent pair is merged
 * (ties: the pair of smaller ids), a merge that gives an existing token adds a
 * merge but no token, and the count of a merged pair is not reset (HF's
 * bookkeeping, which matters only when a merge recreates a merged pair). So the
 * result depends only on the word counts, that is on the multiset of lines: not
 * on file order, chunking or thread count (HF's does not either).
 */
#ifndef MLM_VOCAB_TRAINER_H
#define MLM_VOCAB_TRAINER_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MLM_VOCAB_WORDPIECE = 0, MLM_VOCAB_BPE = 1 } mlm_vocab_type;

typedef struct {
    mlm_vocab_type type;
    int vocab_size;         // target size, special tokens included
    int cased;              // WordPiece: 0 lowercases and strips accents (as the uncased tokenizer)
    uint64_t min_frequency; // a pair seen fewer times is never merged (HF's default: 2)
    int limit_alphabet;     // WordPiece: keep only the most frequent characters; 0: all of them
    int threads;            // word-counting threads, >= 1
    int progress;           // progress lines on stderr
} mlm_vocab_train_opts;

typedef struct {
    int count;
    char **tokens;          // (count) in id order, pointing into text
    char *text;
    mlm_vocab_type type;
    int specials;           // special tokens, first in the vocabulary
    int alphabet;           // characters in the initial alphabet
    int continuations;      // "##c" tokens in the initial vocabulary
    int merges;             // merges done (more than merged tokens when a merge gave an existing token)
    int32_t *merge_pairs;   // (2 * merges) the ids merged, in merge order
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

/* Writes dir/vocab.json and dir/merges.txt as HF's BPE save_model does. A dir that
 * does not exist is made as a temporary sibling holding both files, fsynced, then
 * renamed into place: both files appear together or neither does. Into an existing
 * dir, both files are first written in full and fsynced as temporaries (a failure
 * leaves the old pair untouched), then renamed: merges.txt, then vocab.json; only a
 * crash between these two renames leaves a new merges.txt beside an old vocab.json.
 * Returns 0 or -1 with err. */
int mlm_vocab_write_bpe(const mlm_trained_vocab *v, const char *dir, char *err, size_t err_len);

void mlm_trained_vocab_free(mlm_trained_vocab *v);

#endif
