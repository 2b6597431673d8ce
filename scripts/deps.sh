#!/usr/bin/env bash
# Installs the Debian packages mlmgpu builds and tests with (only those missing),
# then configures and builds into build/. Run by quickstart.sh and test.sh.
#
#   scripts/deps.sh             everything: the tests, the benchmarks (test.sh)
#   scripts/deps.sh mlmgpu      only the mlmgpu binary (quickstart.sh): no Criterion,
#                               no OpenMPI, and none of the ~150 test targets
#
# A build/ configured before packages were added (MPI, Criterion) is reconfigured,
# and the tests turned back on, so a later full build has them all.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs="meson ninja-build gcc pkg-config libopenblas-dev libcjson-dev libutf8proc-dev"
[ $# -gt 0 ] || pkgs="$pkgs g++ libcriterion-dev openmpi-bin libopenmpi-dev"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq $missing >/dev/null
  [ ! -f build/build.ninja ] || meson setup --reconfigure build >/dev/null
fi
if [ ! -f build/build.ninja ]; then
  # the test suites need Criterion: a quickstart build without it leaves them out
  tests=true
  if [ $# -gt 0 ] && ! dpkg -s libcriterion-dev >/dev/null 2>&1; then tests=false; fi
  meson setup build --buildtype=release -Dtests=$tests >/dev/null
elif [ $# -eq 0 ] && meson configure build | grep -Eq '^ *tests +false'; then
  meson configure build -Dtests=true >/dev/null   # a quickstart's build/, now for the tests
fi
ninja -C build "$@"
