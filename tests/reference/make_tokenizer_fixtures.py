"""Tokenizer and vocab-trainer fixtures for tests/test_tokenizer.c and
tests/test_vocab_trainer.c, made with HF `tokenizers` (the Rust pipeline behind
BertTokenizerFast).

    python3 tests/reference/make_tokenizer_fixtures.py [--retrain-cased]

Inputs (committed, not written here):
    tests/fixtures/tokenizer_sample.txt   ~100 lines of hard cases, raw bytes (some
                                          lines are invalid UTF-8 on purpose)
    tests/fixtures/vocab_corpus/          Perl pod pages (pod2text), the trainer corpus
    tests/fixtures/vocab_heldout.txt      more pod pages, held out from training
    data/sample/vocab.txt                 the bert-base-uncased vocabulary

Outputs, plain text:
    tokenizer_vocab_cased.txt             a 2000-token cased vocabulary trained by HF
                                          BertWordPieceTokenizer(lowercase=False) on the
                                          corpus and the sample. HF's trainer is not
                                          deterministic (hash-map order), so it is only
                                          trained when missing or with --retrain-cased.
    tokenizer_sample.{uncased,cased}.ids  per sample line (split on \\n only, decoded with
                                          errors="replace"), its ids without special tokens
    tokenizer_sample.{uncased,cased}.special.ids
                                          the first SPECIAL_LINES lines with [CLS] ... [SEP]
    tokenizer_sample.{uncased,cased}.words
                                          per sample line, its words after normalisation and
                                          pre-tokenisation, separated by spaces (no vocabulary
                                          involved: [UNK] cannot hide a difference here)
    tokenizer_fuzz.txt                    random byte strings, mostly invalid UTF-8:
                                          `hex bytes<TAB>uncased ids` per line
    tokenizer_codepoints.txt              every code point c (but surrogates) in context
                                          "a" c "b", normalised and pre-tokenized, hashed per
                                          block of 4096 code points: `mode first-cp fnv1a64`
                                          (see codepoint_block_hash); --dump U+XXXX prints a
                                          block's pre-tokens to find what differs
    tokenizer_mark_pairs.txt              every pair of combining marks (a, b), as "x" a b "y"
                                          through the uncased pipeline (NFD reorders marks):
                                          `a fnv1a64` per line, hashing its pairs with every b
                                          of the list in order, serialised as for the code points
    vocab_trainer_hf_stats.txt            HF's vocab (size 2000, min_frequency 2, no alphabet
                                          limit) trained on the corpus, measured on the
                                          held-out text: tokens per word and [UNK] rate,
                                          the mean over TRAIN_RUNS trainings
"""

import argparse
import os
import random
import statistics
import sys
import unicodedata

from tokenizers import BertWordPieceTokenizer, normalizers, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures")
SAMPLE = os.path.join(FIX, "tokenizer_sample.txt")
UNCASED_VOCAB = os.path.join(ROOT, "data", "sample", "vocab.txt")
CASED_VOCAB = os.path.join(FIX, "tokenizer_vocab_cased.txt")
CORPUS = os.path.join(FIX, "vocab_corpus")
HELDOUT = os.path.join(FIX, "vocab_heldout.txt")
SPECIAL_LINES = 12
FUZZ_LINES = 400
TRAIN_VOCAB = 2000
TRAIN_MIN_FREQUENCY = 2
TRAIN_RUNS = 3
NO_LIMIT = 1 << 30  # limit_alphabet: the wrapper takes no None; larger than any alphabet
BLOCK = 4096
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokenizer(vocab_path, cased):
    tok = BertWordPieceTokenizer(vocab_path, lowercase=not cased, strip_accents=not cased,
                                 clean_text=True, handle_chinese_chars=True)
    lines = sum(1 for _ in open(vocab_path, encoding="utf-8"))
    # transformers 5 silently ignores vocab files in some constructors: make sure this one did not
    assert tok.get_vocab_size() == lines, (vocab_path, tok.get_vocab_size(), lines)
    return tok


def sample_lines():
    data = open(SAMPLE, "rb").read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.decode("utf-8", errors="replace") for line in lines]


def corpus_files():
    files = []
    for d, _, names in os.walk(CORPUS):
        files += [os.path.join(d, n) for n in names]
    return sorted(files, key=lambda p: os.path.relpath(p, CORPUS).encode())


def train_cased_vocab():
    text_files = corpus_files()
    tok = BertWordPieceTokenizer(lowercase=False, strip_accents=False, clean_text=True,
                                 handle_chinese_chars=True)
    lines = [line for f in text_files for line in open(f, encoding="utf-8")] + sample_lines()
    tok.train_from_iterator(lines, vocab_size=TRAIN_VOCAB, min_frequency=TRAIN_MIN_FREQUENCY,
                            limit_alphabet=NO_LIMIT, special_tokens=SPECIALS, show_progress=False)
    write_vocab(tok, CASED_VOCAB)


def write_vocab(tok, path):
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t, _ in vocab)


def write_ids(path, rows):
    with open(path, "w") as f:
        f.writelines(" ".join(map(str, ids)) + "\n" for ids in rows)


def sample_fixtures():
    lines = sample_lines()
    for name, vocab, cased in (("uncased", UNCASED_VOCAB, False), ("cased", CASED_VOCAB, True)):
        tok = tokenizer(vocab, cased)
        plain = [tok.encode(line, add_special_tokens=False).ids for line in lines]
        special = [tok.encode(line).ids for line in lines[:SPECIAL_LINES]]
        write_ids(os.path.join(FIX, f"tokenizer_sample.{name}.ids"), plain)
        write_ids(os.path.join(FIX, f"tokenizer_sample.{name}.special.ids"), special)
        split = pipeline(cased)
        with open(os.path.join(FIX, f"tokenizer_sample.{name}.words"), "w", encoding="utf-8") as f:
            f.writelines(" ".join(split(line)) + "\n" for line in lines)


