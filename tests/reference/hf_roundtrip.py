#!/usr/bin/env python3
"""Scores the batch that `mlmgpu eval --dump` wrote with HF transformers.

usage: hf_roundtrip.py CHECKPOINT_DIR DUMP_FILE

Loads CHECKPOINT_DIR with AutoModelForMaskedLM.from_pretrained (and its tokenizer
with AutoTokenizer.from_pretrained), which must give the class config.json names
(BertForMaskedLM or RobertaForMaskedLM, with no missing or unexpected weights) and
BertTokenizerFast or RobertaTokenizerFast with the model's special ids; rebuilds the
masked batch (ids after masking, attention mask from the lengths, labels at the
masked rows), computes HF's loss and compares it with mlmgpu's. When the dump also
holds "logits" (M, V) at the masked rows, they must agree to 1e-4 too. Exit 0 when
the relative difference is below 1e-4, 1 when it is not, 77 when torch/transformers
are not installed (the test reports a skip).
"""
import sys

try:
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForMaskedLM, AutoTokenizer
except ImportError as e:  # the test suite needs no Python; this comparison does
    print(f"skip: {e}")
    sys.exit(77)


def main():
    ckpt, dump = sys.argv[1], sys.argv[2]
    model, info = AutoModelForMaskedLM.from_pretrained(ckpt, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        print(f"loading {ckpt}: {bad}")
        return 1
    want = model.config.architectures[0]
    if type(model).__name__ != want:
        print(f"config.json names {want}, AutoModelForMaskedLM made {type(model).__name__}")
        return 1
    tok = AutoTokenizer.from_pretrained(ckpt)
    tok_class = {"BertForMaskedLM": "BertTokenizer", "RobertaForMaskedLM": "RobertaTokenizer"}[want]
    if type(tok).__name__ not in (tok_class, tok_class + "Fast") or not tok.is_fast:
        print(f"AutoTokenizer made {type(tok).__name__}, expected {tok_class}Fast")
        return 1
    if len(tok) != model.config.vocab_size:
        print(f"tokenizer has {len(tok)} tokens, model {model.config.vocab_size}")
        return 1
    if tok.pad_token_id != model.config.pad_token_id:
        print(f"tokenizer pads with {tok.pad_token_id}, config.json says {model.config.pad_token_id}")
        return 1
    d = load_file(dump)
    ids = torch.from_numpy(d["batch.ids"]).long()
    B, S = ids.shape
    lengths = torch.from_numpy(d["batch.lengths"]).long()
    mask = (torch.arange(S)[None, :] < lengths[:, None]).long()
    labels = torch.full((B * S,), -100, dtype=torch.long)
    labels[torch.from_numpy(d["batch.rows"]).long()] = torch.from_numpy(d["batch.labels"]).long()
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels.view(B, S))
    ours, theirs = float(d["loss"][0]), float(out.loss)
    rel = abs(ours - theirs) / abs(theirs)
    print(f"mlmgpu loss {ours:.7f}, HF loss {theirs:.7f}, relative difference {rel:.2e}")
    worst = 0.0
    if "logits" in d:
        hf = out.logits.reshape(B * S, -1)[torch.from_numpy(d["batch.rows"]).long()]
        worst = float((torch.from_numpy(d["logits"]) - hf).abs().max())
        print(f"logits at the masked rows: max abs difference {worst:.2e}")
    return 0 if rel < 1e-4 and worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
