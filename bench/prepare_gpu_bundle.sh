#!/usr/bin/env bash
# Builds the CUDA configuration here and bundles its shared libraries, so that
# bench/gpu_check.sh runs on a GPU host that has the CUDA toolkit, NCCL and python3
# with torch but none of the -dev packages this build links (Criterion, OpenBLAS,
# cJSON, utf8proc, libgomp ...).
#
#   bench/prepare_gpu_bundle.sh      # here: build-gpu/ (release, -Dcuda=enabled) + libs/,
#                                    # and both packed in gpu-bundle.tar.xz
#   then carry gpu-bundle.tar.xz to the GPU host (about 10 MB; git-ignored) and run
#   there: bench/gpu_check.sh, which unpacks it. Carrying the unpacked paths instead
#   works too (about 58 MB, OpenBLAS 36.5 of it: close to a 64 MiB transfer limit):
#     build-gpu/mlmgpu build-gpu/tests/gpu/test_cuda_ops build-gpu/tests/gpu/test_cuda_train build-gpu/bench/bench_step build-gpu/bench/bench_attention libs
#
# The check is single-GPU, so the build leaves MPI out (-Ddist=disabled, where the
# option exists): an MPI library carried without its runtime is one more way to fail.
# BUNDLE_LIBS names the bundling script (default /work/shared/bundle-libs.sh);
# MESON_ARGS adds options (e.g. MESON_ARGS=-Ddist=enabled).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${BUNDLE_LIBS:-/work/shared/bundle-libs.sh}
bins=(build-gpu/mlmgpu build-gpu/tests/gpu/test_cuda_ops build-gpu/tests/gpu/test_cuda_train build-gpu/bench/bench_step build-gpu/bench/bench_attention)
opts=(-Dcuda=enabled -Dbuildtype=release)
grep -q "option('dist'" meson_options.txt && opts+=(-Ddist=disabled)
read -r -a extra <<<"${MESON_ARGS:-}"
opts+=("${extra[@]}")

if [ -d build-gpu/meson-info ]; then
  meson setup --reconfigure build-gpu "${opts[@]}" >/dev/null
else
  meson setup build-gpu "${opts[@]}"
fi
ninja -C build-gpu "${bins[@]#build-gpu/}"

rm -rf libs
bash "$bundle" libs "${bins[@]}"
rm -f gpu-bundle.tar.xz.part
tar -cJf gpu-bundle.tar.xz.part "${bins[@]}" libs
mv gpu-bundle.tar.xz.part gpu-bundle.tar.xz
du -ch "${bins[@]}" libs | tail -1 | awk '{print "unpacked: " $1}'
du -h gpu-bundle.tar.xz | awk '{print "carry: gpu-bundle.tar.xz (" $1 "; bench/gpu_check.sh unpacks it)"}'
