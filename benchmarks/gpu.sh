#!/usr/bin/env bash
# Workload `large` (../shared/bench/REFERENCE.md) on one GPU, in one call: fusionjax in three
# precision policies and the peers, then one table with samples/s, median step time,
# compile/first-step time and MFU.
#
#   benchmarks/gpu.sh [OUT_DIR]              # from the repository root, on the GPU machine
#   DEVICE=cpu BATCH=8 STEPS=2 REPEATS=1 WARMUP=0 THREADS=1 benchmarks/gpu.sh /tmp/smoke   # CPU smoke test
#
# Runs, in this order (most important first: the budget guard drops the tail):
#   matmul_peak.py          the chip's dense bf16 matmul rate (8192^3, chained): MFU's denominator
#   fusionjax   float32     strict (jax_default_matmul_precision=highest)
#   fusionjax   tf32        default matmul precision (--tf32)
#   fusionjax   bfloat16    train.precision = "bfloat16" (--precision bfloat16 --tf32)
#   flax-nnx    float32, tf32      ../shared/bench/peers/flax_ref.py
#   torch-eager float32, tf32      torch_ref.py
#   torch-compile float32, tf32    torch_ref.py --compile (the two share one fresh inductor cache)
#   fusionjax-fast tf32     fusionjax with its fast paths forced on (FUSIONJAX_FAST_PATHS=
#                           malloc,max_pool,avg_pool,conv,lstm).  They were measured on XLA:CPU only, so
#                           by default they are off on a GPU; this row says whether they help there
#
# Time budget (one NVIDIA H200; the call must stay under 8 minutes = 480 s).  Estimates:
#   process start, imports, CUDA init ............ ~10 s   x 11 processes     ~110 s
#   matmul peak (3 + 5 chains of 50 8192^3 products, ~70 ms each) ...........   ~5 s
#   first step (trace + compile + autotune + one step), workload large:
#     fusionjax / flax-nnx (XLA) ................. ~30-45 s x 6               ~220 s
#     torch-eager (cudnn.benchmark) .............. ~5 s    x 2                ~10 s
#     torch-compile: cold ~60 s, then ~30 s from the shared inductor cache     ~90 s
#   timed: (WARMUP 3 + REPEATS 3 x STEPS 20) = 63 steps of ~4 TFLOP (batch 1024),
#     <= 0.2 s each in strict float32, less in tf32/bf16 .. <= 13 s x 10      <= 130 s
#   FLOP count of fusionjax's step (tracing + lowering, no compile) ~5 s x 4   ~20 s
#   total ~450-580 s at the pessimistic end, so the tail of the list is guarded, not assumed:
#   BUDGET_S (450 s, counted from the script's start, setup included): a run starts only with
#   MIN_LEFT_S (60 s) left, and its `timeout` is min(RUN_TIMEOUT_S = 150 s, or COMPILE_TIMEOUT_S =
#   200 s for torch-compile, what is left), so the script ends by ~BUDGET_S + 10 s (the kill
#   grace) + the table; a run that hangs, fails or is skipped gets a status line and a table row
#   (its error tail is printed) and the script goes on.  STEPS x REPEATS = 20 x 3 is the
#   REFERENCE.md minimum for a throughput figure; the runs are ordered so that what the budget
#   drops first is the least needed (torch-compile tf32, then fusionjax-fast).
#
# Setup on a bare machine (no internet): checks `import numpy, jax, flax, optax, torch` and says
# which are missing (their runs are skipped); if fusionjax and its bundled plugins are not
# importable, `pip install -e . --no-deps --no-build-isolation --no-index`, and if that fails too,
# the checkout via PYTHONPATH plus a minimal dist-info that declares the plugins' entry points.
# The peers: $PEERS_DIR, else the first of ../shared/bench/peers, shared/bench/peers, .peers that
# holds harness.py (../shared beside a checkout does not travel to a device machine: copy the
# peers into an ignored .peers/ and carry it).
#
# Outputs in OUT_DIR (argument, else $OUT, else a new /tmp/gpu_bench.*); five files, because the
# device runner brings back at most eight:
#   results.jsonl     one harness JSON line per successful run, plus `policy` and `run` (the
#                     impl:policy asked for); fusionjax's also carry params, precision,
#                     matmul_precision, fast_paths, flops_per_step, flops_per_step_as_run,
#                     flops_per_step_xla
#   matmul_peak.json  the bf16 matmul rate (matmul_peak.py's line)
#   status.jsonl      impl, policy, status (ok | failed | timeout | skipped), reason, seconds
#   table.md          the table and its notes (also printed; benchmarks/mfu_table.py)
#   runs.log          environment, then every run's command and full output
#
# env: DEVICE (gpu|cpu), WORKLOAD (large), BATCH (default: the workload's), STEPS, REPEATS, WARMUP,
#      THREADS (CPU only), MATMUL_N (8192; 1024 on cpu), PYTHON (python3), PEERS_DIR, RUNS
#      (space-separated impl:policy, default the list above; impl fusionjax | fusionjax-fast | fusionjax-plain |
#      flax-nnx | torch-eager | torch-compile, policy float32 | tf32 | bfloat16 | float16),
#      BUDGET_S, MIN_LEFT_S, RUN_TIMEOUT_S, COMPILE_TIMEOUT_S.
set -u
START=$(date +%s)
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DEVICE="${DEVICE:-gpu}"; WORKLOAD="${WORKLOAD:-large}"
STEPS="${STEPS:-20}"; REPEATS="${REPEATS:-3}"; WARMUP="${WARMUP:-3}"
BATCH="${BATCH:-}"; THREADS="${THREADS:-}"
PYTHON="${PYTHON:-python3}"
if [ -z "${PEERS_DIR:-}" ]; then  # ../shared beside the checkout does not travel to a device
  for d in "$ROOT/../shared/bench/peers" "$ROOT/shared/bench/peers" "$ROOT/.peers"; do
    if [ -f "$d/harness.py" ]; then PEERS_DIR="$d"; break; fi
  done
