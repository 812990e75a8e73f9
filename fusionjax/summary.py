"""The model summary: parameters, their bytes and estimated FLOPs, per component.

``fusionjax config check`` and the start of ``fusionjax train`` print it.  FLOPs come
from XLA's cost analysis of the *lowered* programs (nothing is compiled, run or
allocated): the forward pass of each component and of the whole model, and the train
step that ``fusionjax train`` runs (:func:`fusionjax.training.step.make_steps` with the
run's settings: precision, gradient accumulation, modality dropout, the optimiser
update) at ``train.batch_size``, each divided by the batch size.

XLA counts the body of a loop once, whatever its trip count; :func:`estimate_flops`
multiplies the body of each ``lax.scan`` (an LSTM's time steps) by its length.  A
``while_loop`` of unknown length stays counted once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx
from jax.extend.core import ClosedJaxpr, Jaxpr, jaxpr_as_fun, jaxprs_in_params

from fusionjax.interfaces import LABEL


@dataclass(frozen=True)
class Row:
    key: str  # config key path, e.g. "model.encoders.audio"
    name: str  # qualified component name
    params: int
    bytes: int
    flops: float | None  # forward FLOPs per example


@dataclass(frozen=True)
class ModelSummary:
    rows: list[Row]
    forward_flops: float | None  # per example, the whole model
    train_flops: float | None  # per example, one training step at `batch_size`
    batch_size: int
    seconds: float  # spent estimating FLOPs
    note: str = ""  # why there are no FLOPs, when the cost analysis failed
    step: str = ""  # the train step's settings, e.g. "bfloat16, 4 micro-batches"
    optimizer_bytes: int = 0  # the optimiser's state (none for frozen components)
    frozen: tuple[str, ...] = ()  # key paths of the components with trainable = false


def summarize(assembly, *, flops: bool = True) -> ModelSummary:
    """The summary of ``assembly``'s model; ``flops=False`` skips the cost analysis."""
    model = assembly.abstract_model()
    batch_size = assembly.train.batch_size
    t0 = time.perf_counter()
    per_part, forward, train, note = {}, None, None, ""
    if flops:
        try:
            per_part, forward, train = _model_flops(model, assembly, batch_size)
        except Exception as e:  # noqa: BLE001 - a component XLA cannot analyse; the rest still prints
            note = f"no FLOPs estimate: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    rows = []
    for part, module in assembly.components(model):
        leaves = jax.tree.leaves(nnx.state(module, nnx.Param))
        rows.append(Row(part.key, part.spec.qualified_name,
                        int(sum(np.prod(x.shape) for x in leaves)),
                        int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves)),
                        per_part.get(part.key)))
    cfg = assembly.train
    step = cfg.precision + (f", {cfg.grad_accumulation} micro-batches" if cfg.grad_accumulation > 1 else "")
    params = nnx.state(model, nnx.Param)
    opt_state = jax.eval_shape(assembly.optimizer.init, params)
    optimizer_bytes = int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                              for x in jax.tree.leaves(opt_state)))
    frozen = tuple(p.key for p in assembly.parts if not p.training.trainable or p.training.lr_scale == 0)
    return ModelSummary(rows, forward, train, batch_size, time.perf_counter() - t0, note, step,
                        optimizer_bytes, frozen)


def format_summary(summary: ModelSummary) -> list[str]:
    """The ``model`` table of ``config check``: a row per component, the total, the train step."""
    table = [("model", "", "params", "bytes", "forward FLOPs/example")]
    table += [(f"  {r.key}", r.name, f"{r.params:,}", _bytes(r.bytes), _si(r.flops)) for r in summary.rows]
    table.append(("  total", "", f"{sum(r.params for r in summary.rows):,}",
                  _bytes(sum(r.bytes for r in summary.rows)), _si(summary.forward_flops)))
    if summary.forward_flops is None:
        table = [row[:4] for row in table]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}"
              + "".join(f"  {c:>{w}}" for c, w in zip(row[2:], widths[2:]))).rstrip() for row in table]
    if summary.train_flops is not None:
        lines.append(f"  train step: {_si(summary.train_flops)}FLOPs per example (the step as it runs: "
                     f"{summary.step}, at batch {summary.batch_size})")
    frozen = f" (none for the frozen {', '.join(summary.frozen)})" if summary.frozen else ""
    lines.append(f"  optimiser state: {_bytes(summary.optimizer_bytes)}{frozen}")
    if summary.note:
        lines.append(f"  ({summary.note})")
    return lines


