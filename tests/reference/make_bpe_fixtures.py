"""Byte-level BPE (RoBERTa) tokenizer fixtures for tests/test_bpe.c, made with HF
`tokenizers` (ByteLevelBPETokenizer) and transformers (RobertaTokenizerFast).

    python3 tests/reference/make_bpe_fixtures.py [--retrain]

Inputs (committed, not written here):
    tests/fixtures/vocab_corpus/          Perl pod pages, the training corpus
    tests/fixtures/vocab_heldout.txt      more pod pages, held out from training

Outputs, plain text:
    bpe_vocab/{vocab.json,merges.txt}     a byte-level BPE vocabulary (8000 asked, the
                                          corpus gives ~4200) trained by HF
                                          ByteLevelBPETokenizer with special tokens
                                          <s> <pad> </s> <unk> <mask> (ids 0..4). HF's
                                          trainer is not deterministic, so it is only
                                          trained when missing or with --retrain.
    bpe_cases.txt                         hand-written edge cases, then random byte
                                          strings (mostly invalid UTF-8): per line
                                          `hex bytes<TAB>ids<TAB>ids with <s> </s><TAB>words`,
                                          from RobertaTokenizerFast on bytes.decode("utf-8",
                                          errors="replace"), add_special_tokens False / True;
                                          words: the ByteLevel pre-tokenizer's pre-tokens of
                                          the whole text (special tokens not recognised), each
                                          as the hex of its UTF-8 bytes, space-separated (no
                                          vocabulary involved: a merge cannot hide a
                                          difference here).
                                          Where the text holds no special token,
                                          ByteLevelBPETokenizer must agree (asserted here).
    bpe_heldout.ids                       vocab_heldout.txt tokenized whole by
                                          ByteLevelBPETokenizer (no special tokens added),
                                          ids 20 per line
    bpe_codepoints.txt                    the class the pre-tokenizer's regex gives every
                                          code point c but surrogates, found from how
                                          "a" c, "1" c and "!" c split: L (joins a letter),
                                          N (joins a digit), O (joins "!": neither space,
                                          letter nor number), S (joins none: whitespace).
                                          Runs: `first last class`, hex.

The <mask> token: roberta-base's tokenizer.json (and transformers 4's
RobertaTokenizerFast) give <mask> lstrip=True, so "is <mask>" does not keep the
space; transformers 5 built from vocab.json + merges.txt alone drops that flag.
mlmgpu follows roberta-base, so the reference here is built with it set.
"""

import argparse
import glob
import json
import os
import random

from tokenizers import AddedToken, ByteLevelBPETokenizer, pre_tokenizers
from transformers import RobertaTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures")
VOCAB_DIR = os.path.join(FIX, "bpe_vocab")
CORPUS = os.path.join(FIX, "vocab_corpus")
HELDOUT = os.path.join(FIX, "vocab_heldout.txt")
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
VOCAB_SIZE = 8000
FUZZ_LINES = 400