def fuzz_string(rng):
    """Bytes biased towards near-UTF-8: ASCII, valid characters, lone lead and
    continuation bytes, truncated sequences, overlongs, surrogates."""
    pieces = [b"a", b"Z", b" ", b".", b"\t", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80",
              b"\xe4\xb8\xad", b"\xcc\x81", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3", b"\x80", b"\xbf",
              b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\xfe", b"\xf5", b"\x00",
              b"[MASK]", b"\xef\xbf\xbd"]
    out = b""
    for _ in range(rng.randrange(0, 24)):
        out += rng.choice(pieces) if rng.random() < 0.7 else bytes([rng.randrange(256)])
    return out


def fuzz_fixture():
    rng = random.Random(1234)
    tok = tokenizer(UNCASED_VOCAB, False)
    with open(os.path.join(FIX, "tokenizer_fuzz.txt"), "w") as f:
        for _ in range(FUZZ_LINES):
            raw = fuzz_string(rng)
            ids = tok.encode(raw.decode("utf-8", errors="replace"), add_special_tokens=False).ids
            f.write(raw.hex() + "\t" + " ".join(map(str, ids)) + "\n")


def pipeline(cased):
    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                      strip_accents=not cased, lowercase=not cased)
    pre = pre_tokenizers.BertPreTokenizer()
    return lambda s: [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(s))]


def serialise(split, texts):
    """Each text's pre-tokens: every word's UTF-8 then 0x01, then 0x02 after the text."""
    out = bytearray()
    for text in texts:
        for w in split(text):
            out += w.encode("utf-8") + b"\x01"
        out += b"\x02"
    return out


def fnv1a(data):
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def codepoint_block_hash(split, first):
    cps = [cp for cp in range(first, min(first + BLOCK, 0x110000)) if not 0xD800 <= cp < 0xE000]
    return fnv1a(serialise(split, ("a" + chr(cp) + "b" for cp in cps)))


def codepoint_fixture():
    with open(os.path.join(FIX, "tokenizer_codepoints.txt"), "w") as f:
        for mode, cased in (("uncased", False), ("cased", True)):
            split = pipeline(cased)
            for first in range(0, 0x110000, BLOCK):
                f.write(f"{mode} {first:06X} {codepoint_block_hash(split, first):016x}\n")


def mark_pairs_fixture():
    marks = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000 and unicodedata.combining(chr(cp))]
    split = pipeline(False)
    with open(os.path.join(FIX, "tokenizer_mark_pairs.txt"), "w") as f:
        for a in marks:
            h = fnv1a(serialise(split, ("x" + a + b + "y" for b in marks)))
            f.write(f"{ord(a):04X} {h:016x}\n")


def dump_block(cp_text):
    first = int(cp_text.replace("U+", ""), 16) // BLOCK * BLOCK
    for mode, cased in (("uncased", False), ("cased", True)):
        split = pipeline(cased)
        for cp in range(first, first + BLOCK):
            if not 0xD800 <= cp < 0xE000:
                print(mode, f"{cp:04X}", " ".join(".".join(f"{ord(c):X}" for c in w)
                                                   for w in split("a" + chr(cp) + "b")))


def heldout_stats(tok):
    words = tokens = unk = 0
    unk_id = tok.token_to_id("[UNK]")
    for line in open(HELDOUT, encoding="utf-8"):
        ids = tok.encode(line, add_special_tokens=False).ids
        words += len(tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(line)))
        tokens += len(ids)
        unk += ids.count(unk_id)
    return tokens / words, unk / tokens, words


def trainer_stats():
    rows = []
    for mode, cased in (("uncased", False), ("cased", True)):
        tpw, unk = [], []
        for _ in range(TRAIN_RUNS):
            tok = BertWordPieceTokenizer(lowercase=not cased, strip_accents=not cased)
            tok.train(corpus_files(), vocab_size=TRAIN_VOCAB, min_frequency=TRAIN_MIN_FREQUENCY,
                      limit_alphabet=NO_LIMIT, special_tokens=SPECIALS, show_progress=False)
            assert tok.get_vocab_size() == TRAIN_VOCAB
            t, u, words = heldout_stats(tok)
            tpw.append(t)
            unk.append(u)
        rows.append(f"{mode} vocab_size {TRAIN_VOCAB} min_frequency {TRAIN_MIN_FREQUENCY} "
                    f"heldout_words {words} tokens_per_word {statistics.mean(tpw):.6f} "
                    f"unk_rate {statistics.mean(unk):.6f} tokens_per_word_spread "
                    f"{max(tpw) - min(tpw):.6f}\n")
    with open(os.path.join(FIX, "vocab_trainer_hf_stats.txt"), "w") as f:
        f.writelines(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--retrain-cased", action="store_true", help="train tokenizer_vocab_cased.txt anew")
    ap.add_argument("--dump", metavar="U+XXXX", help="print the pre-tokens of the block holding a code point")
    args = ap.parse_args()
    if args.dump:
        dump_block(args.dump)
        return
    if args.retrain_cased or not os.path.exists(CASED_VOCAB):
        train_cased_vocab()
    sample_fixtures()
    fuzz_fixture()
    codepoint_fixture()
    mark_pairs_fixture()
    trainer_stats()
    print("wrote tokenizer fixtures to", FIX, file=sys.stderr)


if __name__ == "__main__":
    main()
