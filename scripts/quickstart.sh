#!/usr/bin/env bash
# The main job, end to end, in under ten minutes on 2 cores from a fresh Debian
# machine: install what is missing and build the mlmgpu binary (only it: the test
# suite is scripts/test.sh); build the default corpus (35 MB of Debian
# documentation); train a 3072-token WordPiece vocabulary; tokenize it into
# 64-token sequences, a document per blank-line-separated block; train a one-layer
# BERT (configs/quickstart.ini; on the GPU when one is usable, else the CPU),
# showing the loss fall against the unigram baseline; then ask the trained model to
# fill in masked words. Each stage prints its time.
# Extra arguments go to `mlmgpu train` (e.g. --set train.steps=500).
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { echo; echo "== $1 ($((SECONDS / 60))m$(printf %02d $((SECONDS % 60)))s so far)"; }
stage "packages and the mlmgpu binary (scripts/deps.sh mlmgpu)"
scripts/deps.sh mlmgpu
stage "the corpus (scripts/build_corpus.sh corpus)"
scripts/build_corpus.sh corpus
# Kept between runs, named by what made them: a vocabulary or data of other
# settings is never reused by mistake. configs/quickstart.ini names these paths.
run=runs/quickstart
vocab=$run/vocab-3072.txt
data=$run/data-3072-64
mkdir -p "$run"
stage "vocabulary and shards"
[ -s "$vocab" ] || build/mlmgpu vocab --input corpus --vocab-size 3072 --out "$vocab"
[ -f "$data/manifest.json" ] ||
  build/mlmgpu prepare --input corpus --vocab "$vocab" --seq-len 64 --out "$data"
stage "training (mlmgpu train --config configs/quickstart.ini)"
# --overwrite: a second quickstart starts over in runs/quickstart (its data and vocabulary are kept)
build/mlmgpu train --config configs/quickstart.ini --overwrite "$@"
stage "what the trained model fills in (mlmgpu fill-mask --model $run/checkpoints/latest --top-k 3 ...)"
build/mlmgpu fill-mask --model "$run/checkpoints/latest" --top-k 3 2>/dev/null \
  "the [MASK] command creates a new branch." \
  "python is a programming [MASK]." \
  "select the rows from the [MASK] where the value is null." \
  "the server listens on [MASK] 80."
stage "done"
