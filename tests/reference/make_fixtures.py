"""Reference fixtures for the C tests, made with HF transformers and safetensors.

    python3 tests/reference/make_fixtures.py      # writes tests/fixtures/*.safetensors
    python3 tests/reference/make_fixtures.py roberta   # only the RoBERTa ones (bert, python: the others)

tests/fixtures/hf_tiny.safetensors
    A tiny BertForMaskedLM (V=128, d=32, L=2, 4 heads, I=64, P=40, eager attention,
    dropout 0, fp32) and one masked batch, all F32/I32:
      <param name>        every parameter, under its named_parameters() name
                          (the decoder weight is tied to the word embeddings and the
                          decoder bias is cls.predictions.bias, so neither appears twice)
      batch.ids (B,S)     token ids after masking ([MASK] = 4, [PAD] = 0 after length)
      batch.lengths (B)   valid tokens per sequence
      batch.rows (M)      masked positions, flat index b*S + s, ascending
      batch.labels (M)    original ids at those positions
      ref.logits (M,V)    logits at the masked positions, in row order
      ref.loss (1)        HF loss: mean cross-entropy over the masked positions
      grad.<param name>   d ref.loss / d param
      ref.adamw_losses (10)  loss before each of 10 AdamW steps on this batch from the
                          same initial weights (lr 1e-3, betas 0.9/0.999, eps 1e-6,
                          weight decay 0.01 except biases and LayerNorms, grad norm
                          clipped to 1.0); [0] == ref.loss
    metadata "config": the BertConfig arguments as JSON.
    Biases and LayerNorm parameters are perturbed from their HF init (zeros, ones) so
    a swapped or ignored bias or LayerNorm shows up in the comparison.

tests/fixtures/hf_tiny_roberta.safetensors, tests/fixtures/hf_tiny_roberta_model/
    The same for a tiny RobertaForMaskedLM (type_vocab_size 1, layer_norm_eps 1e-5,
    pad_token_id 1: HF numbers positions from 2 and gives padding position 1).
    Sequences are <s> words </s>, padded with <pad> = 1; [MASK] is <mask> = 4 of the
    <s> <pad> </s> <unk> <mask> vocabulary order. Parameters under RobertaForMaskedLM's
    names (lm_head.*; lm_head.decoder.weight/.bias are tied to the word embeddings and
    lm_head.bias). No weight decay on biases and LayerNorms (lm_head.layer_norm too).

tests/fixtures/roberta_bpe/vocab.json, merges.txt
    A byte-level BPE vocabulary of 300 tokens (<s> <pad> </s> <unk> <mask> first, as
    RoBERTa's) trained by HF tokenizers' ByteLevelBPETokenizer on
    tokenizer_sample.txt (invalid UTF-8 replaced), for checkpoints of RoBERTa models
    that transformers must load with AutoTokenizer.

tests/fixtures/python_small.safetensors
    A few tensors of several dtypes written by the Python safetensors package, for the
    reader test: f32 (2,3), i64 (4), bf16 (3), f16 (4), scalar (), empty (0, 3).

Deterministic: seeded, one CPU thread.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))

CONFIG = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
              layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
              initializer_range=0.02, hidden_act="gelu")
LENGTHS = [16, 11, 7]
S = 16
MASKED_PER_SEQ = 3
PAD_ID, MASK_ID, FIRST_WORD_ID = 0, 4, 5
NOISE = 0.1          # std of the perturbation of biases and LayerNorm parameters
ADAMW_STEPS = 10


ROBERTA_CONFIG = dict(CONFIG, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                      eos_token_id=2)
ROBERTA_PAD_ID, ROBERTA_BOS_ID, ROBERTA_EOS_ID = 1, 0, 2


def no_decay(name):
    return "bias" in name or "LayerNorm" in name or "layer_norm" in name


def build_model(roberta=False):
    torch.manual_seed(0)
    if roberta:
        model = RobertaForMaskedLM(RobertaConfig(**ROBERTA_CONFIG, attn_implementation="eager")).float()
    else:
        model = BertForMaskedLM(BertConfig(**CONFIG, attn_implementation="eager")).float()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if no_decay(name):
                p.add_(NOISE * torch.randn(p.shape, generator=gen))
    model.train()   # dropout is 0, so train and eval agree
    return model


def build_batch(roberta=False):
    """ids (B,S) after masking, lengths, flat masked rows (ascending), labels, HF labels.
    RoBERTa's sequences are <s> words </s>, with only the words masked."""
    gen = torch.Generator().manual_seed(2)
    B, V = len(LENGTHS), CONFIG["vocab_size"]
    ids = torch.full((B, S), ROBERTA_PAD_ID if roberta else PAD_ID, dtype=torch.long)
    rows = []
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = torch.randint(FIRST_WORD_ID, V, (n,), generator=gen)
        if roberta:
            ids[b, 0], ids[b, n - 1] = ROBERTA_BOS_ID, ROBERTA_EOS_ID
            picked = 1 + torch.randperm(n - 2, generator=gen)[:MASKED_PER_SEQ].sort().values
        else:
            picked = torch.randperm(n, generator=gen)[:MASKED_PER_SEQ].sort().values
        rows += [b * S + int(s) for s in picked]
    rows = torch.tensor(rows, dtype=torch.long)
    labels = ids.view(-1)[rows].clone()
    ids.view(-1)[rows] = MASK_ID
    hf_labels = torch.full((B * S,), -100, dtype=torch.long)
    hf_labels[rows] = labels
    lengths = torch.tensor(LENGTHS, dtype=torch.long)
    return ids, lengths, rows, labels, hf_labels.view(B, S)


