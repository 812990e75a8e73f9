"""Formulations chosen per machine: the fastest of equivalent ways to compute an op.

Some ops have more than one formulation with the same values and gradients (within
float32 rounding): a convolution is XLA's convolution or a sum of matmuls over shifted
inputs, and which is faster depends on the CPU (its vector width, its caches, the
library XLA calls).  A kernel declares such an op and its candidates::

    FORWARD = tuning.declare("conv2d.forward", {"xla": conv_xla, "shifts": conv_shifts},
                             default="xla")
    ...
    y = tuning.pick(FORWARD, x, w)(x, w)   # while tracing: the chosen candidate

and a training run chooses once per shape, on the machine it runs on:

1. :func:`recording` collects the ``(op, shapes)`` a trace of the step meets
   (an abstract trace: nothing runs);
2. :func:`tune` times every candidate of each on random arrays of those shapes (jitted,
   compiled first, the median of a few calls) and keeps the fastest -- another than the
   default only if it is clearly faster (:data:`MARGIN`); the choices are
   cached on disk (``$FUSIONJAX_TUNING_CACHE``, default
   ``~/.cache/fusionjax/tuning.json``), keyed by the machine (:func:`machine`: CPU
   model and flags, cores, JAX version) and the shapes, so each is timed once per machine;
3. :func:`use` makes the table the one :func:`pick` reads while the real step is traced.

The run records its table in ``run.json`` (``formulations``); a resumed run and a loaded
run use the recorded table, not the cache, so resuming stays bitwise exact even on a
machine that would choose otherwise.  In a multi-process run, process 0's choices are
used by every process.  ``FUSIONJAX_TUNING=off`` keeps every op at its default.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV, CACHE_ENV = "FUSIONJAX_TUNING", "FUSIONJAX_TUNING_CACHE"
CALLS = 5  # timed calls per candidate (after one that compiles and warms up)
# Another candidate replaces the default only if it is at least this much faster alone:
# timed on its own an op misses how XLA fuses it with its neighbours in the step, and a
# near-tie flips with noise (measured: a 1% win of the first audio conv's forward as
# matmuls made the whole `small` step 5% slower)
MARGIN = 0.85


@dataclass(frozen=True)
class Op:
    """An op with interchangeable formulations: ``candidates`` by name, each called with
    the same arrays.  ``timed``: what is timed -- ``"call"``, the candidate itself (an op
    whose backward pass is an op of its own, like each of a convolution's three), or
    ``"gradient"``, its forward and backward pass together (the gradient of the sum of its
    outputs with respect to its float inputs: a candidate with its own custom VJP).
    ``prefer``: candidates that are the default for some shapes only, each with its test
    on the arrays (e.g. a formulation for few input channels), in order."""

    name: str
    candidates: Mapping[str, Callable[..., Any]]
    default: str
    timed: str = "call"
    prefer: Mapping[str, Callable[..., bool]] = field(default_factory=dict)

    def default_for(self, *arrays: Any) -> str:
        """The candidate used where nothing was tuned, for these arrays (or shapes): the
        first of :attr:`prefer` whose test holds for them, else :attr:`default`."""
        return next((name for name, holds in self.prefer.items() if holds(*arrays)), self.default)


_ops: dict[str, Op] = {}
_table: dict[str, str] = {}  # "op shapes" -> candidate, as :func:`use` set it
_recording: list[dict[str, tuple[Op, tuple]]] = []


def declare(name: str, candidates: Mapping[str, Callable[..., Any]], default: str, *,
            timed: str = "call", prefer: Mapping[str, Callable[..., bool]] | None = None) -> Op:
    """Make op ``name`` known with its ``candidates``; ``default`` is used where nothing
    was tuned, unless a test of ``prefer`` holds for the arrays; ``timed`` as :class:`Op`
    says."""
    for d in [default, *(prefer or {})]:
        if d not in candidates:
            raise ValueError(f"default {d!r} is not one of {sorted(candidates)}")
    if timed not in ("call", "gradient"):
        raise ValueError(f"timed must be 'call' or 'gradient', got {timed!r}")
    op = Op(name, dict(candidates), default, timed, dict(prefer or {}))
    _ops[name] = op
    return op


def declared() -> dict[str, Op]:
    """Every op declared so far, by name."""
    return dict(_ops)


def signature(*arrays: Any) -> str:
    """``f32[64,31,32,32] f32[3,3,32,64]``: what a choice is keyed by."""
    import numpy as np

    return " ".join(f"{np.dtype(a.dtype).name}[{','.join(map(str, a.shape))}]" for a in arrays)


def pick(op: Op, *arrays: Any) -> Callable[..., Any]:
    """The candidate of ``op`` to use for ``arrays`` (while tracing; recorded if a
    :func:`recording` is open)."""
    key = f"{op.name} {signature(*arrays)}"
    for found in _recording:
        import jax

        found[key] = (op, tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays))
    choice = _table.get(key)
    return op.candidates[choice if choice in op.candidates else op.default_for(*arrays)]


@contextlib.contextmanager
def recording() -> Iterator[dict[str, tuple[Op, tuple]]]:
    """Collect the ``{key: (op, shapes)}`` that :func:`pick` meets inside the block."""
    found: dict[str, tuple[Op, tuple]] = {}
    _recording.append(found)
    try:
        yield found
    finally:
        _recording.remove(found)


def use(table: Mapping[str, str]) -> None:
    """Make ``table`` (``{key: candidate}``) the choices of every later trace (a choice
    its op does not have, e.g. from another version of a plugin, means the default)."""
    _table.clear()
    _table.update({k: v for k, v in table.items() if isinstance(k, str) and isinstance(v, str)})


def active() -> dict[str, str]:
    return dict(_table)


def enabled() -> bool:
    return os.environ.get(ENV, "on").strip().lower() not in ("off", "0", "false", "none")


def machine() -> str:
    """What a choice depends on besides the shapes: the CPU (model, the vector
    extensions), the cores this process may use, and the JAX version."""
    import jax

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                model = value.strip()
            elif name.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    vector = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
              if f in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} [{' '.join(vector)}] {cores} cores, jax {jax.__version__} {jax.default_backend()}"


def cache_path() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fusionjax" / "tuning.json"
    return Path(os.environ.get(CACHE_ENV) or default)


def tune(found: Mapping[str, tuple[Op, tuple]], *, log: Callable[[str], None] = lambda s: None
         ) -> dict[str, str]:
    """The fastest candidate of each recorded ``(op, shapes)`` on this machine: from the
    cache if it was timed there among the op's present candidates, else timed (and added
    to the cache)."""
    path, where = cache_path(), machine()
    cache = _read(path)
    known = cache.get(where, {})
    # timed again: a shape not in the cache, and one timed among other candidates than the
    # op has now (a newer version of its plugin added or removed a formulation)
    todo = {k: v for k, v in found.items() if len(v[0].candidates) > 1
            and set(known.get(k, {}).get("ms", ())) != set(v[0].candidates)}
    if todo:
        t0 = time.perf_counter()
        for key, (op, shapes) in sorted(todo.items()):
            times = time_candidates(op, shapes)
            default = op.default_for(*shapes)
            known[key] = {"choice": best(op, times, default), "default": default,
                          "ms": {name: round(t * 1e3, 3) for name, t in times.items()}}
        log(f"timed the formulations of {len(todo)} op shapes on this machine in "
            f"{time.perf_counter() - t0:.1f} s (cached in {path})")
        cache[where] = known
        _write(path, cache)
    return {k: known[k]["choice"] if k in known else found[k][0].default_for(*found[k][1])
            for k in sorted(found)}


def best(op: Op, times: Mapping[str, float], default: str) -> str:
    """The fastest candidate, if it beats ``default`` (the op's default for the shapes
    timed) by :data:`MARGIN`; else ``default``."""
    fastest = min(times, key=times.get)
    return fastest if times[fastest] < MARGIN * times[default] else default


def time_candidates(op: Op, shapes: tuple) -> dict[str, float]:
    """Seconds per call of each candidate on random arrays of ``shapes`` (the median of
    :data:`CALLS` calls, after one that compiles)."""
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    args = [jax.device_put(rng.standard_normal(s.shape).astype(s.dtype)) for s in shapes]
    floats = tuple(i for i, a in enumerate(args) if jax.numpy.issubdtype(a.dtype, jax.numpy.floating))
    times = {}
    for name, fn in op.candidates.items():
        if op.timed == "gradient":
            def total(*a, fn=fn):
                return sum(x.astype(np.float32).sum() for x in jax.tree.leaves(fn(*a)))

            f = jax.jit(jax.grad(total, argnums=floats))
        else:
            f = jax.jit(fn)
        jax.block_until_ready(f(*args))
        calls = []
        for _ in range(CALLS):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            calls.append(time.perf_counter() - t0)
        times[name] = statistics.median(calls)
    return times


def agreed(table: Mapping[str, str]) -> dict[str, str]:
    """``table`` as process 0 has it, in every process of a multi-process run."""
    import jax

    if jax.process_count() == 1:
        return dict(table)
    import numpy as np
    from jax.experimental import multihost_utils

    text = json.dumps(dict(table), sort_keys=True).encode()
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(text))))
    buf = np.zeros(size, np.uint8)
    buf[:min(size, len(text))] = np.frombuffer(text, np.uint8)[:size]
    return json.loads(bytes(multihost_utils.broadcast_one_to_all(buf)).decode())


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: timed again (and rewritten)
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: Mapping[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)  # whole or not at all, also with runs writing side by side
    except OSError:
        pass  # a read-only home: the choices hold for this run, and are timed again next time
