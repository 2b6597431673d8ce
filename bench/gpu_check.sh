#!/usr/bin/env bash
# The GPU check in one command, for a host with one NVIDIA GPU, the CUDA runtime and
# cuBLAS, and python3 with torch + transformers, but none of the -dev packages this
# build links: it runs the binaries that bench/prepare_gpu_bundle.sh built and
# bundled on the build machine (build-gpu/ and libs/, carried along).
#
# Default (about 6 minutes on one H100):
#   the GPU and driver; tests/gpu/test_cuda_ops (CUDA backend against the CPU oracle);
#   a 60-step bert-tiny training run on the GPU and on the CPU (the loss curves must
#   agree); bench_step BERT-base S128 B256 dropout 0.1, with CUDA graphs and without
#   (MLM_CUDA_GRAPHS=0), and bert-mini S128 B32 both ways (launch-bound: where graphs
#   matter most); the attention kernels (bench_attention, flash with either backward
#   and cuBLAS paths) beside torch SDPA (cuDNN and mem-efficient, key-padding mask) on
#   the same shapes; an op-by-op profile of a BERT-base step (bench_step --profile)
#   beside the performance model's prediction of every op (bench_step --predict, which
#   also predicts each configuration's step); HF compile and HF rows_compile on
#   BERT-base; then, budget permitting, the first config again with the wide flash
#   backward (MLM_FLASH_BWD=wide: the one-block-per-SM kernel the narrow default
#   replaced), with the bias gradients by column-sum passes (MLM_BIAS_GRAD=colsum: what
#   the GEMM epilogue replaced) and with GEMM algorithms chosen by timing
#   (MLM_GEMM_TUNE=1); then a table.
# --full: BERT-base S512 B64 and BERT-large S128 B128 too, dropout 0.1 and 0, and HF
#   eager. It needs more than one 10-minute call: split it with --configs and a
#   --budget that fits the call.
#
# Every step runs under timeout; a failing step prints the end of its log and the
# script goes on. The whole run stops starting steps when --budget seconds are
# spent, so the table always prints (last). Results: one JSON line per measurement
# in $OUT/results.jsonl (bench-results/ when OUT is unset), step logs in steps.log,
# this console in gpu_check.log.
#
# usage: bench/gpu_check.sh [--full] [--configs base128,base512,large128] [--skip-tests]
#                           [--steps N] [--budget SECONDS]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD

full=0 skip_tests=0 configs="" steps=20 budget=540
while [ $# -gt 0 ]; do
  case $1 in
    --full) full=1 ;;
    --skip-tests) skip_tests=1 ;;
    --configs) configs=$2; shift ;;
    --steps) steps=$2; shift ;;
    --budget) budget=$2; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$configs" ] || { [ $full = 1 ] && configs=base128,base512,large128 || configs=base128; }

out=${OUT:-bench-results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.jsonl steps_log=$out/steps.log
exec > >(tee "$out/gpu_check.log") 2>&1
: >"$results"
: >"$steps_log"
build=${MLM_BUILD:-build-gpu}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MLM_SOURCE_ROOT=$root
start=$SECONDS
reserve=20   # seconds kept for the table

# ---------------------------------------------------------------- helpers

# record STEP RC [JSON_FILE] [key=value ...]: appends one line to results.jsonl: the
# last JSON object JSON_FILE holds (or {}), plus step, rc and the key=value pairs.
record() {
  "$py" - "$results" "$@" <<'PY'
import json, sys
res, step, rc, src, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
row = {}
if src and src != "-":
    try:
        lines = [l for l in open(src) if l.lstrip().startswith("{")]
        row = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        row = {}
for kv in extra:
    k, _, v = kv.partition("=")
    try:
        row.setdefault(k, json.loads(v))
    except ValueError:
        row.setdefault(k, v)
row["step"], row["rc"] = step, rc
if rc in (124, 137):
    row["error"] = "timeout"
elif rc == 125:
    row["error"] = "skipped"
elif rc != 0 and "error" not in row:
    row["error"] = f"exit {rc}"
open(res, "a").write(json.dumps(row) + "\n")
PY
}

left() { echo $((budget - (SECONDS - start) - reserve)); }

# step NAME LIMIT STDOUT_FILE CMD...: runs CMD under timeout (cut to the budget left),
# stdout to STDOUT_FILE, stderr to steps.log; prints one status line, and the end of
# the log when it fails. Returns CMD's status (125 = not started: budget spent).
step() {
  local name=$1 limit=$2 so=$3 l t0 rc n0
  shift 3
  l=$(left)
  if [ "$l" -lt 15 ]; then
    echo "-- $name: SKIPPED (budget spent)"
    return 125
  fi
  [ "$limit" -gt "$l" ] && limit=$l
  printf '\n===== %s (timeout %ss) %s\n' "$name" "$limit" "$*" >>"$steps_log"
  n0=$(wc -l <"$steps_log")
  t0=$SECONDS
  timeout -k 10 "$limit" "$@" >"$so" 2>>"$steps_log"
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "-- $name: ok ($((SECONDS - t0)) s)"
  else
    case $rc in
      124|137) echo "-- $name: TIMED OUT after ${limit} s" ;;
      *) echo "-- $name: FAILED, exit $rc ($((SECONDS - t0)) s)" ;;
    esac
    tail -n +$((n0 + 1)) "$steps_log" | tail -n 12 | sed 's/^/   | /'
  fi
  return $rc
}

