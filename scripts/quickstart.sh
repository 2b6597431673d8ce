#!/usr/bin/env bash
# The main job: install what is missing, build, and train bert-tiny on the bundled
# sample of English text (on the GPU when one is usable, else on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec build/mlmgpu train --config configs/bert-tiny.ini "$@"