fi
PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/bench/peers}"
[ -d "$PEERS_DIR" ] && PEERS_DIR="$(cd "$PEERS_DIR" && pwd)"
BUDGET_S="${BUDGET_S:-450}"; MIN_LEFT_S="${MIN_LEFT_S:-60}"
RUN_TIMEOUT_S="${RUN_TIMEOUT_S:-150}"; COMPILE_TIMEOUT_S="${COMPILE_TIMEOUT_S:-200}"
if [ "$DEVICE" = cpu ]; then MATMUL_N="${MATMUL_N:-1024}"; else MATMUL_N="${MATMUL_N:-8192}"; fi
RUNS="${RUNS:-fusionjax:float32 fusionjax:tf32 fusionjax:bfloat16 flax-nnx:float32 flax-nnx:tf32 \
torch-eager:float32 torch-eager:tf32 torch-compile:float32 torch-compile:tf32 fusionjax-fast:tf32}"
OUT_DIR="${1:-${OUT:-$(mktemp -d /tmp/gpu_bench.XXXXXX)}}"
mkdir -p "$OUT_DIR"; OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d /tmp/gpu_bench_work.XXXXXX)"
RESULTS="$OUT_DIR/results.jsonl"; STATUS="$OUT_DIR/status.jsonl"; LOG="$OUT_DIR/runs.log"
: > "$RESULTS"; : > "$STATUS"; : > "$LOG"; rm -f "$OUT_DIR/matmul_peak.json" "$OUT_DIR/table.md"
export PYTHONUNBUFFERED=1 FUSIONJAX_PEERS="$PEERS_DIR"
# one fresh inductor cache for this script's torch-compile runs (the first compile is cold)
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
if [ -n "$THREADS" ]; then export TORCHINDUCTOR_COMPILE_THREADS="$THREADS"; fi

say() { echo "[gpu.sh $(( $(date +%s) - START ))s] $*" | tee -a "$LOG" >&2; }
status() {  # impl policy status reason seconds
  "$PYTHON" -c 'import json, sys; print(json.dumps(dict(zip(
      ["impl", "policy", "status", "reason", "seconds"], sys.argv[1:5] + [int(sys.argv[5])]))))' \
    "$@" >> "$STATUS"
}