# ---------------------------------------------------------------- environment

echo "gpu_check: $(date -u '+%F %T') UTC, mode $([ $full = 1 ] && echo full || echo default), configs $configs, budget ${budget}s"
gpu=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv,noheader 2>&1)
echo "gpu: $gpu"
versions=$(timeout 90 "$py" -c 'import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.is_available())' 2>&1 | tail -n 1)
echo "torch transformers cuda: $versions"
record env 0 - "gpu=$gpu" "torch_transformers_cuda=$versions"

# the packed bundle (bench/prepare_gpu_bundle.sh), where it was carried: unpacked over
# build-gpu/ and libs/ (python's tarfile where xz is missing)
if [ -f gpu-bundle.tar.xz ]; then
  if tar -xJf gpu-bundle.tar.xz 2>/dev/null ||
     "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(filter="tar")' gpu-bundle.tar.xz; then
    echo "bundle: gpu-bundle.tar.xz unpacked"
  else
    echo "bundle: gpu-bundle.tar.xz could not be unpacked"
  fi
fi
libpath=$root/libs
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && libpath=$libpath:$d
done
libpath=$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bins=("$build/mlmgpu" "$build/tests/gpu/test_cuda_ops" "$build/bench/bench_step" "$build/bench/bench_attention")
for b in "${bins[@]}"; do
  [ -x "$b" ] || echo "MISSING: $b (run bench/prepare_gpu_bundle.sh on the build machine and carry gpu-bundle.tar.xz)"
done
# a library the bundle left to the host (cudart, cuBLAS) may live in python's wheels
missing=$(for b in "${bins[@]}"; do [ -x "$b" ] && LD_LIBRARY_PATH=$libpath ldd "$b"; done | awk '/not found/{print $1}' | sort -u)
for lib in $missing; do
  hit=$(timeout 30 find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null | head -n 1)
  if [ -n "$hit" ]; then libpath=$libpath:$(dirname "$hit"); echo "library $lib: found in $(dirname "$hit")"
  else echo "library $lib: NOT FOUND on this host"; fi
done
ours=(env "LD_LIBRARY_PATH=$libpath")   # the carried binaries run with the bundled libraries; python does not

# ---------------------------------------------------------------- correctness

