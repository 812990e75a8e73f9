"""The training loop: one ``for`` over steps, logging and evaluation at intervals.

Outputs land in a run directory (:mod:`fusionjax.rundir` owns its layout): the
resolved config, the facts of the run, the metrics (JSON lines and TensorBoard, see
:mod:`fusionjax.training.writers`), the checkpoints to resume from and, last, the final
model.  On a terminal, a progress bar (:mod:`fusionjax.training.progress`) shows
between the log lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax import tuning
from fusionjax.assembly import Assembly
from fusionjax.data.pipeline import TrainBatches
from fusionjax.errors import ConfigError, TrainingError, did_you_mean
from fusionjax.evaluation import absent_summary, evaluate, sum_stats
from fusionjax.interfaces import LABEL
from fusionjax.parallel import bytes_per_device, data_mesh, place_local_batch
from fusionjax.rundir import RunDir
from fusionjax.training.checkpoint import Checkpoints
from fusionjax.training.early_stopping import Tracker, default_mode
from fusionjax.training.progress import Progress
from fusionjax.training.step import Steps, TrainState, make_steps
from fusionjax.training.writers import open_writers


@dataclass
class RunResult:
    run_dir: Path
    state: TrainState
    steps: Steps
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]


def train(assembly: Assembly, run_dir: str | Path, *, mesh=None,
          log: Callable[[str], None] = print, progress: TextIO | None = None) -> RunResult:
    """Train, evaluate and write the run directory -- or, when ``run_dir`` holds an
    unfinished run of the same config, resume it from its latest checkpoint.
    ``progress``: a stream for the progress bar, drawn only if it is a terminal."""
    cfg = assembly.train
    mesh = mesh or data_mesh()
    n_dev = mesh.devices.size
    if n_dev != assembly.devices:  # assembled for jax.device_count() devices; a smaller mesh here
        cfg.check_devices(n_dev)
    eval_batch = cfg.eval_batch(n_dev)
    # In a multi-process run every process computes; only process 0 writes.
    writer = jax.process_index() == 0
    run = RunDir(run_dir)
    resuming = run.open_for_training(assembly.resolved_config(), write=writer, facts=_run_facts(mesh),
                                     dataset=assembly.dataset)
    # the formulation of each op the step meets: the run's own (recorded) when resuming
    if resuming:
        tuning.use(run.read_facts().get("formulations") or {})
    else:
        tuning.use(choose_formulations(assembly, mesh, eval_batch, log=log))
        if writer:
            run.add_facts({"formulations": tuning.active()})

    checkpoints = Checkpoints(run.checkpoints_dir, keep=cfg.keep_checkpoints)
    latest = checkpoints.latest_step()
    # a resumed run's parameters come from its checkpoint: its init_from sources are not read
    model = assembly.build(init_from=latest is None)
    head_finalize = type(model.head).finalize_metrics
    steps = make_steps(model, assembly.optimizer, mesh, cfg)
    del model  # its arrays now live in `steps.init`
    if cfg.shard_params:
        log(f"parameters and optimiser state split over {n_dev} devices: "
            f"{bytes_per_device(steps.init) / 1e6:.2f} MB on each")
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        steps.init)
    val_split = cfg.validation_split or cfg.eval_split
    tracker = _tracker(assembly, steps)
    state, start, keep_lines, data_state = steps.init, 0, 0, None
    if latest is not None:
        state, meta = checkpoints.restore(latest, like)
        start, keep_lines = meta["batches"], meta["metrics_lines"]
        # each process's pipeline state; with another process count the pipeline starts
        # afresh at batch `start` (the same batches: they depend only on their position)
        saved = meta.get("data") or []
        data_state = saved[jax.process_index()] if len(saved) == jax.process_count() else None
        tracker = Tracker(**meta["tracker"]) if tracker else None
        log(f"resuming from the checkpoint of step {latest} ({checkpoints.path / str(latest)})")

    def save(step: int) -> None:
        if not bool(_all_finite(state.params)):
            raise TrainingError(f"the parameters became NaN/Inf by step {step}; "
                                + _last_good(checkpoints))
        checkpoints.save(step, state, {"batches": step, "data": _all_processes(batches.state()),
                                       "metrics_lines": metrics.records,
                                       "tracker": tracker.record() if tracker else None,
                                       "config": assembly.resolved_config()},
                         best=tracker.best_step if tracker else None)

    metrics = open_writers(run, enabled=writer, keep_lines=keep_lines)
    # The data pipeline reads, augments and places batch n+1 while the device runs batch n;
    # each process reads only its rows; a resumed run continues at the checkpoint's batch.
    batches = TrainBatches(assembly.dataset, cfg.batch_size, seed=cfg.seed, steps=cfg.steps,
                           place=partial(place_local_batch, mesh=mesh), process=jax.process_index(),
                           processes=jax.process_count(), settings=assembly.pipeline,
                           augment=assembly.augmenter, start=start, resume=data_state)
    pending: list[dict] = []
    t_start = t_last = time.perf_counter()
    train_metrics: dict[str, float] = {}
    last_saved, step, evaluated = start, start, None  # (a run resumed at its last step skips the loop)
    bar = Progress(cfg.steps, cfg.batch_size, progress,
                   loss_of=lambda stats: head_finalize(jax.device_get(stats)).get("loss"))
    with bar, closing(batches):  # the pipeline's threads and workers stop however the loop ends
        log_line = bar.around(log)
        for step in range(start + 1, cfg.steps + 1):
            state, stats = steps.train(state, next(batches))
            pending.append(stats)  # device arrays: nothing waits on the device here
            if step == start + 1:
                jax.block_until_ready(stats)
                log_line(f"compiled and ran the first step in {time.perf_counter() - t_start:.1f} s")
                t_last = time.perf_counter()
                if step == 1:
                    pending.clear()  # step 1 (it includes compiling) is timed on its own
            elif step % cfg.log_every == 0 or step == cfg.steps:
                per_step = jax.device_get(pending)  # host waits for the device here
                _check_finite(per_step, step - len(per_step) + 1, checkpoints)
                # the loss can stay finite while NaN gradients reach the parameters (XLA:CPU's
                # fused ReLU clamps a NaN activation to 0; the weight gradient keeps the NaN):
                # one reduction per log point, not per step (per step it cost 4.5% of a step)
                if not bool(_all_finite(state.params)):
                    raise TrainingError(f"the parameters became NaN/Inf between steps "
                                        f"{step - len(per_step) + 1} and {step} (the loss stayed "
                                        "finite); " + _last_good(checkpoints))
                train_metrics = head_finalize(sum_stats(per_step))
                now = time.perf_counter()
                rate = len(pending) * cfg.batch_size / (now - t_last)
                t_last, pending = now, []
                lr = assembly.learning_rate_at(step - 1)
                metrics.write({"step": step, "split": "train", **train_metrics,
                               **({"learning_rate": lr} if lr is not None else {}),
                               "examples_per_s": round(rate, 1)})
                log_line(f"step {step:>6}/{cfg.steps} | " + _fmt(train_metrics)
                         + f" | {rate:7.1f} ex/s | {now - t_start:6.1f} s")
                evaluated = None
                if tracker and step % cfg.eval_every == 0:
                    evaluated = evaluate(steps, state, assembly, val_split, eval_batch, mesh).metrics
                    metrics.write({"step": step, "split": val_split, **evaluated})
                    best = tracker.update(step, evaluated)
                    log_line(f"{val_split} at step {step}: {_fmt(evaluated)}" + (" (best)" if best else ""))
                    t_last = time.perf_counter()  # the evaluation is not training time
                if evaluated is not None or step - last_saved >= cfg.checkpoint_every or step == cfg.steps:
                    save(step)
                    last_saved = step
                if tracker and tracker.should_stop:
                    log_line(f"early stopping at step {step}: {tracker.metric} has not improved for "
                             f"{tracker.patience} evaluations (best {tracker.best:.4f} at step "
                             f"{tracker.best_step})")
                    break
            bar.update(step, stats)

    if tracker and cfg.restore_best and tracker.best_step is not None and tracker.best_step != step:
        state, _ = checkpoints.restore(tracker.best_step, like)
        evaluated = None  # that evaluation was of another model
        log(f"the final model is the best evaluation's: step {tracker.best_step}, "
            f"{tracker.metric} {tracker.best:.4f}")
    checkpoints.close()
    if evaluated is not None and val_split == cfg.eval_split:
        eval_metrics = evaluated  # the last step was just evaluated on this split: not twice
    else:
        eval_metrics = evaluate(steps, state, assembly, cfg.eval_split, eval_batch, mesh).metrics
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
        run.add_facts(facts)
    metrics.write({"step": step, "split": cfg.eval_split, **eval_metrics})
    metrics.close()
    log(f"{cfg.eval_split}: {_fmt(eval_metrics)}")
    run.save_model(state.params)  # collective; written last: it marks a finished run
    if writer:
        log(f"run directory: {run.path}")
    return RunResult(run.path, state, steps, train_metrics, eval_metrics)


def _tracker(assembly: Assembly, steps: Steps) -> Tracker | None:
    """The best-model tracker of a run with periodic evaluations (its metric checked
    against the head's metrics now, not after the first evaluation)."""
    cfg = assembly.train
    if cfg.eval_every is None:
        return None
    settings = dict(cfg.early_stopping)
    metric = settings.pop("metric", "loss")
    names = _metric_names(assembly, steps)
    if metric not in names:
        raise ConfigError(f"the head reports no metric {metric!r}{did_you_mean(metric, names)}",
                          key="train.early_stopping.metric", hint=f"its metrics: {', '.join(names)}")
    return Tracker(metric, mode=settings.pop("mode", default_mode(metric)), **settings)


def _metric_names(assembly: Assembly, steps: Steps) -> list[str]:
    """The names ``finalize_metrics`` gives, from zero statistics of the right shapes."""
    model = steps.merge(steps.init)

    def stats(batch):
        return model.head.metric_stats(model(batch), batch[LABEL], jnp.ones((2,)))

    shapes = jax.eval_shape(stats, assembly.example_batch(2))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return list(type(model.head).finalize_metrics(zeros))


def _check_finite(per_step: list[dict], first_step: int, checkpoints: Checkpoints) -> None:
    """Stop the run at the first step whose statistics (its loss) are NaN or infinite."""
    for i, stats in enumerate(per_step):
        if not all(np.all(np.isfinite(np.asarray(v, np.float64))) for v in jax.tree.leaves(stats)):
            raise TrainingError(f"the loss became NaN/Inf at step {first_step + i}; "
                                + _last_good(checkpoints))


def _last_good(checkpoints: Checkpoints) -> str:
    latest = checkpoints.latest_step()
    if latest is None:
        return "no checkpoint was written before it"
    return (f"the last good checkpoint is step {latest} ({checkpoints.path / str(latest)}), and "
            "nothing after it was saved; lower the learning rate or clip gradients "
            "(train.optimizer.clip_norm) and re-run `fusionjax train` on this directory to resume")


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _all_processes(state: dict) -> list[dict]:
    """Every process's data position (only process 0 writes the checkpoint's meta)."""
    if jax.process_count() == 1:
        return [state]
    from jax.experimental import multihost_utils

    text = json.dumps(state).encode()
    longest = int(np.max(multihost_utils.process_allgather(np.array([len(text)], np.int32))))
    every = multihost_utils.process_allgather(np.frombuffer(text.ljust(longest), np.uint8))
    return [json.loads(bytes(row).decode().rstrip()) for row in every]


def _fmt(metrics: dict[str, float]) -> str:
    return " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def choose_formulations(assembly: Assembly, mesh, eval_batch: int | None = None, *,
                        log: Callable[[str], None] = lambda s: None) -> dict[str, str]:
    """The fastest formulation of every op with more than one that the train step (and,
    given ``eval_batch``, the eval step) meets, on this machine (:mod:`fusionjax.tuning`;
    process 0's in every process); ``{}`` with ``FUSIONJAX_TUNING=off``."""
    if not tuning.enabled():
        return {}
    probe = make_steps(assembly.abstract_model(), assembly.optimizer, mesh, assembly.train)
    with tuning.recording() as found:  # an abstract trace of each step: nothing runs
        jax.eval_shape(probe.train, probe.init, assembly.example_batch(assembly.train.batch_size))
        batch = assembly.example_batch(eval_batch or 1)
        if eval_batch and LABEL in batch:
            jax.eval_shape(probe.eval, probe.init, batch, jax.ShapeDtypeStruct((eval_batch,), jnp.float32))
    table = tuning.tune(found, log=log) if jax.process_index() == 0 else {}
    return tuning.agreed(table)


def _run_facts(mesh) -> dict:
    from importlib.metadata import version

    from fusionjax import allocator, fast_paths
    from fusionjax.plugins import loaded

    return {
        "versions": {p: version(p) for p in ("fusionjax", "jax", "flax", "optax")},
        "fast_paths": {name: fast_paths.enabled(name) for name in sorted(fast_paths.declared())},
        "malloc": allocator.applied(),
        "devices": [str(d) for d in mesh.devices.flat],
        "processes": jax.process_count(),
        "plugins": {p.name: {"package": p.package, "version": p.version, "status": p.status}
                    for p in loaded().plugins},
    }
