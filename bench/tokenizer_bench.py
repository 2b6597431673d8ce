"""Tokenizer speed and parity against HF, one thread each.

    python3 bench/tokenizer_bench.py --bin build/mlmgpu --vocab VOCAB FILE...

VOCAB is a vocab.txt (WordPiece: HF BertWordPieceTokenizer, uncased unless
--cased) or a vocab.json / a directory with vocab.json + merges.txt (byte-level
BPE: HF ByteLevelBPETokenizer). The files are read as lines (decoded with
errors="replace", as mlmgpu reads them); HF encodes them with encode_batch on one
thread (RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false), mlmgpu with
`mlmgpu tokenize --no-special` on the same lines (its output to a pipe it reads,
the best of --repeat runs each). Prints tokens/s of both, their ratio, and how
many lines got different ids (HF's ids are the reference: 0 is the goal).

Special tokens written in the text are matched differently by HF's two BPE
classes (RobertaTokenizerFast strips the space before <mask>), so lines holding
one are left out of the parity count.
"""

import argparse
import os
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer  # noqa: E402

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"]


def load_hf(vocab, cased):
    if os.path.isdir(vocab):
        vocab = os.path.join(vocab, "vocab.json") if os.path.exists(os.path.join(vocab, "vocab.json")) \
            else os.path.join(vocab, "vocab.txt")
    if vocab.endswith(".json"):
        return "bpe", ByteLevelBPETokenizer(vocab, os.path.join(os.path.dirname(vocab), "merges.txt"))
    return "wordpiece", BertWordPieceTokenizer(vocab, lowercase=not cased, strip_accents=not cased)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/mlmgpu")
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--cased", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    raw = b"".join(open(f, "rb").read().rstrip(b"\n") + b"\n" for f in args.files)
    lines = raw.split(b"\n")[:-1]
    texts = [l.decode("utf-8", errors="replace") for l in lines]
    kind, hf = load_hf(args.vocab, args.cased)

    best_hf = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        enc = hf.encode_batch(texts, add_special_tokens=False)
        best_hf = min(best_hf, time.perf_counter() - t)
    hf_ids = [e.ids for e in enc]
    ntok = sum(len(i) for i in hf_ids)

    cmd = [args.bin, "tokenize", "--vocab", args.vocab, "--no-special"] + (["--cased"] if args.cased else [])
    best_c = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        out = subprocess.run(cmd, input=raw, stdout=subprocess.PIPE, check=True).stdout
        best_c = min(best_c, time.perf_counter() - t)
    c_ids = [[int(x) for x in l.split()] for l in out.decode().split("\n")[:-1]]

    assert len(c_ids) == len(hf_ids), (len(c_ids), len(hf_ids))
    compared = differ = 0
    for text, a, b in zip(texts, c_ids, hf_ids):
        if any(s in text for s in SPECIALS):
            continue
        compared += 1
        differ += a != b
    print("%s, %d lines, %d bytes, %d tokens (HF)" % (kind, len(lines), len(raw), ntok))
    print("HF %s encode_batch, 1 thread: %.3f s, %.0f tokens/s"
          % ("ByteLevelBPETokenizer" if kind == "bpe" else "BertWordPieceTokenizer", best_hf, ntok / best_hf))
    print("mlmgpu tokenize:                   %.3f s, %.0f tokens/s  (x%.2f HF; process start and printing included)"
          % (best_c, ntok / best_c, best_hf / best_c))
    print("lines with ids different from HF: %d of %d compared" % (differ, compared))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
