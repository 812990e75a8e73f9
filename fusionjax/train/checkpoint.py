"""A run's checkpoints, managed by Orbax: ``<run_dir>/checkpoints/<step>/``.

A checkpoint holds everything an exact resume needs:

* ``state``: the :class:`~fusionjax.train.step.TrainState` -- step, parameters, the
  other variables (RNG counters, ...), the optimiser state;
* ``meta`` (JSON): the data position (the number of training batches consumed, from
  which the batch stream is rebuilt exactly: every epoch's order is a function of
  ``train.seed`` and the epoch), the length of ``metrics.jsonl`` at that step, the
  early-stopping record, and the resolved config.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a process killed while writing leaves the previous checkpoints intact
(an unfinished one is never listed).  It keeps the ``keep`` most recent ones and,
with a ``best_metric``, the best one as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

DIRECTORY = "checkpoints"


class Checkpoints:
    def __init__(self, run_dir: str | Path, *, keep: int = 2, best_metric: str | None = None,
                 best_mode: str = "max"):
        self.best_metric, self.best_mode = best_metric, best_mode
        preserve: list = [policies.LatestN(keep)]
        if best_metric is not None:
            preserve.append(policies.BestN(get_metric_fn=lambda m: m[best_metric],
                                           reverse=best_mode == "min", n=1,
                                           keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(preserve),
            best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode=best_mode,
            enable_async_checkpointing=False,  # a checkpoint is on disk when save() returns
            cleanup_tmp_directories=True,  # a write cut short by a kill is removed, never read
        )
        self.path = Path(run_dir).absolute() / DIRECTORY
        self._manager = ocp.CheckpointManager(self.path, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best ``best_metric`` (None without one)."""
        return self._manager.best_step() if self.best_metric else None

    def save(self, step: int, state: Any, meta: Mapping[str, Any],
             metrics: Mapping[str, float] | None = None) -> None:
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(dict(meta))),
                           metrics=dict(metrics) if metrics is not None else None, force=True)

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """The state at ``step`` (shaped and placed like the pytree ``like``) and its meta."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), like)
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out.state, dict(out.meta)

    def close(self) -> None:
        self._manager.close()