if [ $skip_tests = 0 ]; then
  tap=$out/test_cuda_ops.tap
  rm -f "$tap"
  step test_cuda_ops 180 /dev/null "${ours[@]}" "$build/tests/gpu/test_cuda_ops" -j2 --timeout 60 --short-filename "--tap=$tap"
  rc=$?
  p=$(grep -c '^ok ' "$tap" 2>/dev/null); s=$(grep -c '^ok .*# SKIP' "$tap" 2>/dev/null); f=$(grep -c '^not ok ' "$tap" 2>/dev/null)
  echo "   test_cuda_ops: $((${p:-0} - ${s:-0})) passed, ${f:-0} failed, ${s:-0} skipped"
  grep '^not ok ' "$tap" 2>/dev/null | sed 's/^/   /'
  record test_cuda_ops $rc - "passed=$((${p:-0} - ${s:-0}))" "failed=${f:-0}" "skipped=${s:-0}"

  # the real training loop, on the GPU (CUDA graphs replayed, then every op launched)
  # and on the CPU: same data, masking and dropout
  for dev in cuda cuda_eager cpu; do
    dir=/tmp/gpu_check_train_$dev
    rm -rf "$dir"
    step "train bert-tiny 60 steps ($dev)" 120 /dev/null "${ours[@]}" "MLM_CUDA_GRAPHS=$([ $dev = cuda_eager ] && echo 0 || echo 1)" \
      "$build/mlmgpu" train --config configs/bert-tiny.ini --device "${dev%_eager}" --set train.steps=60 \
      --set train.log_every=10 --set train.eval_every=0 --set train.checkpoint_every=0 --set train.out_dir="$dir"
    rc=$?
    curve=$(grep '"train"' "$dir/metrics.jsonl" 2>/dev/null | sed 's/.*"loss":\([0-9.e+-]*\).*/\1/' | tr '\n' ' ')
    echo "   loss every 10 steps ($dev): ${curve:-none}"
    record "train_tiny_$dev" $rc - "impl=mlmgpu_train" "device=$dev" "loss_curve=${curve% }"
  done
fi

# ---------------------------------------------------------------- throughput

# shape NAME -> "config seq batch"
shape() {
  case $1 in
    base128) echo "base 128 256" ;;
    base512) echo "base 512 64" ;;
    large128) echo "large 128 128" ;;
    mini128) echo "mini 128 32" ;;
    *) echo "" ;;
  esac
}

bench_mlmgpu() {   # NAME DROPOUT [GRAPHS [VARIANT]]: GRAPHS=0 launches every op (MLM_CUDA_GRAPHS=0);
  # VARIANT wide runs the wide flash backward (MLM_FLASH_BWD), colsum the bias gradients'
  # column-sum passes (MLM_BIAS_GRAD), tune the GEMM algorithms chosen by timing (MLM_GEMM_TUNE)
  local cfg seq batch so=$out/.last.json graphs=${3:-1} bwd=narrow bgrad=epilogue tune=0 impl=mlmgpu
  read -r cfg seq batch <<<"$(shape "$1")"
  [ "$graphs" = 0 ] && impl=mlmgpu_nographs
  case "${4:-}" in
    wide) bwd=wide impl=mlmgpu_widebwd ;;
    colsum) bgrad=colsum impl=mlmgpu_colsum ;;
    tune) tune=1 impl=mlmgpu_tuned ;;
  esac
  step "$impl $1 dropout $2" 240 "$so" "${ours[@]}" "MLM_CUDA_GRAPHS=$graphs" "MLM_FLASH_BWD=$bwd" \
    "MLM_BIAS_GRAD=$bgrad" "MLM_GEMM_TUNE=$tune" "$build/bench/bench_step" --device cuda \
    --config "$cfg" --seq "$seq" --batch "$batch" --dropout "$2" --steps "$steps" --warmup 8
  local rc=$? note=-
  # MLM_GEMM_TUNE's report (the backend logs it at the end): what the timing chose
  [ "$tune" = 1 ] && note=$(grep -o 'MLM_GEMM_TUNE: .*' "$steps_log" | tail -n 1)
  record "${impl}_$1_d$2" $rc "$so" "impl=$impl" "config=$cfg" "seq=$seq" "batch=$batch" "dropout=$2" "note=$note"
}

predict_mlmgpu() {   # NAME DROPOUT: the performance model's step (runs nothing on the GPU)
  local cfg seq batch so=$out/.predict.jsonl
  read -r cfg seq batch <<<"$(shape "$1")"
  step "predicted $1 dropout $2" 60 "$so" "${ours[@]}" "$build/bench/bench_step" --predict --config "$cfg" \
    --seq "$seq" --batch "$batch" --dropout "$2"
  record "predicted_$1_d$2" $? "$so" "impl=mlmgpu_predicted" "config=$cfg" "seq=$seq" "batch=$batch" "dropout=$2"
  grep '^{"predict_op"' "$so" 2>/dev/null | sed "s/^{/{\"step\":\"predict_$1_d$2\",/" >>"$results"
}