def forward(model, ids, lengths, hf_labels):
    mask = (torch.arange(S)[None, :] < lengths[:, None]).long()
    return model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), labels=hf_labels)


def adamw_losses(model, ids, lengths, hf_labels):
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": 0.01},
              {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, foreach=False)
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad()
        loss = forward(model, ids, lengths, hf_labels).loss
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return torch.tensor(losses, dtype=torch.float32)


def make_hf_tiny(path, roberta=False):
    model = build_model(roberta)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids, lengths, rows, labels, hf_labels = build_batch(roberta)

    out = forward(model, ids, lengths, hf_labels)
    out.loss.backward()
    V = CONFIG["vocab_size"]
    tensors = dict(initial)
    tensors["batch.ids"] = ids.int()
    tensors["batch.lengths"] = lengths.int()
    tensors["batch.rows"] = rows.int()
    tensors["batch.labels"] = labels.int()
    tensors["ref.logits"] = out.logits.detach().reshape(-1, V)[rows].clone()
    tensors["ref.loss"] = out.loss.detach().reshape(1).clone()
    for n, p in model.named_parameters():
        tensors["grad." + n] = p.grad.detach().clone()

    model = build_model(roberta)   # same initial weights, fresh state
    tensors["ref.adamw_losses"] = adamw_losses(model, ids, lengths, hf_labels)
    assert abs(tensors["ref.adamw_losses"][0].item() - out.loss.item()) < 1e-6
    assert all(t.dtype in (torch.float32, torch.int32) for t in tensors.values())

    config = dict(ROBERTA_CONFIG, model_type="roberta") if roberta else CONFIG
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              metadata={"config": json.dumps(config, sort_keys=True)})
    print(f"{path}: {os.path.getsize(path)} bytes, {len(initial)} parameters, "
          f"{len(rows)} masked rows, loss {out.loss.item():.6f}")
    print("parameters:", *initial.keys(), sep="\n  ")


def make_hf_tiny_dir(path, roberta=False):
    """The same initial model as hf_tiny.safetensors, as save_pretrained writes it:
    the import test loads this directory and must reproduce ref.logits."""
    build_model(roberta).save_pretrained(path, safe_serialization=True)
    print(f"{path}: {sorted(os.listdir(path))}")


def make_roberta_bpe(path):
    from tokenizers import ByteLevelBPETokenizer
    text = open(os.path.join(FIXTURES, "tokenizer_sample.txt"), "rb").read().decode("utf-8", errors="replace")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(text.splitlines(), vocab_size=300, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    os.makedirs(path, exist_ok=True)
    tok.save_model(path)
    print(f"{path}: {tok.get_vocab_size()} tokens")


def make_python_small(path):
    tensors = {
        "f32": torch.tensor([[0.5, -1.0, 2.0], [3.0, 4.25, -6.0]], dtype=torch.float32),
        "i64": torch.tensor([-2, 0, 7, 2**40], dtype=torch.int64),
        "bf16": torch.tensor([1.0, -2.5, 3.140625], dtype=torch.bfloat16),
        "f16": torch.tensor([1.0, -0.5, 65504.0, 2.0**-24], dtype=torch.float16),
        "scalar": torch.tensor(42.5, dtype=torch.float32),
        "empty": torch.zeros((0, 3), dtype=torch.float32),
    }
    save_file(tensors, path, metadata={"made_by": "tests/reference/make_fixtures.py"})
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(FIXTURES, exist_ok=True)
    which = set(sys.argv[1:]) or {"bert", "roberta", "python"}
    if "bert" in which:
        make_hf_tiny(os.path.join(FIXTURES, "hf_tiny.safetensors"))
        make_hf_tiny_dir(os.path.join(FIXTURES, "hf_tiny_model"))
    if "roberta" in which:
        make_hf_tiny(os.path.join(FIXTURES, "hf_tiny_roberta.safetensors"), roberta=True)
        make_hf_tiny_dir(os.path.join(FIXTURES, "hf_tiny_roberta_model"), roberta=True)
        make_roberta_bpe(os.path.join(FIXTURES, "roberta_bpe"))
    if "python" in which:
        make_python_small(os.path.join(FIXTURES, "python_small.safetensors"))


if __name__ == "__main__":
    main()
