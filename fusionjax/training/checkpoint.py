"""A run's checkpoints, managed by Orbax: ``<checkpoints dir>/<step>/`` (the run directory's
``checkpoints/``, see :mod:`fusionjax.rundir`).

A checkpoint holds everything an exact resume needs:

* ``state``: the :class:`~fusionjax.training.step.TrainState` -- step, parameters, the
  other variables (RNG counters, ...), the optimiser state;
* ``meta`` (JSON): the data position -- the number of training batches consumed and
  each process's pipeline state (Grain's iterator state, see
  :class:`fusionjax.data.pipeline.TrainBatches`), from which the pipeline continues at
  the next batch without reading the ones before it -- the length of ``metrics.jsonl``
  at that step, the early-stopping record, and the resolved config.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a process killed while writing leaves the previous checkpoints intact
(an unfinished one is never listed).  It keeps the ``keep`` most recent ones and
the best one (by the run's best-model tracker, min_delta included) as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """The ``keep`` most recent checkpoints of a run, plus the one its best-model
    tracker points at (``save(..., best=step)``)."""

    def __init__(self, path: str | Path, *, keep: int = 2):
        self.keep = keep
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,  # a checkpoint is on disk when save() returns
            cleanup_tmp_directories=True,  # a write cut short by a kill is removed, never read
        )
        self.path = Path(path).absolute()
        self._manager = ocp.CheckpointManager(self.path, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: Mapping[str, Any], *, best: int | None = None) -> None:
        """Write the checkpoint of ``step``, then drop those neither recent nor ``best``."""
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(dict(meta))),
                           force=True)
        kept = set(sorted(self._manager.all_steps())[-self.keep:]) | {best}
        for old in self._manager.all_steps():
            if old not in kept:
                self._manager.delete(old)

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """The state at ``step`` (shaped and placed like the pytree ``like``) and its meta."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), like)
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out.state, dict(out.meta)

    def close(self) -> None:
        self._manager.close()
