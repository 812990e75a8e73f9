"""``fusionjax plot``: the curves of one or more runs, from their ``metrics.jsonl``.

One subplot per metric; each run has one colour, its training log points drawn as a
line and its evaluation results (the final eval split) as markers, labelled with the
run directory's name.  Matplotlib (Agg backend, no display needed) is imported only
here, so no other command pays for it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from fusionjax.errors import ConfigError, NotARunError, did_you_mean
from fusionjax.rundir import RunDir

NOT_METRICS = ("step", "split", "examples_per_s")


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``; a torn last line (a run still writing) is skipped."""
    path = RunDir(run_dir).metrics_file
    if not path.is_file():
        raise NotARunError(f"no {path.name} (not a fusionjax run directory, or its training has "
                           "not started)", path=run_dir)
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in records if isinstance(r, dict) and "step" in r and "split" in r]


def metric_names(records: list[dict]) -> list[str]:
    """Numeric metrics in first-seen order, ``loss`` first."""
    names = dict.fromkeys(k for r in records for k, v in r.items()
                          if k not in NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool))
    return sorted(names, key=lambda k: k != "loss")


def plot_runs(run_dirs: list[Path], out: Path, metrics: list[str] | None = None) -> Path:
    """Draw the runs' curves into ``out`` (a PNG) and return its path."""
    runs = {_label(d, run_dirs): read_metrics(d) for d in run_dirs}
    available = metric_names([r for records in runs.values() for r in records])
    if metrics:
        for name in metrics:
            if name not in available:
                raise ConfigError(f"--metrics: no metric {name!r} in these runs"
                                  f"{did_you_mean(name, available)}",
                                  hint=f"their metrics: {', '.join(available) or 'none'}")
    metrics = list(dict.fromkeys(metrics or available))
    if not metrics:
        raise ConfigError(f"nothing to plot: {', '.join(map(str, run_dirs))} logged no metrics yet")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics):
        for i, (label, records) in enumerate(runs.items()):
            colour = colours[i % len(colours)]
            train = [(r["step"], r[metric]) for r in records if r["split"] == "train" and metric in r]
            if train:
                ax.plot(*zip(*train), color=colour, label=f"{label} (train)")
            for split in dict.fromkeys(r["split"] for r in records if r["split"] != "train"):
                points = [(r["step"], r[metric]) for r in records if r["split"] == split and metric in r]
                if points:
                    ax.plot(*zip(*points), linestyle="none", marker="o", color=colour,
                            label=f"{label} ({split})")
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _label(run_dir: Path, run_dirs: list[Path]) -> str:
    """The directory's name, or its whole path when two runs share that name."""
    same = sum(d.resolve().name == run_dir.resolve().name for d in run_dirs)
    return run_dir.resolve().name if same == 1 else str(run_dir)
