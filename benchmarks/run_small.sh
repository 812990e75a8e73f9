#!/usr/bin/env bash
# fusionjax vs the hand-written Flax NNX peer (and any other peers), interleaved
# in one run, with the ratio to flax-nnx:
#
#   benchmarks/run_small.sh [workload] [steps] [repeats] [rounds]
#
# env: PYTHON (default: python3 of the active venv), PEERS_DIR (default ../shared/bench/peers),
#      PEERS (default "flax-nnx"; add torch-eager etc. if their frameworks are installed),
#      OURS (default "fusionjax fusionjax-plain": the latter with every fast path off,
#      FUSIONJAX_FAST_PATHS=none, i.e. the same math as flax_ref.py: the framework's cost;
#      add fusionjax-untuned: every op at its default formulation, FUSIONJAX_TUNING=off).
# Peak RSS of each process comes from /usr/bin/time when it is installed.
# The machine's own ceiling: the float32 matmul rate (benchmarks/matmul_peak.py, chained
# 2048^3 products), and bfloat16's where the CPU has native bfloat16 (avx512_bf16 or AMX).
# Each row's achieved FLOP/s is the model's FLOPs per step (fusionjax's count of the plain
# formulation: the same network as every peer's) x steps/s, printed with its fraction of
# the float32 rate beside the ratios.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORKLOAD="${1:-small}"; STEPS="${2:-30}"; REPEATS="${3:-3}"; ROUNDS="${4:-3}"
PYTHON="${PYTHON:-python3}"
PEERS_DIR="${PEERS_DIR:-$HERE/../../shared/bench/peers}"
PEERS="${PEERS:-flax-nnx}"
OURS="${OURS:-fusionjax fusionjax-plain}"
TIME_CMD=(); [ -x /usr/bin/time ] && TIME_CMD=(/usr/bin/time -f %M -o)
OUT="$(mktemp -d /tmp/fusionjax_bench.XXXXXX)"
cmd_for() {
  case "$1" in
    fusionjax|fusionjax-plain|fusionjax-untuned) echo "$HERE/bench_workload.py" ;;
    flax-nnx)      echo "$PEERS_DIR/flax_ref.py" ;;
    torch-eager)   echo "$PEERS_DIR/torch_ref.py" ;;
    torch-compile) echo "$PEERS_DIR/torch_ref.py --compile" ;;
    keras-jax)     echo "$PEERS_DIR/keras_ref.py" ;;
  esac
}
echo "workload=$WORKLOAD steps=$STEPS repeats=$REPEATS rounds=$ROUNDS out=$OUT" >&2
dtypes=float32; grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && dtypes="float32 bfloat16"
for d in $dtypes; do
  echo "[ceiling] $d matmul" >&2
  "$PYTHON" "$HERE/matmul_peak.py" --device cpu --n 2048 --iters 10 --repeats 5 --dtype "$d" \
    --json "$OUT/ceiling.$d" > /dev/null 2>&1 || echo "  the $d matmul rate failed" >&2
done
for r in $(seq 1 "$ROUNDS"); do
  for p in $OURS $PEERS; do
    echo "[round $r] $p" >&2
    fast=all; [ "$p" = fusionjax-plain ] && fast=none
    tuned=on; [ "$p" = fusionjax-untuned ] && tuned=off
    rss=(); [ ${#TIME_CMD[@]} -gt 0 ] && rss=("${TIME_CMD[@]}" "$OUT/$p.r$r.rss")
    # shellcheck disable=SC2046
    FUSIONJAX_TUNING=$tuned FUSIONJAX_FAST_PATHS=$fast FUSIONJAX_PEERS="$PEERS_DIR" "${rss[@]}" "$PYTHON" $(cmd_for "$p") --workload "$WORKLOAD" \
      --steps "$STEPS" --repeats "$REPEATS" --json "$OUT/$p.r$r.json" > "$OUT/$p.r$r.log" 2>&1 \
      || { echo "  $p failed:"; tail -5 "$OUT/$p.r$r.log"; } >&2
  done
done
"$PYTHON" - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs, ceiling = {}, {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    d = json.load(open(f))
    rss = f[:-len(".json")] + ".rss"
    if os.path.exists(rss):  # /usr/bin/time -f %M: peak resident set, KiB
        d["peak_rss_mb"] = int(open(rss).read().split()[-1]) / 1024
    runs.setdefault(d["impl"], []).append(d)
for f in glob.glob(os.path.join(out, "ceiling.*")):
    d = json.load(open(f))
    ceiling[d["impl"]] = d["tflops"] * 1e3  # GFLOP/s
cpu, flags = "?", set()
try:
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        if k.strip() == "model name":
            cpu = v.strip()
        elif k.strip() == "flags":
            flags = set(v.split())
            break
except OSError:
    pass
vector = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
rates = ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in sorted(ceiling.items()))
print(f"CPU: {cpu} [{vector}], {os.cpu_count()} cores; matmul ceiling: {rates or 'n/a'}\n")
med = {k: statistics.median(r["samples_per_s"] for r in v) for k, v in runs.items()}
# the model's FLOPs per example: fusionjax's count of the plain formulation (every peer
# trains the same network; the count is per step of the batch fusionjax ran)
flops = next((r["flops_per_step"] / r["batch"] for v in runs.values() for r in v if r.get("flops_per_step")), None)
f32 = ceiling.get("matmul-f32")
base, torch = med.get("flax-nnx"), med.get("torch-eager")
print("| impl | runs | samples/s (median) | min..max | step ms (median) | first step s "
      "| peak RSS MB | GFLOP/s | of f32 matmul | vs flax-nnx | vs torch-eager |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for k, v in sorted(runs.items(), key=lambda kv: -med[kv[0]]):
    sps = [r["samples_per_s"] for r in v]
    rss = [r["peak_rss_mb"] for r in v if "peak_rss_mb" in r]
    rss = f"{statistics.median(rss):.0f}" if rss else "n/a"
    gflops = med[k] * flops / 1e9 if flops else None
    achieved = f"{gflops:.1f}" if gflops else "n/a"
    fraction = f"{gflops / f32:.0%}" if gflops and f32 else "n/a"
    ratios = " | ".join(f"{med[k] / b:.3f}x" if b else "n/a" for b in (base, torch))
    print(f"| {k} | {len(v)} | {med[k]:.1f} | {min(sps):.1f}..{max(sps):.1f} | "
          f"{statistics.median(r['step_ms_median'] for r in v):.1f} | "
          f"{statistics.median(r['compile_s'] for r in v):.1f} | {rss} | {achieved} | {fraction} | {ratios} |")
if flops:
    print(f"\nmodel FLOPs per example: {flops / 1e6:.1f} M (train step, plain formulation)")
PY
