"""Batches from in-memory arrays: the loop every array-backed data set needs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from fusionjax.interfaces import LABEL, Batch


def array_batches(data: Mapping[str, np.ndarray], batch_size: int, *, seed: int, shuffle: bool,
                  drop_remainder: bool) -> Iterator[Batch]:
    """One pass over equally long arrays, in a seeded random order when ``shuffle``;
    the last batch is short unless ``drop_remainder``."""
    n = len(data[LABEL])
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield {k: v[idx] for k, v in data.items()}
