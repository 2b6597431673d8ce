#!/usr/bin/env bash
# Installs the Debian packages mlmgpu builds and tests with (only those missing),
# then configures and builds into build/. Sourced by quickstart.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs="meson ninja-build gcc g++ pkg-config libcriterion-dev libopenblas-dev libcjson-dev libutf8proc-dev openmpi-bin libopenmpi-dev"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq $missing >/dev/null
fi
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build
