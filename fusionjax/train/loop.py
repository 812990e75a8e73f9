"""The training loop: one ``for`` over steps, logging and evaluation at intervals.

Outputs land in a run directory: ``config.json`` (the resolved config),
``run.json`` (versions, devices, plugins, skipped examples, absent inputs), whatever the data set
needs to read new inputs (e.g. ``vocab.json``), ``metrics.jsonl`` (one JSON object
per log or eval event), ``tensorboard/`` (the same metrics as TensorBoard scalars, see
:mod:`fusionjax.train.writers`) and ``checkpoint/params.msgpack`` (the final parameters).
On a terminal, a progress bar (:mod:`fusionjax.train.progress`) shows between the log lines.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from fusionjax.assembly import Assembly
from fusionjax.data.prefetch import Prefetcher
from fusionjax.errors import ConfigError, did_you_mean
from fusionjax.interfaces import LABEL, Batch, mask_key
from fusionjax.parallel import data_mesh, shard_batch
from fusionjax.train.progress import Progress
from fusionjax.train.step import Steps, TrainState, make_steps
from fusionjax.train.writers import open_writers


@dataclass
class RunResult:
    run_dir: Path
    state: TrainState
    steps: Steps
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]


def train(assembly: Assembly, run_dir: str | Path, *, mesh=None,
          log: Callable[[str], None] = print, progress: TextIO | None = None) -> RunResult:
    """Train, evaluate and write the run directory.  ``progress``: a stream for the
    progress bar, drawn only if it is a terminal."""
    cfg = assembly.train
    mesh = mesh or data_mesh()
    n_dev = mesh.devices.size
    eval_batch = cfg.eval_batch_size or cfg.batch_size
    for key, value in (("train.batch_size", cfg.batch_size), ("train.eval_batch_size", eval_batch)):
        if value % n_dev:
            raise ConfigError(f"{value} does not split evenly over {n_dev} devices", key=key,
                              hint=f"use a multiple of {n_dev}")
    # In a multi-process run every process computes; only process 0 writes.
    writer = jax.process_index() == 0
    run_dir = Path(run_dir)
    if writer:
        _new_run_dir(run_dir)
        _write_json(run_dir / "config.json", assembly.resolved_config())
        _write_json(run_dir / "run.json", _run_facts(mesh))
        assembly.dataset.save(run_dir)

    model = assembly.build()
    head = model.head
    steps = make_steps(model, assembly.optimizer, mesh, modality_dropout=cfg.modality_dropout,
                       seed=cfg.seed, grad_accumulation=cfg.grad_accumulation,
                       precision=cfg.precision)
    state = steps.init
    del model  # its arrays now live in `state`
    head_finalize = type(head).finalize_metrics

    metrics = open_writers(run_dir, enabled=writer)
    # A background thread reads and places batch n+1 while the device runs batch n.
    batches = Prefetcher(_epochs(assembly, cfg.batch_size, cfg.seed),
                         lambda b: shard_batch(b, mesh), size=2)
    pending: list[dict] = []
    t_start = t_last = time.perf_counter()
    train_metrics: dict[str, float] = {}
    bar = Progress(cfg.steps, cfg.batch_size, progress,
                   loss_of=lambda stats: head_finalize(jax.device_get(stats)).get("loss"))
    with bar:
        log_line = bar.around(log)
        for step in range(1, cfg.steps + 1):
            state, stats = steps.train(state, next(batches))
            pending.append(stats)  # device arrays: nothing waits on the device here
            if step == 1:
                jax.block_until_ready(stats)
                log_line(f"compiled and ran the first step in {time.perf_counter() - t_start:.1f} s")
                t_last = time.perf_counter()
                pending.clear()
            elif step % cfg.log_every == 0 or step == cfg.steps:
                totals = _sum_stats(jax.device_get(pending))  # host waits for the device here
                train_metrics = head_finalize(totals)
                now = time.perf_counter()
                rate = len(pending) * cfg.batch_size / (now - t_last)
                t_last, pending = now, []
                metrics.write({"step": step, "split": "train", **train_metrics,
                               "examples_per_s": round(rate, 1)})
                log_line(f"step {step:>6}/{cfg.steps} | " + _fmt(train_metrics)
                         + f" | {rate:7.1f} ex/s | {now - t_start:6.1f} s")
            bar.update(step, stats)

    batches.close()
    eval_metrics = evaluate(steps, state, assembly, cfg.eval_split, eval_batch, mesh)
    problems = list(assembly.dataset.problems)
    absent = {m: list(v) for m, v in assembly.dataset.absent_inputs.items() if v}
    facts = {}
    if problems:
        log(f"skipped {len(problems)} unreadable examples (listed in run.json), e.g. {problems[0]}")
        facts["skipped_examples"] = problems
    if absent:
        log(f"absent inputs (listed in run.json): {absent_summary(absent)}")
        facts["absent_inputs"] = {m: len(v) for m, v in absent.items()}
        facts["absent_examples"] = absent
    if facts and writer:
        facts = {**json.loads((run_dir / "run.json").read_text()), **facts}
        _write_json(run_dir / "run.json", facts)
    metrics.write({"step": cfg.steps, "split": cfg.eval_split, **eval_metrics})
    metrics.close()
    log(f"{cfg.eval_split}: {_fmt(eval_metrics)}")
    if writer:
        _save_params(run_dir / "checkpoint" / "params.msgpack", state)
        log(f"run directory: {run_dir}")
    return RunResult(run_dir, state, steps, train_metrics, eval_metrics)


class Evaluation(NamedTuple):
    metrics: dict[str, float]
    examples: int  # examples scored: those left with at least one present modality


def evaluate(steps: Steps, state: TrainState, assembly: Assembly, split: str, batch_size: int,
             mesh, *, drop: Sequence[str] = ()) -> dict[str, float]:
    """Metrics over a whole split; the last short batch is padded with weight-0 rows.

    ``drop`` names modalities to treat as absent in every example (their masks turn
    False; the model zeroes their inputs).  See :func:`evaluate_split`."""
    return evaluate_split(steps, state, assembly, split, batch_size, mesh, drop=drop).metrics


def evaluate_split(steps: Steps, state: TrainState, assembly: Assembly, split: str,
                   batch_size: int, mesh, *, drop: Sequence[str] = ()) -> Evaluation:
    """:func:`evaluate`, also counting the examples scored.

    Every batch carries a mask for every modality (all True where the data set has
    none), so whatever ``drop`` is, the batches have one structure and ``steps.eval``
    compiles once.  An example left with no modality at all (it lacked the ones that
    ``drop`` keeps) is not scored: it gets weight 0, and its own masks back so that the
    forward pass sees a valid input."""
    modalities = tuple(assembly.encoders)
    check_modalities(drop, modalities)
    drop = frozenset(drop)
    if drop >= set(modalities):
        raise ConfigError("dropping every modality leaves the model nothing to read",
                          hint=f"keep at least one of: {', '.join(modalities)}")
    totals, scored = [], 0
    for batch in assembly.dataset.batches(split, batch_size, seed=0, shuffle=False,
                                          drop_remainder=False):
        n = len(batch[LABEL])
        batch = dict(batch)
        weights = np.zeros(batch_size, np.float32)
        weights[:n] = 1.0
        if n < batch_size:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - n, 0)])
                     for k, v in batch.items()}
        given = {m: np.asarray(batch.get(mask_key(m), np.ones(batch_size, bool)), bool)
                 for m in modalities}
        kept = {m: given[m] & (m not in drop) for m in modalities}
        anything = np.any([kept[m] for m in modalities], axis=0)
        for m in modalities:
            batch[mask_key(m)] = np.where(anything, kept[m], given[m])
        weights *= anything
        scored += int(weights.sum())
        totals.append(steps.eval(state, shard_batch(batch, mesh), jnp.asarray(weights)))
    metrics = type(steps.merge(state).head).finalize_metrics(_sum_stats(jax.device_get(totals)))
    return Evaluation(metrics, scored)


def check_modalities(names: Iterable[str], modalities: Sequence[str]) -> None:
    """A :class:`ConfigError` (with a did-you-mean) for a name that is no modality."""
    for name in names:
        if name not in modalities:
            raise ConfigError(f"the model has no modality {name!r}{did_you_mean(name, modalities)}",
                              hint=f"its modalities are: {', '.join(modalities)}")


def absent_summary(absent) -> str:
    """``"image 2, caption 1"``: how many examples lack each modality."""
    return ", ".join(f"{m} {len(v)}" for m, v in absent.items() if v)


def _epochs(assembly: Assembly, batch_size: int, seed: int) -> Iterator[Batch]:
    """Full batches of the train split, reshuffled every epoch."""
    for epoch in itertools.count():
        yield from assembly.dataset.batches("train", batch_size, seed=seed * 1_000_003 + epoch,
                                            shuffle=True, drop_remainder=True)


def _sum_stats(stats: list[dict]) -> dict[str, np.ndarray]:
    """Element-wise totals of additive statistics (scalars or per-class vectors)."""
    return {k: np.sum([np.asarray(s[k]) for s in stats], axis=0) for k in stats[0]} if stats else {}


def _fmt(metrics: dict[str, float]) -> str:
    return " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _new_run_dir(path: Path) -> None:
    if (path / "metrics.jsonl").exists():
        raise ConfigError(f"run directory {str(path)!r} already holds a run",
                          hint="choose a new directory (--output-dir or train.output_dir), or "
                               "remove the old run; fusionjax never overwrites a run")
    path.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _run_facts(mesh) -> dict:
    from importlib.metadata import version

    from fusionjax.plugins import loaded

    return {
        "versions": {p: version(p) for p in ("fusionjax", "jax", "flax", "optax")},
        "devices": [str(d) for d in mesh.devices.flat],
        "processes": jax.process_count(),
        "plugins": {p.name: {"package": p.package, "version": p.version, "status": p.status}
                    for p in loaded().plugins},
    }


def _save_params(path: Path, state: TrainState) -> None:
    """The final parameters, written atomically (a temp file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = serialization.msgpack_serialize(nnx.to_pure_dict(jax.device_get(state.params)))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
