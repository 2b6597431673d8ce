#!/usr/bin/env python3
"""PyTorch eager fp32 masked-LM training throughput on the CPU, for bench/cpu_bench.sh.

Trains HF transformers BertForMaskedLM (eager attention, fp32) with AdamW on the
same shards, shapes, batch and thread count as the mlmgpu run it is compared with,
and prints one line: `torch <variant> tokens_per_s <N>`.

variants:
  hf           BertForMaskedLM as users run it: MLM head and loss on every position
  masked_rows  the HF encoder, then the MLM head and loss on the masked rows only
               (what mlmgpu does; the strongest PyTorch variant)
"""
import argparse
import time

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM


def read_shard(path):
    raw = open(path, "rb").read()
    seq_len = int.from_bytes(raw[16:20], "little")
    count = int.from_bytes(raw[24:32], "little")
    width = int.from_bytes(raw[12:16], "little")
    dtype = np.uint16 if width == 2 else np.uint32
    return np.frombuffer(raw[64:], dtype=dtype).reshape(count, seq_len).astype(np.int64)


def mask_batch(ids, gen, vocab):
    ids = ids.clone()
    special = (ids == 0) | (ids == 101) | (ids == 102)
    sel = (torch.rand(ids.shape, generator=gen) < 0.15) & ~special
    labels = torch.where(sel, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen)
    ids[sel & (r < 0.8)] = 103
    rnd = sel & (r >= 0.8) & (r < 0.9)
    ids[rnd] = torch.randint(1000, vocab, (int(rnd.sum()),), generator=gen)
    return ids, labels


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shard", required=True)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", choices=["hf", "masked_rows"], default="hf")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = torch.from_numpy(read_shard(a.shard))
    S = data.shape[1]
    cfg = BertConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                     num_attention_heads=a.heads, intermediate_size=a.ffn, max_position_embeddings=512,
                     hidden_dropout_prob=a.dropout, attention_probs_dropout_prob=a.dropout)
    model = BertForMaskedLM._from_config(cfg, attn_implementation="eager")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    lossf = torch.nn.CrossEntropyLoss()
    t0 = None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            t0 = time.perf_counter()
        first = (step * a.batch) % (data.shape[0] - a.batch)
        ids, labels = mask_batch(data[first:first + a.batch], gen, a.vocab)
        attn = (data[first:first + a.batch] != 0).long()
        if a.variant == "hf":
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        else:
            hidden = model.bert(input_ids=ids, attention_mask=attn).last_hidden_state
            rows = labels.view(-1) != -100
            logits = model.cls(hidden.reshape(-1, a.hidden)[rows])
            loss = lossf(logits, labels.view(-1)[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    dt = time.perf_counter() - t0
    print(f"torch {a.variant} tokens_per_s {a.steps * a.batch * S / dt:.1f} loss {float(loss):.3f}")


if __name__ == "__main__":
    main()
