"""Byte-level BPE vocab-trainer fixtures for tests/test_vocab_trainer.c, made with HF
`tokenizers` ByteLevelBPETokenizer.train and save_model.

    python3 tests/reference/make_bpe_trainer_fixtures.py

Inputs:
    tests/fixtures/vocab_corpus/          Perl pod pages (committed, not written here)
    tests/fixtures/bpe_trainer/edge.txt   hard cases for the byte-level split and the
                                          line-by-line reading: runs of spaces and blank
                                          lines, \\r\\n, tabs, trailing spaces, contractions,
                                          digits, '"' and '\\' (JSON escapes), multi-byte
                                          UTF-8, no final newline (written here)
    tests/fixtures/bpe_trainer/ties.txt   random words over two or three letters: many
                                          pairs of equal count, whose order is HF's
                                          tie-break (written here, from a fixed seed)

Outputs, for every case NAME of CASES (input, vocab size, minimum frequency):
    tests/fixtures/bpe_trainer/NAME/vocab.json, merges.txt   HF's files, byte for byte
    tests/fixtures/bpe_trainer/cases.txt  `NAME INPUT VOCAB_SIZE MIN_FREQUENCY` per line,
                                          INPUT relative to tests/fixtures/

Special tokens: <s> <pad> </s> <unk> <mask> (RoBERTa's). HF's result does not depend
on the order of the files (its word counts are a hash map); the script checks that by
training every case again on the files in reverse order.
"""

import os
import random
import sys

from tokenizers import ByteLevelBPETokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "bpe_trainer")
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

CASES = [
    ("perl_400", "vocab_corpus", 400, 2),
    ("perl_2000", "vocab_corpus", 2000, 2),
    ("edge_1", "bpe_trainer/edge.txt", 1000, 1),
    ("edge_2", "bpe_trainer/edge.txt", 300, 2),
    ("ties_1", "bpe_trainer/ties.txt", 600, 1),
    ("ties_3", "bpe_trainer/ties.txt", 400, 3),
]

EDGE = (
    "Hello world!  Hello   world\n"
    "\n"
    "\n"
    "\n"
    "the cat's hat isn't there; they're we've I'm you'll he'd\n"
    "  leading spaces and trailing spaces   \n"
    "tabs\there\t\tand\t \tthere\n"
    "windows line\r\n"
    "windows line\r\n"
    "lone\rcarriage return\n"
    "numbers 12345 678 9 3.14159 1,000,000 2024-01-01\n"
    "quotes \"double\" 'single' back\\slash \\\\ \"\\\"\n"
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00c5ngstr\u00f6m\n"
    "\u4e2d\u6587\u5b57\u7b26 \u65e5\u672c\u8a9e\u306e\u6587\u7ae0 \ud55c\uad6d\uc5b4\n"
    "emoji \U0001F600\U0001F600 \U0001F44D\U0001F3FD ok\n"
    "punctuation... !!! ??? --- *** ((())) [[[]]] {{{}}}\n"
    "mixed123abc abc123 ___ __init__ a_b_c\n"
    "\u00a0non-breaking\u00a0space \u2003em\u2003space\n"
    "control \x01\x02 bytes \x7f del\n"
    "the the the the the the the the\n"
    "last line without a newline   "
)


def write_ties(path):
    """Words over small alphabets, so that many pairs tie."""
    rng = random.Random(12)
    lines = []
    for i in range(400):
        letters = "ab" if i % 3 else "abc"
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) for _ in range(rng.randint(1, 12))]
        lines.append(" ".join(words))
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")


def files_of(inp):
    path = os.path.join(FIX, inp)
    if os.path.isfile(path):
        return [path]
    out = []
    for d, dirs, names in os.walk(path):
        dirs.sort()
        out += [os.path.join(d, n) for n in sorted(names) if not n.startswith(".")]
    return sorted(out)


def train(files, vocab_size, min_frequency, out_dir):
    t = ByteLevelBPETokenizer()
    t.train(files, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS,
            show_progress=False)
    os.makedirs(out_dir, exist_ok=True)
    t.save_model(out_dir)
    return [open(os.path.join(out_dir, n), "rb").read() for n in ("vocab.json", "merges.txt")]


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "edge.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(EDGE)
    write_ties(os.path.join(OUT, "ties.txt"))
    lines = []
    for name, inp, vocab_size, min_frequency in CASES:
        files = files_of(inp)
        got = train(files, vocab_size, min_frequency, os.path.join(OUT, name))
        again = train(list(reversed(files)), vocab_size, min_frequency, os.path.join(OUT, name + ".rev"))
        for n in ("vocab.json", "merges.txt"):
            os.remove(os.path.join(OUT, name + ".rev", n))
        os.rmdir(os.path.join(OUT, name + ".rev"))
        if got != again:
            sys.exit(f"{name}: HF's result depends on the file order")
        merges = got[1].count(b"\n") - 1
        print(f"{name}: {inp}, vocab size {vocab_size}, min frequency {min_frequency}: {merges} merges")
        lines.append(f"{name} {inp} {vocab_size} {min_frequency}\n")
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
