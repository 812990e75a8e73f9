"""Decoding throughput of a trained sequence run (a ``ctc`` or ``decoder`` head): sequences
per second, greedy against a beam of 4, on its test split, on this machine.

    python benchmarks/decoding.py RUN_DIR [RUN_DIR ...] [--batch 32] [--batches 8]

Each run's forward pass (the encoders and the head's ``__call__``) runs once per batch,
compiled; then each search is timed alone on those outputs, after one warm-up call:

* ``greedy``: the compiled greedy search the evaluation step runs (CTC: best path,
  repeats merged and blanks dropped; decoder: one token per step with a KV cache);
* ``beam 4``: what ``fusionjax predict`` runs, ``head.answer`` with ``beam = 4`` (CTC:
  the prefix beam search on the host; decoder: the compiled beam search), texts rendered.

The figures also give ``forward``, the forward pass alone, so the end-to-end rate of
either search is ``1 / (1 / forward + 1 / search)``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
from flax import nnx


def _timed(fn, batches) -> float:
    """Sequences per second of ``fn`` over ``batches`` (after one warm-up call)."""
    jax.block_until_ready(fn(batches[0]))
    start = time.perf_counter()
    for b in batches:
        jax.block_until_ready(fn(b))
    seconds = time.perf_counter() - start
    return sum(len(jax.tree.leaves(b)[0]) for b in batches) / seconds


def measure(run_dir: str, batch: int, n_batches: int) -> dict:
    import fusionjax as fj
    from fusionjax.interfaces import LABEL, mask_key

    run = fj.load_run(run_dir)
    model, dataset = run.model, run.assembly.dataset
    head = model.head
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, b: nnx.merge(graphdef, s)(b))
    inputs = []
    for b in dataset.batches("test", batch, seed=0, shuffle=False, drop_remainder=True):
        b = {k: v for k, v in b.items() if k != LABEL}
        for m in model.modalities:
            b.setdefault(mask_key(m), np.ones(batch, bool))
        inputs.append(b)
        if len(inputs) == n_batches:
            break
    rates = {"forward": _timed(lambda b: forward(state, b), inputs)}
    outputs = [jax.device_get(forward(state, b)) for b in inputs]
    head_def, head_state = nnx.split(head)
    kind = type(head).__name__
    if kind == "CTCHead":
        from fusionjax_plugins.heads.ctc import greedy
        search = jax.jit(greedy)
        rates["greedy"] = _timed(search, outputs)
    else:
        search = jax.jit(lambda s, p: nnx.merge(head_def, s).greedy(p)[0])
        rates["greedy"] = _timed(lambda p: search(head_state, p), outputs)
    saved, head.beam = head.beam, 4  # the run's own head, its beam width set to 4
    try:
        rates["beam 4"] = _timed(lambda p: head.answer(p), outputs)
    finally:
        head.beam = saved
    return {"run": run_dir, "head": run.dir.read_config()["model"]["head"]["type"], "batch": batch,
            "sequences": batch * len(inputs), **{k: round(v, 1) for k, v in rates.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=8)
    args = p.parse_args()
    rows = [measure(r, args.batch, args.batches) for r in args.runs]
    for r in rows:
        print(json.dumps(r))
    print("| run | head | forward seq/s | greedy seq/s | beam 4 seq/s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['run']} | {r['head']} | {r['forward']:.0f} | {r['greedy']:.0f} | {r['beam 4']:.0f} |")


if __name__ == "__main__":
    main()
