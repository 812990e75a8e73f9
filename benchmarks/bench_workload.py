"""fusionjax's train step on a reference workload, timed exactly like the peers.

The model is assembled from ``benchmarks/<workload>.toml`` (``small`` or ``large``)
with the bundled components; the inputs, the timing loop and the JSON line come
from the peers' shared harness (``../shared/bench/peers/harness.py``), so the
numbers compare one to one with ``flax_ref.py``.

    python benchmarks/bench_workload.py --workload small --steps 30 --repeats 3
    python benchmarks/bench_workload.py --workload large --device gpu --precision bfloat16 --tf32
    FUSIONJAX_PEERS=/path/to/peers python benchmarks/bench_workload.py ...

``--precision`` is ``train.precision`` (float32, or bfloat16 / float16 mixed precision:
float32 parameters and optimiser state, the model run in that dtype).  On a GPU the
matmul precision follows the harness: strict float32
(``jax_default_matmul_precision=highest``) unless ``--tf32``.

Extras in the JSON line, besides the harness's: ``params``, ``precision``,
``matmul_precision``, ``fast_paths`` and the FLOPs of one train step from XLA's cost
analysis: ``flops_per_step`` (the model's FLOPs, the denominator-free half of MFU)
counts every ``lax.scan`` body (the LSTM's time steps, forward and backward) once
per iteration (:func:`fusionjax.summary.estimate_flops`) and is taken with the fast
paths off (the plain formulation of every layer, as in the peers);
``flops_per_step_as_run`` is the same count of the step as timed (fast paths as
set); ``flops_per_step_xla`` is the compiled step's own ``cost_analysis()``, in
which XLA counts a loop body once whatever its trip count (so it is low by the
recurrence).  ``--no-flops`` skips them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("FUSIONJAX_PEERS", ROOT.parent / "shared" / "bench" / "peers"))
if not (PEERS / "harness.py").exists():
    sys.exit(f"peers not found at {PEERS}: set FUSIONJAX_PEERS to ../shared/bench/peers")
sys.path.insert(0, str(PEERS))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def _extra(p):
    p.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="train.precision: the compute dtype of the train step")
    p.add_argument("--no-flops", action="store_true",
                   help="skip the FLOP count of the train step (XLA cost analysis)")


args = harness.parse_args("fusionjax", _extra)
harness.setup_env(args)  # threads and platform, before JAX is imported

import jax  # noqa: E402
import numpy as np  # noqa: E402
from workload_data import PEER_PARAMS, assemble_workload  # noqa: E402

from fusionjax import tuning  # noqa: E402
from fusionjax.parallel import data_mesh, shard_batch  # noqa: E402
from fusionjax.training.loop import choose_formulations  # noqa: E402
from fusionjax.training.step import make_steps  # noqa: E402

STRICT = args.device == "gpu" and not args.tf32
if STRICT:
    jax.config.update("jax_default_matmul_precision", "highest")


def main():
    assembly = assemble_workload(args.workload, [
        f"train.batch_size={args.batch}", f"train.seed={args.seed}",
        f"train.precision={args.precision}", f"data.train_size={max(args.batch, 2048)}"])
    params = int(sum(assembly.param_counts().values()))
    # the same network as the peers (their README gives the counts)
    assert params == PEER_PARAMS[args.workload], (params, PEER_PARAMS[args.workload])
    mesh = data_mesh(jax.devices()[:1])
    # the formulations a training run would choose on this machine (timed now, or cached)
    t0 = time.perf_counter()
    tuning.use(choose_formulations(assembly, mesh, log=lambda s: print(s, file=sys.stderr)))
    tuning_s = time.perf_counter() - t0
    steps = make_steps(assembly.build(), assembly.optimizer, mesh, assembly.train)
    raw = harness.make_inputs(args.cfg, args.batch, args.seed)
    batch = shard_batch({"image": raw["image"], "text": raw["tokens"], "audio": raw["audio"],
                         "label": raw["labels"]}, mesh)
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), steps.init)
    state = steps.init

    def step():
        nonlocal state
        state, stats = steps.train(state, batch)
        return stats["loss_sum"]

    if args.precision != "float32":
        dtype = args.precision
    else:
        dtype = "tf32" if (args.tf32 and args.device == "gpu") else "float32"
    setting = os.environ.get("FUSIONJAX_FAST_PATHS", "all")
    impl = "fusionjax" if setting == "all" else \
        "fusionjax-plain" if setting == "none" else f"fusionjax[{setting}]"
    if setting != "none" and not tuning.enabled():
        impl += "-untuned"  # FUSIONJAX_TUNING=off: every op at its default formulation
    res = harness.time_training(step, jax.block_until_ready, args, impl,
                                {"jax": jax.__version__, "fusionjax": _version()}, dtype=dtype)
    assert np.isfinite(float(state.step))
    res.update(params=params, precision=args.precision,
               matmul_precision="highest" if STRICT else "default",
               fast_paths=setting, formulations=tuning.active(), tuning_s=round(tuning_s, 2))
    if not args.no_flops:
        res.update(step_flops(steps, abstract_state, state, batch))
    harness.emit(res, args)


def step_flops(steps, abstract_state, state, batch) -> dict:
    """The FLOPs of one train step (see the module docstring).  ``flops_per_step`` is
    the model's FLOPs: the step traced with every fast path off, i.e. the plain JAX
    formulation of each layer, the same arithmetic as the peers' (a fast path
    reformulates an operation, e.g. a conv weight gradient as matmuls, which can change
    what XLA counts); ``flops_per_step_as_run`` is the same count of the step as timed."""
    from fusionjax import fast_paths
    from fusionjax.summary import estimate_flops

    t0 = time.perf_counter()
    out = {}
    fn = getattr(steps.train, "__wrapped__", steps.train)
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}

    def count():  # a new function object each time: traced afresh, never a cached trace
        return estimate_flops(lambda s, b: fn(s, b), abstract_state, abstract_batch)

    try:
        with fast_paths.override(all=False):
            out["flops_per_step"] = count()
        out["flops_per_step_as_run"] = count()
    except Exception as e:  # noqa: BLE001 - the timing still stands without it
        out["flops_error"] = f"{type(e).__name__}: {e}"[:300]
    try:  # the executable the timing used (already compiled: a cache hit)
        cost = steps.train.lower(state, batch).compile().cost_analysis()
        if isinstance(cost, list | tuple):  # one dict per program in some jax versions
            cost = cost[0] if cost else {}
        out["flops_per_step_xla"] = float((cost or {}).get("flops", 0.0))
    except Exception as e:  # noqa: BLE001
        out["flops_xla_error"] = f"{type(e).__name__}: {e}"[:300]
    out["flops_s"] = round(time.perf_counter() - t0, 2)
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fusionjax")
    except PackageNotFoundError:  # importable from the checkout without being installed
        return "checkout"


if __name__ == "__main__":
    main()
