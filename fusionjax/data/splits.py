"""Seeded, reproducible splits (optionally stratified by label)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def split_indices(n: int, fractions: Mapping[str, float], *, seed: int,
                  stratify: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Disjoint index sets covering ``range(n)``, sized by ``fractions`` (which sum to 1).

    With ``stratify`` (one label per example) every split keeps the label
    proportions: each class is shuffled and cut on its own.  The same ``seed``
    always gives the same split; indices within a split are sorted."""
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-9 or min(fractions.values()) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if stratify is None else [
        np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    out: dict[str, list[np.ndarray]] = {name: [] for name in fractions}
    for group in groups:
        group = rng.permutation(group)
        cuts = np.round(np.cumsum(list(fractions.values())) * len(group)).astype(int)
        for name, part in zip(fractions, np.split(group, cuts[:-1])):
            out[name].append(part)
    return {name: np.sort(np.concatenate(parts)) for name, parts in out.items()}
