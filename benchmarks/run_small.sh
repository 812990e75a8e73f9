#!/usr/bin/env bash
# fusionjax vs the hand-written Flax NNX peer (and any other peers), interleaved
# in one run, with the ratio to flax-nnx:
#
#   benchmarks/run_small.sh [workload] [steps] [repeats] [rounds]
#
# env: PYTHON (default: python3 of the active venv), PEERS_DIR (default ../shared/bench/peers),
#      PEERS (default "flax-nnx"; add torch-eager etc. if their frameworks are installed),
#      OURS (default "fusionjax fusionjax-plain": the latter with every fast path off,
#      FUSIONJAX_FAST_PATHS=none, i.e. the same math as flax_ref.py: the framework's cost).
# Peak RSS of each process comes from /usr/bin/time when it is installed.
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
    fusionjax|fusionjax-plain) echo "$HERE/bench_workload.py" ;;
    flax-nnx)      echo "$PEERS_DIR/flax_ref.py" ;;
    torch-eager)   echo "$PEERS_DIR/torch_ref.py" ;;
    torch-compile) echo "$PEERS_DIR/torch_ref.py --compile" ;;
    keras-jax)     echo "$PEERS_DIR/keras_ref.py" ;;
  esac
}
echo "workload=$WORKLOAD steps=$STEPS repeats=$REPEATS rounds=$ROUNDS out=$OUT" >&2
for r in $(seq 1 "$ROUNDS"); do
  for p in $OURS $PEERS; do
    echo "[round $r] $p" >&2
    fast=all; [ "$p" = fusionjax-plain ] && fast=none
    rss=(); [ ${#TIME_CMD[@]} -gt 0 ] && rss=("${TIME_CMD[@]}" "$OUT/$p.r$r.rss")
    # shellcheck disable=SC2046
    FUSIONJAX_FAST_PATHS=$fast FUSIONJAX_PEERS="$PEERS_DIR" "${rss[@]}" "$PYTHON" $(cmd_for "$p") --workload "$WORKLOAD" \
      --steps "$STEPS" --repeats "$REPEATS" --json "$OUT/$p.r$r.json" > "$OUT/$p.r$r.log" 2>&1 \
      || { echo "  $p failed:"; tail -5 "$OUT/$p.r$r.log"; } >&2
  done
done
"$PYTHON" - "$OUT" <<'PY'
import glob, json, os, statistics, sys
runs = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    d = json.load(open(f))
    rss = f[:-len(".json")] + ".rss"
    if os.path.exists(rss):  # /usr/bin/time -f %M: peak resident set, KiB
        d["peak_rss_mb"] = int(open(rss).read().split()[-1]) / 1024
    runs.setdefault(d["impl"], []).append(d)
med = {k: statistics.median(r["samples_per_s"] for r in v) for k, v in runs.items()}
base, torch = med.get("flax-nnx"), med.get("torch-eager")
print("| impl | runs | samples/s (median) | min..max | step ms (median) | first step s "
      "| peak RSS MB | vs flax-nnx | vs torch-eager |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for k, v in sorted(runs.items(), key=lambda kv: -med[kv[0]]):
    sps = [r["samples_per_s"] for r in v]
    rss = [r["peak_rss_mb"] for r in v if "peak_rss_mb" in r]
    rss = f"{statistics.median(rss):.0f}" if rss else "n/a"
    ratios = " | ".join(f"{med[k] / b:.3f}x" if b else "n/a" for b in (base, torch))
    print(f"| {k} | {len(v)} | {med[k]:.1f} | {min(sps):.1f}..{max(sps):.1f} | "
          f"{statistics.median(r['step_ms_median'] for r in v):.1f} | "
          f"{statistics.median(r['compile_s'] for r in v):.1f} | {rss} | {ratios} |")
PY