say "device=$DEVICE workload=$WORKLOAD batch=${BATCH:-default} steps=$STEPS repeats=$REPEATS" \
    "warmup=$WARMUP budget=${BUDGET_S}s out=$OUT_DIR peers=$PEERS_DIR"
{ echo "== environment"; uname -a; "$PYTHON" --version
  command -v nvidia-smi >/dev/null && nvidia-smi -L; } >> "$LOG" 2>&1

# --- what is there: frameworks, peers, fusionjax --------------------------------------------
MISSING="$("$PYTHON" - <<'PY' 2>>"$LOG"
import importlib, sys
missing = []
for mod in ("numpy", "jax", "flax", "optax", "torch"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod} {getattr(m, '__version__', '?')}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001
        missing.append(mod)
        print(f"{mod}: MISSING ({type(e).__name__}: {e})", file=sys.stderr)
print(" ".join(missing))
PY
)"
if [ -n "$MISSING" ]; then say "MISSING Python modules: $MISSING (their runs are skipped)"; fi
has() { case " $MISSING " in *" $1 "*) return 1 ;; *) return 0 ;; esac; }
if ! has jax || ! has numpy; then say "cannot run anything without jax and numpy"; fi
if [ ! -f "$PEERS_DIR/harness.py" ]; then
  say "peers not found at $PEERS_DIR (set PEERS_DIR): only the matmul rate can run"
fi

fusionjax_ok() {
  "$PYTHON" -c 'import importlib.metadata as m, fusionjax, fusionjax_plugins
names = {ep.name for ep in m.entry_points(group="fusionjax.plugins")}
assert {"cnn_image", "lstm_text", "spectrogram_audio"} <= names, names' >> "$LOG" 2>&1
}
if has jax && has flax && has optax && ! fusionjax_ok; then
  say "fusionjax is not installed: pip install -e . --no-deps (offline)"
  if ! "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e . >> "$LOG" 2>&1 \
      || ! fusionjax_ok; then
    # no pip or an old setuptools: import the checkout directly, with the bundled plugins'
    # entry points declared by a minimal dist-info (importlib.metadata finds it on sys.path)
    say "pip install failed (see runs.log): using the checkout via PYTHONPATH instead"
    mkdir -p "$WORK/site" && ln -sfn "$ROOT/plugins" "$WORK/site/fusionjax_plugins"
    "$PYTHON" - "$ROOT/pyproject.toml" "$WORK/site" <<'PY' >> "$LOG" 2>&1
import sys, tomllib, pathlib
project = tomllib.loads(pathlib.Path(sys.argv[1]).read_text())["project"]
info = pathlib.Path(sys.argv[2]) / f"fusionjax-{project['version']}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fusionjax\nVersion: {project['version']}\n")
eps = project["entry-points"]["fusionjax.plugins"]
(info / "entry_points.txt").write_text("[fusionjax.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
PY
    export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    fusionjax_ok || say "fusionjax still not importable: its runs will fail (see runs.log)"
  fi
fi

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# run NAME POLICY TIMEOUT JSON_DEST -- command...: logged, timed out, never fatal
run() {
  local impl="$1" policy="$2" limit="$3" dest="$4"; shift 5
  local remaining; remaining=$(left)
  if [ "$remaining" -lt "$MIN_LEFT_S" ]; then
    say "skip $impl $policy: ${remaining}s of the ${BUDGET_S}s budget left"
    status "$impl" "$policy" skipped "budget (${remaining}s left)" 0; return
  fi
  [ "$limit" -gt "$remaining" ] && limit="$remaining"
  local t0 rc; t0=$(date +%s); rm -f "$WORK/run.json"
  say "run $impl $policy (timeout ${limit}s)"
  { echo; echo "== $impl $policy: $*"; } >> "$LOG"
  timeout -k 10 "$limit" "$@" > "$WORK/run.log" 2>&1; rc=$?
  cat "$WORK/run.log" >> "$LOG"
  local secs=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 0 ] && [ -s "$WORK/run.json" ]; then
    # the run's JSON line, with the policy this script asked for (on a CPU, --tf32 is a no-op
    # and the harness's dtype says float32)
    local summary; summary="$("$PYTHON" - "$WORK/run.json" "$policy" "$dest" "$impl" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read())
d.setdefault("policy", sys.argv[2])
d.setdefault("run", sys.argv[4])
with open(sys.argv[3], "a") as f:
    f.write(json.dumps(d) + "\n")
print(", ".join(f"{k} {d[k]}" for k in ("samples_per_s", "step_ms_median", "compile_s", "tflops")
                if k in d))
PY
)"
    rm -f "$WORK/run.json"
    status "$impl" "$policy" ok "" "$secs"
    say "  done in ${secs}s: $summary"
  else
    local what=failed reason="exit $rc"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then what=timeout; reason="after ${limit}s"; fi
    status "$impl" "$policy" "$what" "$reason" "$secs"
    say "  $impl $policy $what ($reason); last lines:"
    tail -n 8 "$WORK/run.log" | sed 's/^/    /' >&2
  fi
}

