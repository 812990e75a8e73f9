"""Best-model tracking and early stopping on one evaluation metric."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def default_mode(metric: str) -> str:
    """``"min"`` for losses and errors (error rates such as ``cer`` and ``wer`` too), ``"max"``
    for everything else (accuracy, F1, ...)."""
    lowered = metric.lower()
    return "min" if any(w in lowered for w in ("loss", "error", "mse", "mae", "rmse", "cer", "wer")) \
        else "max"


@dataclass
class Tracker:
    """Follows ``metric`` over the periodic evaluations.

    An evaluation *improves* when it beats the best so far by more than
    ``min_delta``; after ``patience`` evaluations in a row without improvement,
    :attr:`should_stop` turns True (``patience = 0``: never stop, only track the
    best).  The whole record is plain data, saved with every checkpoint so that a
    resumed run stops exactly where the uninterrupted one would.
    """

    metric: str
    mode: str = "max"
    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record one evaluation; True when it is the best so far."""
        value = metrics[self.metric]
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def record(self) -> dict:
        return asdict(self)
