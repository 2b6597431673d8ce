#!/usr/bin/env bash
# Runs every Criterion suite of a build and ends with the summed line
#   N passed, N failed, N skipped
# Exit status: 0 when nothing failed. Usage: scripts/run_tests.sh [BUILD_DIR]
set -u
build=${1:-build}
tap_dir=$(mktemp -d)
trap 'rm -rf "$tap_dir"' EXIT
passed=0 failed=0 skipped=0 broken=""
for exe in "$build"/tests/test_* "$build"/tests/gpu/test_*; do
  [ -x "$exe" ] && [ -f "$exe" ] || continue
  name=$(basename "$exe")
  echo "=== $name"
  tap="$tap_dir/$name.tap"
  "$exe" -j2 --tap="$tap" --short-filename 2>&1 | grep -v '^\[----\]   \(Assertion\|Test\)\b' || true
  status=${PIPESTATUS[0]}
  p=$(grep -c '^ok ' "$tap" | tr -d '\n'; true)
  s=$(grep -c '^ok .*# SKIP' "$tap"; true)
  f=$(grep -c '^not ok ' "$tap"; true)
  p=$((p - s))
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; broken="$broken $name"; fi
  echo "--- $name: $p passed, $f failed, $s skipped"
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done
[ -n "$broken" ] && echo "suites that exited non-zero without a failing test:$broken"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
