#!/usr/bin/env python3
"""Checks `mlmgpu fill-mask` output against HF's fill-mask pipeline.

usage: hf_fill_mask.py MODEL_DIR TOP_K OUTPUT_FILE TEXT...

OUTPUT_FILE holds what mlmgpu printed for the texts. For every [MASK] (RoBERTa's
<mask>), mlmgpu's
top-k must be HF's top-k: the same tokens in the same order, except where two
probabilities are within 1e-6 (a tie either may break either way), and every
probability within 1e-4 of HF's. Exit 0 on agreement, 1 otherwise, 77 when
torch or transformers is not installed.

A token is compared as the pipeline's token_str (the token decoded) without blanks;
where that is empty or not one printable line (a newline, a byte of a longer
character), as the vocabulary form, which is what mlmgpu prints then.
"""
import sys

try:
    import torch  # noqa: F401  (transformers imports without it, then the pipeline fails)
    from transformers import pipeline
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)


def parse(path):
    """[[(token, prob), ...] per mask, in order]"""
    masks = []
    for line in open(path, encoding="utf-8"):
        if line.startswith(" [MASK] #") or line.startswith(" <mask> #"):
            masks.append([])
        elif line.startswith("  ") and masks:
            tok, prob = line.split()
            masks[-1].append((tok, float(prob)))
    return masks


def main():
    model_dir, k, out, texts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    fill = pipeline("fill-mask", model=model_dir, tokenizer=model_dir, top_k=k, device="cpu")

    def shown(d):
        s = d["token_str"].strip()
        if not s or any(ord(c) < 0x20 or ord(c) == 0x7F for c in s) or "\ufffd" in s:
            return fill.tokenizer.convert_ids_to_tokens(d["token"])
        return s.replace(" ", "")

    theirs = []
    for t in texts:
        r = fill(t)
        r = [r] if isinstance(r[0], dict) else r
        theirs += [[(shown(d), d["score"]) for d in m] for m in r]
    ours = parse(out)
    if len(ours) != len(theirs):
        print(f"{len(ours)} masks from mlmgpu, {len(theirs)} from HF")
        return 1
    ok = True
    for i, (a, b) in enumerate(zip(ours, theirs)):
        hf = dict(b)
        for j, (tok, p) in enumerate(a):
            q = hf.get(tok)
            tie = j < len(b) and abs(b[j][1] - p) < 1e-6
            if (q is None and not tie) or (q is not None and abs(q - p) > 1e-4) or (tok != b[j][0] and not tie):
                print(f"mask {i}: rank {j}: mlmgpu {tok} {p:.6f}, HF {b[j][0]} {b[j][1]:.6f}")
                ok = False
    print("agree" if ok else "differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
