#!/usr/bin/env bash
# The main job, end to end: install what is missing and build; build the default
# corpus (35 MB of Debian documentation); train an 8192-token WordPiece
# vocabulary; tokenize and pack the corpus into shards; train a bert-tiny model
# (on the GPU when one is usable, else the CPU: about ten minutes on 2 cores),
# showing the loss fall; then ask the trained model to fill in masked words.
# Extra arguments go to `mlmgpu train` (e.g. --set train.steps=500).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build_corpus.sh corpus
run=runs/quickstart
mkdir -p "$run"
[ -s "$run/vocab.txt" ] || build/mlmgpu vocab --input corpus --vocab-size 8192 --out "$run/vocab.txt"
[ -f "$run/data/manifest.json" ] ||
  build/mlmgpu prepare --input corpus --vocab "$run/vocab.txt" --seq-len 128 --out "$run/data"
# --overwrite: a second quickstart starts over in runs/quickstart (its data and vocabulary are kept)
build/mlmgpu train --config configs/quickstart.ini --overwrite "$@"
echo
echo "== what the trained model fills in (mlmgpu fill-mask --model $run/checkpoints/latest ...)"
build/mlmgpu fill-mask --model "$run/checkpoints/latest" --top-k 3 2>/dev/null \
  "the [MASK] command creates a new branch." \
  "python is a programming [MASK]." \
  "select the rows from the [MASK] where the value is null." \
  "the server listens on [MASK] 80."