def _model_flops(model, assembly, batch_size: int):
    """(forward FLOPs per example of each component, of the model, of one train step)."""
    from fusionjax.parallel import data_mesh
    from fusionjax.training.step import make_steps

    per_part = _component_flops(model, assembly, batch_size)
    batch = assembly.example_batch(batch_size)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    forward = estimate_flops(lambda p, r, b: nnx.merge(graphdef, p, r)(b), params, rest, batch)
    train = None
    if LABEL in batch:
        steps = make_steps(model, assembly.optimizer, data_mesh(), assembly.train)
        train = estimate_flops(steps.train, steps.init, batch) / batch_size
    return per_part, forward / batch_size, train


def estimate_flops(fn: Callable, *args) -> float:
    """XLA's FLOP count of ``fn`` on ``args`` (arrays or ``jax.ShapeDtypeStruct``), with
    every ``lax.scan`` body counted once per iteration."""
    return _flops(jax.make_jaxpr(fn)(*args))


def _flops(closed: ClosedJaxpr) -> float:
    # XLA counted each scan body once: add the other length - 1 passes (and their own scans).
    total = _xla_flops(closed)
    for eqn in _scans(closed.jaxpr):
        body = eqn.params["jaxpr"]
        total += eqn.params["length"] * _flops(body) - _xla_flops(body)
    return total


def _xla_flops(closed: ClosedJaxpr) -> float:
    args = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in closed.in_avals]
    cost = jax.jit(jaxpr_as_fun(closed)).lower(*args).cost_analysis()
    if isinstance(cost, list | tuple):  # one dict per program in some jax versions
        cost = cost[0] if cost else None
    return float((cost or {}).get("flops", 0.0))


def _scans(jaxpr: Jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            yield eqn
        else:
            for sub in jaxprs_in_params(eqn.params):
                yield from _scans(sub)


def _component_flops(model, assembly, batch_size: int) -> dict[str, float]:
    """Forward FLOPs per example of each encoder (with its tokens when the fusion reads
    them), of the fusion and of the head, each on inputs of the shapes it receives."""
    batch = assembly.example_batch(batch_size)
    reads_tokens = model.head.inputs == "tokens"
    tokens = reads_tokens or (model.fusion is not None and model.fusion.uses_tokens)

    def encode(enc, x):
        if reads_tokens:  # the model computes the token sequences only
            return None, enc.tokens(x)
        return enc(x), (enc.tokens(x) if tokens else None)

    out, inputs = {}, {}
    for m in assembly.encoders:
        key = f"model.encoders.{m}"
        out[key], inputs[m] = _cost(model.encoders[m], encode, batch[m])
    embeddings = {m: e for m, (e, _) in inputs.items()}
    masks = {m: jax.ShapeDtypeStruct((batch_size,), bool) for m in embeddings}
    if reads_tokens:
        seqs = {m: s for m, (_, s) in inputs.items()}
        out["model.head"], _ = _cost(model.head, lambda h, t, k: h(t, k), seqs, masks)
    elif model.fusion is None:
        out["model.head"], _ = _cost(model.head, lambda h, e, k: h(e, k), embeddings, masks)
    else:
        seqs = {m: s for m, (_, s) in inputs.items()} if tokens else None
        out["model.fusion"], fused = _cost(model.fusion, lambda f, *a: f(*a), embeddings, masks, seqs)
        out["model.head"], _ = _cost(model.head, lambda h, x: h(x), fused)
    return {k: v / batch_size for k, v in out.items()}


def _cost(module, fn, *args):
    """FLOPs of ``fn(module, *args)`` and the shapes it returns."""
    graphdef, state = nnx.split(module)

    def call(s, *a):
        return fn(nnx.merge(graphdef, s), *a)

    return estimate_flops(call, state, *args), jax.eval_shape(call, state, *args)


def _si(value: float | None) -> str:
    if value is None:
        return "?"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} "


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
