#!/usr/bin/env python3
"""PyTorch side of the GPU comparison: HF BertForMaskedLM training throughput.

Same work as bench/bench_step.c: random full-length sequences (ids in [1000, V)),
15% of the positions labelled (exactly round(0.15 * B * S) per batch, so every
shape is static for torch.compile; 80% of them become [MASK], 10% a random id),
bf16 autocast over fp32 weights, SDPA attention, fused AdamW (lr 1e-4, weight decay
0.01), grad-norm clipping at 1.0, dropout 0.1 or 0. No attention mask is passed:
every sequence is full length, so the mask would change nothing but the kernel
choice, and leaving it out lets SDPA take its fastest path. Batches are made on the
device before the clock starts; the host waits for the device only at the timing
boundaries. Prints one JSON line on stdout with the fields bench_step prints.

variants:
  eager          BertForMaskedLM as users run it (MLM head and loss on every position)
  compile        the same model under torch.compile
  rows_compile   the HF encoder, then the MLM head and the loss on the masked rows
                 only, under torch.compile (the strongest PyTorch variant)

--attention times torch SDPA forward + backward with a key-padding mask instead:
B256 H12 S128 d64 and B64 H12 S512 d64, bf16, half the sequences of a
batch at random shorter lengths, on the cuDNN and memory-efficient backends; one
JSON line per (shape, backend).

  python3 bench/hf_gpu_bench.py --variant rows_compile --config base --seq 128 --batch 256
  python3 bench/hf_gpu_bench.py --attention
  python3 bench/hf_gpu_bench.py --device cpu --tiny [--attention]      # smoke test
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

PEAK_FLOPS = 787e12  # bf16 GEMM 8192^3 on one H100 (docs/PERF.md, "Reference numbers and ceilings")
VOCAB = 30522
MASK_ID = 103
SHAPES = {  # L, d, H, I
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
STEP_SETS = 4  # distinct batches, cycled over the steps


def log(msg):
    print(f"hf_gpu_bench: {msg}", file=sys.stderr, flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def peak_gib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def compiled_graphs():
    """Graphs torch.compile has made so far (a rise inside the timed steps means a recompile)."""
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except (ImportError, KeyError, TypeError):
        return None


def flops_per_token(L, d, I, S, V, m):
    return 6 * L * (4 * d * d + 2 * d * I) + 12 * L * S * d + 6 * m * (d * d + d * V)


# ---------------------------------------------------------------- training step


def make_batch(B, S, V, gen, device):
    """ids (B, S) after masking, labels (B, S) with -100 where unlabelled, and the
    masked rows (M,) with their labels for the rows-only head."""
    ids = torch.randint(1000, V, (B, S), generator=gen, device=device)
    M = round(0.15 * B * S)
    rows = torch.randperm(B * S, generator=gen, device=device)[:M].sort().values
    row_labels = ids.view(-1)[rows].clone()
    action = torch.rand(M, generator=gen, device=device)
    masked = ids.view(-1).clone()
    masked[rows] = torch.where(action < 0.8, torch.full_like(row_labels, MASK_ID),
                               torch.where(action < 0.9, torch.randint(1000, V, (M,), generator=gen,
                                                                       device=device), row_labels))
    labels = torch.full((B * S,), -100, dtype=torch.long, device=device)
    labels[rows] = row_labels
    return {"ids": masked.view(B, S), "labels": labels.view(B, S), "rows": rows, "row_labels": row_labels}


class RowsHead(torch.nn.Module):
    """HF encoder, then the MLM head and the loss on the masked rows only."""

    def __init__(self, mlm):
        super().__init__()
        self.bert, self.cls = mlm.bert, mlm.cls

    def forward(self, ids, rows, row_labels):
        hidden = self.bert(input_ids=ids).last_hidden_state
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
        return F.cross_entropy(self.cls(picked).float(), row_labels)


def build_model(a, device):
    from transformers import BertConfig, BertForMaskedLM

    L, d, H, I = SHAPES[a.config]
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=d, num_hidden_layers=L, num_attention_heads=H,
                     intermediate_size=I, max_position_embeddings=512, hidden_dropout_prob=a.dropout,
                     attention_probs_dropout_prob=a.dropout)
    model = BertForMaskedLM._from_config(cfg, attn_implementation="sdpa")
    return model.float().to(device).train()


def train(a, device):
    import transformers

    torch.manual_seed(a.seed)
    model = build_model(a, device)
    if a.variant == "rows_compile":
        fwd_module = torch.compile(RowsHead(model))

        def loss_of(b):
            return fwd_module(b["ids"], b["rows"], b["row_labels"])
    else:
        fwd_module = torch.compile(model) if a.variant == "compile" else model

        def loss_of(b):
            return fwd_module(input_ids=b["ids"], labels=b["labels"]).loss

    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(a.seed)
    total = a.warmup + a.steps
    sets = [make_batch(a.batch, a.seq, VOCAB, gen, device) for _ in range(min(total, STEP_SETS))]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    loss_sum = torch.zeros((), device=device)
    t0 = time.perf_counter()
    warmup_s = 0.0
    graphs_at_warmup = None
    for step in range(total):
        if step == a.warmup:
            sync(device)
            warmup_s = time.perf_counter() - t0
            loss_sum.zero_()
            graphs_at_warmup = compiled_graphs()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_of(sets[step % len(sets)])
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.clip, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
    sync(device)
    dt = time.perf_counter() - t0

    L, d, H, I = SHAPES[a.config]
    m = round(0.15 * a.batch * a.seq) / (a.batch * a.seq)
    fpt = flops_per_token(L, d, I, a.seq, VOCAB, m)
    tps = a.steps * a.batch * a.seq / dt
    loss = float(loss_sum) / a.steps
    graphs = compiled_graphs()
    out = {
        "impl": "hf_" + a.variant, "device": device.type, "device_name": device_name(device),
        "config": a.config, "L": L, "d": d, "H": H, "I": I, "V": VOCAB, "seq": a.seq, "batch": a.batch,
        "micro": a.batch, "dropout": a.dropout, "steps": a.steps, "warmup": a.warmup,
        "masked_frac": round(m, 5), "step_ms": round(dt / a.steps * 1e3, 3),
        "seq_per_s": round(a.steps * a.batch / dt, 1), "tokens_per_s": round(tps),
        "flops_per_token": fpt, "tflops": round(fpt * tps / 1e12, 2), "mfu": round(fpt * tps / PEAK_FLOPS, 4),
        "peak_gib": round(peak_gib(device), 3), "warmup_s": round(warmup_s, 2),
        "loss": round(loss, 4) if math.isfinite(loss) else None,
        "graphs": graphs, "recompiled_while_timed": graphs != graphs_at_warmup,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    print(json.dumps(out), flush=True)
    return 0 if math.isfinite(loss) else 1


# ---------------------------------------------------------------- attention


def attention_inputs(B, H, S, dh, gen, device, dtype):
    q, k, v = (torch.randn(B, H, S, dh, generator=gen, device=device, dtype=dtype).requires_grad_()
               for _ in range(3))
    lengths = torch.full((B,), S, device=device)
    short = torch.randperm(B, generator=gen, device=device)[: B // 2]
    lengths[short] = torch.randint(1, S, (B // 2,), generator=gen, device=device)
    keep = torch.arange(S, device=device)[None, :] < lengths[:, None]  # (B, S) key j valid
    return q, k, v, keep, torch.randn(B, H, S, dh, generator=gen, device=device, dtype=dtype)


def time_sdpa(backend, q, k, v, mask, dout, device, warmup, reps):
    from torch.nn.attention import sdpa_kernel

    def run():
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        q.grad = k.grad = v.grad = None
        out.backward(dout)

    for _ in range(warmup):
        run()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def attention(a, device):
    from torch.nn.attention import SDPBackend

    shapes = [(4, 2, 16, 8), (2, 2, 32, 8)] if a.tiny else [(256, 12, 128, 64), (64, 12, 512, 64)]
    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}
    if device.type == "cpu":
        backends["math"] = SDPBackend.MATH  # the smoke test needs one that runs on the CPU
    dtype = torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(a.seed)
    rc = 0
    for B, H, S, dh in shapes:
        q, k, v, keep, dout = attention_inputs(B, H, S, dh, gen, device, dtype)
        # key-padding mask as SDPA takes it, broadcast over heads and queries: boolean
        # (True = attend) first, an additive bias if a backend refuses booleans
        masks = {"bool": keep[:, None, None, :],
                 "additive": torch.zeros(B, 1, 1, S, device=device, dtype=dtype).masked_fill(
                     ~keep[:, None, None, :], float("-inf"))}
        flops = 4 * B * H * S * S * dh * 3.5  # fwd 2 matmuls, bwd 2.5x fwd; nominal at full S
        for name, backend in backends.items():
            row = {"impl": "torch_sdpa", "device": device.type, "device_name": device_name(device),
                   "backend": name, "B": B, "H": H, "S": S, "dh": dh, "dtype": "bf16",
                   "mean_len": round(float(keep.sum(1).float().mean()), 1)}
            errors = []
            for mask_kind, mask in masks.items():
                with warnings.catch_warnings(record=True) as why:  # SDPA says why a backend declined
                    warnings.simplefilter("always")
                    try:
                        ms = time_sdpa(backend, q, k, v, mask, dout, device, a.warmup, a.reps)
                        row.update(mask=mask_kind, ms=round(ms, 4), tflops_nominal=round(flops / ms / 1e9, 1))
                        break
                    except RuntimeError as e:
                        reasons = " | ".join(str(w.message).splitlines()[0][:160] for w in why[:3])
                        errors.append(f"{mask_kind}: {str(e).splitlines()[0][:120]} [{reasons}]")
            if "ms" not in row:
                row["error"] = "; ".join(errors)
                rc = 1 if device.type == "cuda" else rc
            print(json.dumps(row), flush=True)
    return rc


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--variant", choices=["eager", "compile", "rows_compile"], default="rows_compile")
    p.add_argument("--config", choices=sorted(SHAPES), default="base")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="grad-norm clip, 0 = off (default 1.0)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps; they hold the compilation")
    p.add_argument("--reps", type=int, default=20, help="--attention: timed repetitions (median)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test shapes: config tiny, S32, batch 4, 2 steps (attention: tiny shapes)")
    p.add_argument("--attention", action="store_true", help="time SDPA with a key-padding mask instead")
    a = p.parse_args()
    if a.tiny:
        a.config, a.seq, a.batch, a.steps, a.warmup, a.reps = "tiny", 32, 4, 2, 1, 3
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log("error: --device cuda: torch sees no CUDA device")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast, if any
    torch.backends.cudnn.allow_tf32 = True
    return attention(a, device) if a.attention else train(a, device)


if __name__ == "__main__":
    sys.exit(main())