# Hand-written edge cases (bytes). Each is one text; newlines inside are part of it.
CASES = [
    b"Hello world",
    b"The capital of France is <mask>.",
    b"The capital is <mask>.",
    b"The capital is<mask>.",
    b"a  <mask>  b",
    b"a\n\t <mask>\n",
    b"a\xe3\x80\x80<mask>",            # U+3000 before <mask>
    b"a\xc2\x85<mask>b",              # NEL before <mask>
    b"a\x1c<mask>",                   # file separator before <mask>
    b"<mask><mask> <mask>",
    b"<s>x</s> </s><s> <pad> <unk>",
    b"<s <mask <mas k> <MASK> </ s>",
    b"    leading spaces",
    b"trailing spaces    ",
    b"a\n\nb\n\n\nc",
    b"\n\n\n",
    b"   \n   \n x",
    b" \t\t x\ty\r\nz",
    b"it's I'm we've they'll she'd you're don't",
    b"IT'S I'M WE'VE 'S 'T 're ''s '''",
    b"x's y'sa 's's",
    b"numbers 123 4567890 3.14 1,000,000 \xd9\xa3\xd9\xa4 \xe2\x85\xa2",
    b"abc123def 12abc ab12 1a2b3c",
    b"!!! ?!? ... -- a--b (x) [y] {z} @#$%^&*",
    b"email@example.com https://example.com/a?b=c&d=e#f",
    b"def f(x):\n    return x ** 2  # square\n",
    b"emoji \xf0\x9f\x98\x80\xf0\x9f\x98\x83 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd a\xf0\x9f\x98\x80b",
    b"family \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 flag \xf0\x9f\x87\xab\xf0\x9f\x87\xb7",
    b"cafe\xcc\x81 caf\xc3\xa9 e\xcc\x81\xcc\x82\xcc\x83 a\xcc\x88\xcc\x88\xcc\x88\xcc\x88",
    b"\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
    b"\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xce\xb1\xce\xb2\xce\xb3 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a",
    b"\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\x82\xe0\xa4\xa6\xe0\xa5\x80 \xe0\xb8\xa0\xe0\xb8\xb2\xe0\xb8\xa9\xe0\xb8\xb2\xe0\xb9\x84\xe0\xb8\x97\xe0\xb8\xa2",
    b"ctrl \x00 \x01\x02 \x07 \x1b[31m \x7f end",
    b"zero\xe2\x80\x8bwidth\xe2\x80\x8cjoin \xef\xbb\xbfbom soft\xc2\xadhyphen",
    b"nbsp\xc2\xa0x ideo\xe3\x80\x80x thin\xe2\x80\x89x line\xe2\x80\xa8x para\xe2\x80\xa9x nel\xc2\x85x",
    b"vt\x0bff\x0cfs\x1cgs\x1drs\x1eus\x1f",
    b"invalid \xff \xfe\xfd x\xc3 \xc3(",
    b"trunc \xe2\x82 \xe2\x82\xac \xf0\x9f\x98 \xf0\x9f",
    b"overlong \xc0\xaf \xe0\x80\xaf \xf0\x80\x80\xaf surrogate \xed\xa0\x80 \xed\xbf\xbf max \xf4\x8f\xbf\xbf over \xf4\x90\x80\x80",
    b"cont \x80\x80\x80 \xbf lone",
    b"\xef\xbf\xbd replacement \xef\xbf\xbd\xef\xbf\xbd",
    b"supercalifragilisticexpialidocious" * 8,
    b"a" * 1000,
    b"ab" * 700 + b" " + b"x" * 3000,
    b"\xf0\x9f\x98\x80" * 300,
    b" " * 500 + b"x" + b"\n" * 300,
    b"private \xee\x80\x80 \xf3\xb0\x80\x80 unassigned \xf0\xb0\x80\x80 \xe0\xb8\xbb nonchar \xef\xbf\xbf",
    b"math \xf0\x9d\x90\x80\xf0\x9d\x90\x81 \xe2\x88\x91x\xc2\xb2 \xc2\xbd \xe2\x91\xa0",
    b"",
    b" ",
    b"'",
    b"'s",
    b"<mask>",
]


def corpus_files():
    return sorted(glob.glob(os.path.join(CORPUS, "**", "*.txt"), recursive=True))


def train_vocab():
    tok = ByteLevelBPETokenizer()
    tok.train(corpus_files(), vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIALS)
    os.makedirs(VOCAB_DIR, exist_ok=True)
    tok.save_model(VOCAB_DIR)


def tokenizers():
    vocab, merges = os.path.join(VOCAB_DIR, "vocab.json"), os.path.join(VOCAB_DIR, "merges.txt")
    bl = ByteLevelBPETokenizer(vocab, merges)
    rt = RobertaTokenizerFast(vocab, merges,
                              mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False,
                                                    special=True))
    n = len(json.load(open(vocab, encoding="utf-8")))
    # transformers 5 silently ignores vocab files in some constructors: make sure these did not
    assert bl.get_vocab_size() == n and len(rt) == n, (bl.get_vocab_size(), len(rt), n)
    ids = rt("The capital is <mask>.").input_ids
    assert rt.convert_ids_to_tokens(ids)[-3] == "<mask>" and rt.convert_ids_to_tokens(ids)[-4] == "Ġis", ids
    return bl, rt


