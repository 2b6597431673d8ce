#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test suite. The last line is
#   N passed, N failed, N skipped
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec scripts/run_tests.sh build