# --- the chip's bf16 matmul rate ------------------------------------------------------------
if has jax; then
  run matmul-bf16 bfloat16 120 "$OUT_DIR/matmul_peak.json" -- \
    "$PYTHON" benchmarks/matmul_peak.py --device "$DEVICE" --n "$MATMUL_N" ${THREADS:+--threads "$THREADS"} \
    --json "$WORK/run.json"
fi

# --- the train steps ------------------------------------------------------------------------
COMMON=(--workload "$WORKLOAD" --device "$DEVICE" --steps "$STEPS" --repeats "$REPEATS"
        --warmup "$WARMUP")
[ -n "$BATCH" ] && COMMON+=(--batch "$BATCH")
[ -n "$THREADS" ] && COMMON+=(--threads "$THREADS")
for spec in $RUNS; do
  impl="${spec%%:*}"; policy="${spec#*:}"; prefix=()
  case "$impl" in
    fusionjax)     script=(benchmarks/bench_workload.py); need="jax flax optax" ;;
    fusionjax-plain) script=(benchmarks/bench_workload.py); need="jax flax optax"
                   prefix=(env FUSIONJAX_FAST_PATHS=none) ;;
    fusionjax-fast) script=(benchmarks/bench_workload.py); need="jax flax optax"
                   prefix=(env FUSIONJAX_FAST_PATHS=malloc,max_pool,avg_pool,conv,lstm) ;;
    flax-nnx)      script=("$PEERS_DIR/flax_ref.py"); need="jax flax optax" ;;
    torch-eager)   script=("$PEERS_DIR/torch_ref.py"); need="torch" ;;
    torch-compile) script=("$PEERS_DIR/torch_ref.py" --compile); need="torch" ;;
    *) say "unknown run $spec"; continue ;;
  esac
  case "$policy" in
    float32) extra=() ;;
    tf32) extra=(--tf32) ;;
    bfloat16|float16)
      if [ "${script[0]}" != benchmarks/bench_workload.py ]; then
        status "$impl" "$policy" skipped "the peer has no $policy mode" 0; continue
      fi
      extra=(--precision "$policy" --tf32) ;;
    *) say "unknown policy in $spec"; continue ;;
  esac
  absent=""
  for mod in $need; do has "$mod" || absent="$absent $mod"; done
  if [ -n "$absent" ]; then
    say "skip $impl $policy: missing$absent"
    status "$impl" "$policy" skipped "missing$absent" 0; continue
  fi
  if [ ! -f "$PEERS_DIR/harness.py" ]; then
    status "$impl" "$policy" skipped "no peers at $PEERS_DIR" 0; continue
  fi
  limit="$RUN_TIMEOUT_S"; [ "$impl" = torch-compile ] && limit="$COMPILE_TIMEOUT_S"
  run "$impl" "$policy" "$limit" "$RESULTS" -- \
    ${prefix[@]+"${prefix[@]}"} "$PYTHON" "${script[@]}" "${COMMON[@]}" ${extra[@]+"${extra[@]}"} --json "$WORK/run.json"
done

# --- the table ------------------------------------------------------------------------------
echo >&2
"$PYTHON" benchmarks/mfu_table.py "$OUT_DIR"
say "total $(( $(date +%s) - START ))s; outputs in $OUT_DIR: $(cd "$OUT_DIR" && ls | tr '\n' ' ')"
rm -rf "$WORK"
