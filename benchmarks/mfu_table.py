"""The table of ``benchmarks/gpu.sh``: throughput, step time, compile time and MFU.

    python benchmarks/mfu_table.py OUT_DIR      # prints the table, writes OUT_DIR/table.md

Reads from ``OUT_DIR``: ``results.jsonl`` (the harness's JSON lines, one per run),
``matmul_peak.json`` (``matmul_peak.py``'s line) and ``status.jsonl`` (one line per
run that ``gpu.sh`` started or skipped: ``impl``, ``policy``, ``status``, ``reason``).

MFU = FLOPs of one train step / median step time / measured bf16 matmul rate.  A
fusionjax row uses its own ``flops_per_step``; the peers (same network) use the
FLOPs of fusionjax's float32 step at the same batch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["fusionjax", "fusionjax-fast", "fusionjax-plain", "flax-nnx", "torch-eager", "torch-compile"]
POLICIES = ["float32", "tf32", "bfloat16", "float16"]


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reference_flops(rows: list[dict]) -> dict | None:
    """The fusionjax row whose FLOP count stands for the peers: float32 first."""
    own = [r for r in rows if r.get("impl") == "fusionjax" and r.get("flops_per_step")]
    own.sort(key=lambda r: r.get("fast_paths") == "none")  # any of them: the same model FLOPs
    for pol in ("float32", "tf32"):
        for r in own:
            if policy(r) == pol:
                return r
    return None


def policy(r: dict) -> str:
    """The precision policy a run was asked for (``gpu.sh`` adds it), else its dtype."""
    return r.get("policy") or r.get("dtype", "")


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def table(out: Path) -> list[str]:
    rows = read_jsonl(out / "results.jsonl")
    status = read_jsonl(out / "status.jsonl")
    peaks = read_jsonl(out / "matmul_peak.json")
    peak = peaks[0] if peaks else None
    peak_flops = peak["tflops"] * 1e12 if peak and peak.get("tflops") else None
    ref = reference_flops(rows)
    lines = []
    if rows:
        r0 = rows[0]
        lines.append(f"workload `{r0['workload']}`, device {r0['device']}"
                     f"{' (' + peak['device_kind'] + ')' if peak else ''}, batch {r0['batch']}, "
                     f"{r0['repeats']} repeats x {r0['steps']} timed steps after the first step "
                     f"and the warm-up")
        lines.append("")
    lines += ["| impl | policy | samples/s | step ms (median) | compile/first step s "
              "| TFLOP/s achieved | MFU |",
              "| --- | --- | --- | --- | --- | --- | --- |"]

    def key(r):
        impl, pol = r.get("run") or r.get("impl", ""), policy(r)
        return (ORDER.index(impl) if impl in ORDER else 99, POLICIES.index(pol) if pol in POLICIES else 99)

    borrowed = False
    for r in sorted(rows, key=key):
        flops = r.get("flops_per_step")
        mark = ""
        if flops is None and ref is not None and ref["batch"] == r["batch"]:
            flops, mark, borrowed = ref["flops_per_step"], " ¹", True
        achieved = flops / (r["step_ms_median"] / 1000) if flops else None
        mfu = f"{100 * achieved / peak_flops:.2f}%{mark}" if achieved and peak_flops else "n/a"
        rate = f"{achieved / 1e12:.2f}" if achieved else "n/a"
        lines.append(f"| {r.get('run') or r['impl']} | {policy(r)} | {r['samples_per_s']:.1f} | "
                     f"{r['step_ms_median']:.1f} | {r['compile_s']:.1f} | {rate} | {mfu} |")
    for s in sorted((s for s in status if s.get("status") != "ok"), key=key):
        lines.append(f"| {s['impl']} | {s['policy']} | {s['status']}: {s.get('reason', '')} "
                     f"| | | | |")

    notes = [""]
    if peak:
        notes.append(f"MFU = FLOPs of one train step / median step time / the measured dense bf16 "
                     f"matmul rate, {peak['tflops']:.1f} TFLOP/s (best {peak['tflops_max']:.1f}) on "
                     f"{peak['device_kind']}: median of {peak['repeats']} chains of {peak['iters']} "
                     f"dependent {peak['n']}x{peak['n']}x{peak['n']} bf16 products "
                     f"(`matmul_peak.py`).")
    else:
        notes.append("MFU: n/a (no matmul rate: `matmul_peak.py` did not run or failed).")
    if ref:
        notes.append(f"FLOPs per step (the model's): XLA's cost analysis of fusionjax's train step "
                     f"(loss, gradients, Adam update) traced with its fast paths off (the plain "
                     f"formulation of every layer, as in the peers), every `lax.scan` body (the "
                     f"LSTM's time steps, forward and backward) counted once per iteration: "
                     f"{_si(ref['flops_per_step'], 'FLOP')} at batch {ref['batch']} "
                     f"({policy(ref)}). The step as run (fast paths on) counts "
                     f"{_si(ref.get('flops_per_step_as_run'), 'FLOP')}; the compiled step's own "
                     f"`cost_analysis()`, which counts a loop body once, "
                     f"{_si(ref.get('flops_per_step_xla'), 'FLOP')}.")
    if borrowed:
        notes.append("¹ flax-nnx and torch rows: the FLOP count of fusionjax's float32 step at the "
                     "same batch (the same network: same layers and shapes; torch's `nn.LSTM` has "
                     "a second bias vector, 4H more parameters, negligible FLOPs).")
    notes.append("Policies: float32 = strict (`jax_default_matmul_precision=highest`; torch with "
                 "TF32 off); tf32 = default matmul precision (`--tf32`: TF32 allowed in cuBLAS and "
                 "cuDNN); bfloat16 = fusionjax `train.precision = \"bfloat16\"` (bf16 compute, "
                 "float32 parameters and Adam state; the STFT and mel filterbank stay float32, at "
                 "the default matmul precision)."
                 + (" On a CPU `--tf32` changes nothing." if rows and rows[0]["device"] == "cpu"
                    else ""))
    if any(r.get("run") == "fusionjax-fast" for r in rows):
        notes.append("fusionjax-fast: fusionjax with its fast paths forced on "
                     "(`FUSIONJAX_FAST_PATHS=malloc,max_pool,avg_pool,conv,lstm`); they were measured on "
                     "XLA:CPU and are off by default on other backends.")
    if any(r.get("run") == "fusionjax-plain" for r in rows):
        notes.append("fusionjax-plain: fusionjax with `FUSIONJAX_FAST_PATHS=none` (every fast path "
                     "off: XLA's own convolution gradients, max-pool gradient and LSTM backward).")
    if any(s.get("impl") == "torch-compile" and s.get("status") == "ok" for s in status):
        notes.append("torch-compile: the first run (float32) starts from an empty inductor cache "
                     "(a cold compile); the tf32 run after it shares that cache, so its first "
                     "step is not a cold compile.")
    return lines + notes


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: mfu_table.py OUT_DIR")
    out = Path(argv[0])
    lines = table(out)
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main(sys.argv[1:])