bench_hf() {   # NAME VARIANT DROPOUT
  local cfg seq batch so=$out/.last.json
  read -r cfg seq batch <<<"$(shape "$1")"
  step "HF $2 $1 dropout $3" 300 "$so" "$py" bench/hf_gpu_bench.py --device cuda --variant "$2" --config "$cfg" \
    --seq "$seq" --batch "$batch" --dropout "$3" --steps "$steps" --warmup 3
  record "hf_$2_$1_d$3" $? "$so" "impl=hf_$2" "config=$cfg" "seq=$seq" "batch=$batch" "dropout=$3"
}

IFS=, read -r -a names <<<"$configs"
for n in "${names[@]}"; do
  [ -n "$(shape "$n")" ] || { echo "gpu_check: unknown config '$n' (base128, base512, large128)"; exit 2; }
done
dropouts=(0.1)
[ $full = 1 ] && dropouts=(0.1 0)

# ours first (cheap): the steps, what CUDA graphs give, and the attention kernels
# beside SDPA; then PyTorch in order of importance; then our variants
for n in "${names[@]}"; do for p in "${dropouts[@]}"; do predict_mlmgpu "$n" "$p"; done; done
for n in "${names[@]}"; do for p in "${dropouts[@]}"; do bench_mlmgpu "$n" "$p"; done; done
bench_mlmgpu "${names[0]}" 0.1 0
bench_mlmgpu mini128 0.1 1
bench_mlmgpu mini128 0.1 0
read -r cfg seq batch <<<"$(shape "${names[0]}")"
step "mlmgpu profile ${names[0]} (each op waited for)" 120 "$out/.profile.jsonl" "${ours[@]}" "$build/bench/bench_step" \
  --device cuda --config "$cfg" --seq "$seq" --batch "$batch" --dropout 0.1 --steps 5 --warmup 8 --profile
rc=$?
grep '^{"profile_op"' "$out/.profile.jsonl" 2>/dev/null | sed "s/^{/{\"step\":\"profile_${names[0]}\",/" >>"$results"
[ $rc -ne 0 ] && record "profile_${names[0]}" $rc - impl=mlmgpu_profile
step "mlmgpu attention kernels" 120 "$out/.attention.jsonl" "${ours[@]}" "$build/bench/bench_attention" --device cuda
rc=$?
[ -s "$out/.attention.jsonl" ] && grep '^{' "$out/.attention.jsonl" >>"$results"
[ $rc -ne 0 ] && record attention_mlmgpu $rc - impl=mlmgpu_attention
step "mlmgpu attention kernels, wide flash backward" 90 "$out/.attention.jsonl" "${ours[@]}" MLM_FLASH_BWD=wide \
  "$build/bench/bench_attention" --device cuda --flash-only
rc=$?
[ -s "$out/.attention.jsonl" ] && grep '^{' "$out/.attention.jsonl" >>"$results"
[ $rc -ne 0 ] && record attention_mlmgpu_wide $rc - impl=mlmgpu_attention backend=flash-wide
step "SDPA attention, key-padding mask" 180 "$out/.attention.jsonl" "$py" bench/hf_gpu_bench.py --device cuda --attention
rc=$?
[ -s "$out/.attention.jsonl" ] && grep '^{' "$out/.attention.jsonl" >>"$results"
[ $rc -ne 0 ] && record attention $rc - impl=torch_sdpa
for n in "${names[@]}"; do bench_hf "$n" rows_compile 0.1; bench_hf "$n" compile 0.1; done
# the variants the GPU is to decide between, once the comparison with HF is in
bench_mlmgpu "${names[0]}" 0.1 1 wide
bench_mlmgpu "${names[0]}" 0.1 1 colsum
bench_mlmgpu "${names[0]}" 0.1 1 tune
if [ $full = 1 ]; then
  for n in "${names[@]}"; do bench_hf "$n" eager 0.1; done
  for n in "${names[@]}"; do bench_hf "$n" rows_compile 0; bench_hf "$n" compile 0; done
fi
rm -f "$out/.last.json" "$out/.attention.jsonl" "$out/.profile.jsonl" "$out/.predict.jsonl"

# ---------------------------------------------------------------- table

