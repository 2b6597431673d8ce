#!/usr/bin/env bash
# Builds the safetensors fuzz target with clang (libFuzzer + AddressSanitizer) and
# runs it for a bounded time from the committed fixtures as seed corpus.
# Usage: tests/fuzz/run.sh [SECONDS]   (default 60; needs clang and libcjson-dev)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=build-fuzz
mkdir -p "$out/corpus"
cp tests/fixtures/*.safetensors "$out/corpus/"
clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
  tests/fuzz/fuzz_safetensors.c src/host/train/safetensors.c src/host/fileio.c src/host/log.c \
  $(pkg-config --cflags --libs libcjson) -lm -o "$out/fuzz_safetensors"
"$out/fuzz_safetensors" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 "$out/corpus"
