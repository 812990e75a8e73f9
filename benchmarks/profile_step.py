"""Where does a config's train step spend its time?  The top XLA operations of the
compiled step, from a JAX profiler trace, with the JAX operation each came from.

    python benchmarks/profile_step.py benchmarks/small.toml [key=value ...] [--top 25]
    FUSIONJAX_FAST_PATHS=none python benchmarks/profile_step.py benchmarks/small.toml

Prints the median step time, the page faults per step (a step whose buffers are
mapped afresh every time shows tens of thousands), and per operation: milliseconds
per step, calls per step (a loop body runs once per iteration), the output shape and
the JAX source operation.  This is how the fast paths of the bundled components were
found (docs/performance.md).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import resource
import tempfile
import time

import fusionjax  # noqa: F401  (first: it tunes malloc before JAX starts its threads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=10, help="profiled steps")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()

    import jax
    import numpy as np

    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax.parallel import data_mesh, shard_batch
    from fusionjax.training.step import make_steps

    assembly = assemble(load_config(args.config, args.overrides))
    mesh = data_mesh(jax.devices()[:1])
    steps = make_steps(assembly.build(), assembly.optimizer, mesh, assembly.train)
    batch = shard_batch(next(assembly.dataset.batches(
        "train", assembly.train.batch_size, seed=0, shuffle=True, drop_remainder=True)), mesh)
    state = steps.init
    hlo = steps.train.lower(state, batch).compile().as_text()
    for _ in range(5):
        state, stats = steps.train(state, batch)
    jax.block_until_ready(stats)

    times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        t = time.perf_counter()
        state, stats = steps.train(state, batch)
        jax.block_until_ready(stats)
        times.append(time.perf_counter() - t)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 20
    print(f"step: {1000 * np.median(times):.1f} ms (median of 20), {faults:.0f} page faults/step, "
          f"batch {assembly.train.batch_size}")

    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                state, stats = steps.train(state, batch)
                jax.block_until_ready(stats)
        (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))["traceEvents"]

    # name -> (output shape, source op) from the optimised HLO
    info = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
        if m:
            source = re.search(r'op_name="([^"]*)"', line)
            info.setdefault(m.group(1), (m.group(2), source.group(1) if source else ""))
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in info:
            total[e["name"]] += e["dur"]
            calls[e["name"]] += 1
    n = args.steps
    print(f"{'ms/step':>8} {'calls':>5}  {'operation':32} {'shape':28} source")
    for name, us in total.most_common(args.top):
        shape, source = info[name]
        source = source.removeprefix("jit(train_step)/")
        print(f"{us / n / 1000:8.2f} {calls[name] // n:5d}  {name[:32]:32} {shape[:28]:28} {source[:70]}")
    print(f"{'':8} sum of all operations: {sum(total.values()) / n / 1000:.1f} ms/step")


if __name__ == "__main__":
    main()