echo
echo "gpu_check finished in $((SECONDS - start)) s; results in $results"
"$py" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
env = next((r for r in rows if r.get("step") == "env"), {})
print(f"\n{env.get('gpu', '?')} | torch, transformers, cuda: {env.get('torch_transformers_cuda', '?')}")
for r in rows:
    if r.get("step") == "test_cuda_ops":
        print(f"test_cuda_ops: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped"
              + (f" ({r['error']})" if r.get("error") else "")
              + (" <- ALL SKIPPED: the CUDA backend found no usable GPU" if r["skipped"] and not r["passed"] else ""))
    if r.get("step", "").startswith("train_tiny_"):
        print(f"bert-tiny train loss ({r['device']}): {r.get('loss_curve') or r.get('error')}")
curves = {r["device"]: str(r.get("loss_curve", "")).split() for r in rows
          if r.get("step", "").startswith("train_tiny_") and not r.get("error")}
if len(curves.get("cuda", [])) == len(curves.get("cpu", [])) > 0:
    gap = max(abs(float(a) - float(b)) for a, b in zip(curves["cuda"], curves["cpu"]))
    print(f"bert-tiny loss, GPU against CPU: largest gap {gap:.4f} ({'agree' if gap < 0.05 else 'DIFFER'})")
if curves.get("cuda") and curves.get("cuda_eager"):
    same = curves["cuda"] == curves["cuda_eager"]
    print(f"bert-tiny loss, CUDA graphs against each op launched: {'identical' if same else 'DIFFER'}")

def cell(r, key, fmt):
    if r is None:
        return "-"
    if r.get("error") or r.get(key) is None:
        return {"timeout": "TIMEOUT", "skipped": "SKIPPED"}.get(r.get("error"), "FAIL")
    return fmt.format(r[key])

bench = {}
for r in rows:
    if str(r.get("impl", "")).startswith(("mlmgpu", "hf_")) and "config" in r and "seq" in r:
        bench[(r["config"], r["seq"], r["batch"], float(r["dropout"]), r["impl"])] = r
shapes = sorted({k[:4] for k in bench
                 if k[4] not in ("mlmgpu_nographs", "mlmgpu_predicted", "mlmgpu_widebwd", "mlmgpu_colsum",
                                 "mlmgpu_tuned")
                 and k[0] != "mini"},
                key=lambda k: ({"base": 0, "large": 1}.get(k[0], 2), k[1], -k[3]))
hdr = ("config", "mlmgpu", "predicted", "HF compile", "rows_comp", "HF eager", "x compile", "x rows", "MFU ours",
       "MFU rows", "GiB ours", "GiB pred", "GiB rows", "loss ours")
