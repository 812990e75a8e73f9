"""fusionjax's train step on a reference workload, timed exactly like the peers.

The model is assembled from a config (``benchmarks/small.toml`` by default) with
the bundled components; the inputs, the timing loop and the JSON line come from
the peers' shared harness (``../shared/bench/peers/harness.py``), so the
numbers compare one to one with ``flax_ref.py``.

    python benchmarks/bench_small.py --workload small --steps 30 --repeats 3
    FUSIONJAX_PEERS=/path/to/peers python benchmarks/bench_small.py ...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("FUSIONJAX_PEERS", ROOT.parent / "shared" / "bench" / "peers"))
if not (PEERS / "harness.py").exists():
    sys.exit(f"peers not found at {PEERS}: set FUSIONJAX_PEERS to ../shared/bench/peers")
sys.path.insert(0, str(PEERS))
import harness  # noqa: E402

args = harness.parse_args("fusionjax")
harness.setup_env(args)  # threads and platform, before JAX is imported

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fusionjax.assembly import assemble  # noqa: E402
from fusionjax.config import load_config  # noqa: E402
from fusionjax.parallel import data_mesh, shard_batch  # noqa: E402
from fusionjax.train.step import make_steps  # noqa: E402

if args.device == "gpu" and not args.tf32:
    jax.config.update("jax_default_matmul_precision", "highest")


def main():
    config = load_config(ROOT / "benchmarks" / f"{args.workload}.toml",
                         [f"train.batch_size={args.batch}", f"train.seed={args.seed}"])
    assembly = assemble(config)
    counts = assembly.param_counts()
    mesh = data_mesh(jax.devices()[:1])
    steps = make_steps(assembly.build(), assembly.optimizer, mesh)
    raw = harness.make_inputs(args.cfg, args.batch, args.seed)
    batch = shard_batch({"image": raw["image"], "text": raw["tokens"], "audio": raw["audio"],
                         "label": raw["labels"]}, mesh)
    state = steps.init

    def step():
        nonlocal state
        state, stats = steps.train(state, batch)
        return stats["loss_sum"]

    res = harness.time_training(step, jax.block_until_ready, args, "fusionjax",
                                {"jax": jax.__version__, "fusionjax": _version()},
                                extra={"params": int(sum(counts.values()))})
    assert np.isfinite(float(state.step))
    harness.emit(res, args)


def _version() -> str:
    from importlib.metadata import version

    return version("fusionjax")


if __name__ == "__main__":
    main()
