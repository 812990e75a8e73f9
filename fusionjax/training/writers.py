"""Where a run's metrics go: every record to every writer of the run.

A record is one log or eval event, ``{"step": 200, "split": "train", "loss": ...,
"accuracy": ..., "examples_per_s": ...}``.  :func:`open_writers` gives the writers of
a run directory:

* ``metrics.jsonl``: the record as one JSON line (line-buffered, so a crash loses
  nothing written and ``fusionjax plot`` can read a run in progress);
* ``tensorboard/``: TensorBoard event files (``tensorboard --logdir runs``), each
  number of the record a scalar tagged ``<split>/<name>`` (``train/loss``,
  ``test/accuracy``, ``train/examples_per_s``) at its step.

Only process 0 of a multi-process run writes (``enabled=False`` elsewhere).
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fusionjax.rundir import RunDir

class MetricWriter(Protocol):
    def write(self, record: dict) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    def __init__(self, path: Path):
        self._file = open(path, "a", buffering=1)

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


class TensorBoardWriter:
    def __init__(self, logdir: Path):
        from tensorboardX import SummaryWriter  # imported only by a training run

        self._writer = SummaryWriter(str(logdir))

    def write(self, record: dict) -> None:
        step, split = record["step"], record["split"]
        for name, value in record.items():
            if name not in ("step", "split") and _is_number(value):
                self._writer.add_scalar(f"{split}/{name}", value, step)
        self._writer.flush()  # records are rare (log points): a live TensorBoard sees each one

    def close(self) -> None:
        self._writer.close()


class MetricWriters:
    """Fans each record out to ``writers`` (none: records go nowhere)."""

    def __init__(self, writers: list[MetricWriter], records: int = 0):
        self.writers = writers
        self.records = records  # records in the run's log so far (counted on every process)

    def write(self, record: dict) -> None:
        self.records += 1
        for w in self.writers:
            w.write(record)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def open_writers(run: RunDir, *, enabled: bool = True, keep_lines: int | None = None) -> MetricWriters:
    """``keep_lines``: a resumed run first cuts ``metrics.jsonl`` back to the records
    written up to its checkpoint (later ones are written again, identically).  The
    TensorBoard files are appended to; TensorBoard shows the latest value of a step."""
    if not enabled:
        return MetricWriters([], keep_lines or 0)
    truncate_jsonl(run.metrics_file, keep_lines or 0)
    return MetricWriters([JsonlWriter(run.metrics_file), TensorBoardWriter(run.tensorboard_dir)],
                         keep_lines or 0)


def truncate_jsonl(path: Path, lines: int) -> None:
    """Keep the first ``lines`` lines of ``path``, atomically (a temp file, then a rename)."""
    if not path.exists():
        return
    kept = path.read_text().splitlines(keepends=True)[:lines]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