def fuzz_string(rng):
    pieces = [b" ", b"  ", b"\n", b"\t", b"a", b"Zz", b"'s", b"'", b"1", b"42", b"!", b"<mask>", b" <mask>",
              b"<s>", b"\xc3\xa9", b"e\xcc\x81", b"\xe2\x82\xac", b"\xe2\x82", b"\xf0\x9f\x98\x80", b"\xf0\x9f",
              b"\xed\xa0\x80", b"\xc0\xaf", b"\x80", b"\xff", b"\xe4\xb8\xad", b"\xc2\xa0", b"\xe3\x80\x80",
              b"\x00", b"\x1c", b"\xc2\x85"]
    out = b""
    for _ in range(rng.randrange(1, 24)):
        out += rng.choice(pieces) if rng.random() < 0.7 else bytes([rng.randrange(256)])
    return out


def words_hex(pretok, text):
    back = {c: b for b, c in byte_chars().items()}
    return " ".join(bytes(back[c] for c in w).hex() for w, _ in pretok.pre_tokenize_str(text))


def byte_chars():
    """GPT-2's byte -> character map, as HF's ByteLevel.alphabet() has it (checked)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    m, n = {}, 0
    for b in range(256):
        if b in keep:
            m[b] = chr(b)
        else:
            m[b] = chr(256 + n)
            n += 1
    assert set(m.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    return m


def cases_fixture(bl, rt):
    pretok = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rng = random.Random(4321)
    texts = CASES + [fuzz_string(rng) for _ in range(FUZZ_LINES)]
    agree = compared = 0
    with open(os.path.join(FIX, "bpe_cases.txt"), "w") as f:
        for raw in texts:
            text = raw.decode("utf-8", errors="replace")
            plain = rt(text, add_special_tokens=False).input_ids
            full = rt(text).input_ids
            if not any(s in text for s in SPECIALS):
                compared += 1
                agree += bl.encode(text).ids == plain
                assert bl.encode(text).ids == plain, raw
            f.write("%s\t%s\t%s\t%s\n" % (raw.hex(), " ".join(map(str, plain)), " ".join(map(str, full)),
                                          words_hex(pretok, text)))
    print("bpe_cases.txt: %d texts, ByteLevelBPETokenizer agrees on %d/%d without special tokens"
          % (len(texts), agree, compared))


def heldout_fixture(bl):
    text = open(HELDOUT, "rb").read().decode("utf-8", errors="replace")
    ids = bl.encode(text).ids
    with open(os.path.join(FIX, "bpe_heldout.ids"), "w") as f:
        for i in range(0, len(ids), 20):
            f.write(" ".join(map(str, ids[i:i + 20])) + "\n")
    print("bpe_heldout.ids: %d ids" % len(ids))


def codepoint_fixture():
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False)

    def pieces(s):
        return len(bl.pre_tokenize_str(s))

    runs = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        if pieces("a" + ch) == 1:
            c = "L"
        elif pieces("1" + ch) == 1:
            c = "N"
        elif pieces("!" + ch) == 1:
            c = "O"
        else:
            c = "S"
        if runs and runs[-1][2] == c and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        elif runs and runs[-1][2] == c and runs[-1][1] == 0xD7FF and cp == 0xE000:
            runs[-1][1] = cp  # across the surrogates
        else:
            runs.append([cp, cp, c])
    with open(os.path.join(FIX, "bpe_codepoints.txt"), "w") as f:
        for a, b, c in runs:
            f.write("%X %X %s\n" % (a, b, c))
    print("bpe_codepoints.txt: %d runs" % len(runs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    if args.retrain or not os.path.exists(os.path.join(VOCAB_DIR, "vocab.json")):
        train_vocab()
    bl, rt = tokenizers()
    cases_fixture(bl, rt)
    heldout_fixture(bl)
    codepoint_fixture()


if __name__ == "__main__":
    main()
