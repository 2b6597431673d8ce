#!/usr/bin/env bash
# CPU training throughput, side by side in one run: mlmgpu against PyTorch eager fp32
# (HF BertForMaskedLM, and the HF encoder with the head on masked rows only), same
# model (bert-mini: 4 x 256, FFN 1024, vocab 30522), same S128 batch from the sample
# shards, same thread count. Needs python3 with torch and transformers for the
# PyTorch side. Usage: bench/cpu_bench.sh [THREADS] [BATCH] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
batch=${2:-32}
steps=${3:-12}
[ -x build/mlmgpu ] || scripts/deps.sh >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

mlmgpu_tps() {   # dropout
  OMP_NUM_THREADS=$threads build/mlmgpu train --config configs/bert-mini.ini --device cpu \
    --set data.train=data/sample/train.shard --set data.val= --set data.vocab=data/sample/vocab.txt \
    --set train.micro_batch="$batch" --set train.batch="$batch" --set train.steps=$((steps + 2)) \
    --set train.log_every=1 --set train.threads="$threads" --set train.out_dir="$out/run" \
    --set model.hidden_dropout="$1" --set model.attention_dropout="$1" --set train.checkpoint_every=0 --overwrite \
    >/dev/null 2>&1
  # steady state: skip the first two steps
  python3 - "$out/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l][2:]
print(sum(r["tokens_per_s"] for r in rows) / len(rows))
PY
}

torch_tps() {    # variant dropout
  python3 bench/torch_cpu_mlm.py --shard data/sample/train.shard --threads "$threads" --batch "$batch" \
    --steps "$steps" --variant "$1" --dropout "$2" 2>/dev/null | awk '{print $4}'
}

printf "bert-mini S128 B%s, %s threads, %s (%s)\n" "$batch" "$threads" "$(date -u +%F)" \
  "$(lscpu | sed -n 's/^Model name: *//p')"
printf "%-10s %14s %14s %14s %10s %10s\n" dropout "mlmgpu tok/s" "HF tok/s" "masked-rows" "vs HF" "vs rows"
for p in 0.1 0; do
  m=$(mlmgpu_tps $p)
  h=$(torch_tps hf $p)
  r=$(torch_tps masked_rows $p)
  awk -v p=$p -v m="$m" -v h="$h" -v r="$r" \
    'BEGIN { printf "%-10s %14.0f %14.0f %14.0f %9.2fx %9.2fx\n", p, m, h, r, m / h, m / r }'
done