widths = (22,) + (10,) * (len(hdr) - 1)
print("\n" + " | ".join(f"{h:>{w}}" for h, w in zip(hdr, widths)))
for s in shapes:
    g = {impl: bench.get(s + (impl,))
         for impl in ("mlmgpu", "mlmgpu_predicted", "hf_compile", "hf_rows_compile", "hf_eager")}
    ours, comp, rows_c = g["mlmgpu"], g["hf_compile"], g["hf_rows_compile"]

    def ratio(other):
        try:
            return f"{ours['seq_per_s'] / other['seq_per_s']:.2f}x"
        except (TypeError, KeyError, ZeroDivisionError):
            return "-"
    name = f"{s[0]} S{s[1]} B{s[2]} p{s[3]:g}"
    pred = g["mlmgpu_predicted"]
    cells = (name, cell(ours, "seq_per_s", "{:.0f}"), cell(pred, "seq_per_s", "{:.0f}"),
             cell(comp, "seq_per_s", "{:.0f}"), cell(rows_c, "seq_per_s", "{:.0f}"),
             cell(g["hf_eager"], "seq_per_s", "{:.0f}"), ratio(comp), ratio(rows_c), cell(ours, "mfu", "{:.3f}"),
             cell(rows_c, "mfu", "{:.3f}"), cell(ours, "peak_gib", "{:.1f}"), cell(pred, "peak_gib", "{:.1f}"),
             cell(rows_c, "peak_gib", "{:.1f}"), cell(ours, "loss", "{:.3f}"))
    print(" | ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
graph_rows = sorted({k[:4] for k in bench if k[4] == "mlmgpu_nographs"})
if graph_rows:
    print("\nCUDA graphs (mlmgpu, seq/s): replayed | each op launched | gain")
    for s in graph_rows:
        on, off = bench.get(s + ("mlmgpu",)), bench.get(s + ("mlmgpu_nographs",))
        try:
            gain = f"{(on['seq_per_s'] / off['seq_per_s'] - 1) * 100:+.1f}%"
        except (TypeError, KeyError, ZeroDivisionError):
            gain = "-"
        print(f"  {s[0]} S{s[1]} B{s[2]} p{s[3]:g}: {cell(on, 'seq_per_s', '{:.0f}')} | "
              f"{cell(off, 'seq_per_s', '{:.0f}')} | {gain}")
for impl, title in (("mlmgpu_widebwd", "flash backward (mlmgpu, seq/s): narrow (default) | wide (MLM_FLASH_BWD=wide)"),
                    ("mlmgpu_colsum", "bias gradients (mlmgpu, seq/s): GEMM epilogue (default) | column sums "
                                      "(MLM_BIAS_GRAD=colsum)"),
                    ("mlmgpu_tuned", "GEMM algorithms (mlmgpu, seq/s): cuBLASLt's first choice (default) | chosen by "
                                     "timing (MLM_GEMM_TUNE=1)")):
    variant_rows = sorted({k[:4] for k in bench if k[4] == impl})
    if variant_rows:
        print("\n" + title)
    for s in variant_rows:
        default, variant = bench.get(s + ("mlmgpu",)), bench.get(s + (impl,))
        print(f"  {s[0]} S{s[1]} B{s[2]} p{s[3]:g}: {cell(default, 'seq_per_s', '{:.0f}')} | "
              f"{cell(variant, 'seq_per_s', '{:.0f}')}")
        if variant and variant.get("note") not in (None, "-", ""):
            print(f"    {variant['note']}")
prof = [r for r in rows if "profile_op" in r]
if prof:
    predicted = {(r["predict_op"], r["shape"]): r["ms"] for r in rows
                 if "predict_op" in r and r.get("step") == f"predict_{prof[0]['step'][8:]}_d0.1"}
    print(f"\nwhere a step goes ({prof[0]['step'][8:]}, dropout 0.1, every op waited for; ms per step;"
          " predicted: bench_step --predict):")
    for r in prof[:12]:
        p = predicted.get((r["profile_op"], r["shape"]))
        versus = f" predicted {p:9.3f} ms ({r['ms'] / p:4.2f}x)" if p else ""
        print(f"  {r['profile_op']:<16} {r['shape']:<30} {r['calls']:6.1f} calls {r['ms']:9.3f} ms "
              f"{100 * r['share']:5.1f}%{versus}")
    print(f"  {'all':<16} {'':<30} {'':>12} {sum(r['ms'] for r in prof):9.3f} ms")
att = [r for r in rows if r.get("impl") in ("torch_sdpa", "mlmgpu_attention")]
if att:
    print("\nattention fwd+bwd, bf16, half the sequences shorter (mlmgpu: lengths; SDPA: key-padding mask):")
    best = {}
    for r in att:
        if r.get("impl") == "torch_sdpa" and "ms" in r:
            k = (r["B"], r["H"], r["S"], r["dh"])
            best[k] = min(best.get(k, float("inf")), r["ms"])
    for r in att:
        if "B" not in r:
            print(f"  {r.get('impl')}: FAIL ({r.get('error')})")
            continue
        shape = f"B{r['B']} H{r['H']} S{r['S']} d{r['dh']}"
        res = f"{r['ms']:.3f} ms ({r.get('mask')} mask)" if "ms" in r else f"FAIL: {r.get('error', '')[:150]}"
        k = (r["B"], r["H"], r["S"], r["dh"])
        if r.get("impl") == "mlmgpu_attention" and "ms" in r and k in best:
            res += f", {best[k] / r['ms']:.2f}x the fastest SDPA"
        who = ("mlmgpu " if r["impl"] == "mlmgpu_attention" else "SDPA ") + r.get("backend", "?")
        print(f"  {who:>16}  {shape:<20} {res}")
print("\nseq/s; x = mlmgpu over HF; MFU = FLOPs/token x tokens/s / 787e12 (docs/PERF.md formula);"
      " GiB: ours = device memory added, HF = torch.cuda.max_memory_allocated")
PY
