"""Random-access sources (:meth:`fusionjax.interfaces.Dataset.source`) for the common cases."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


class ArraySource:
    """A split held in memory as equally long arrays: ``source[i]`` is row ``i`` of each."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays of different lengths: { {k: len(v) for k, v in arrays.items()} }")
        self.arrays = dict(arrays)
        self._n = lengths.pop()

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}

    def read_many(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[indices] for k, v in self.arrays.items()}


class LazySource:
    """A split whose examples are made when read: ``source[i] = read(i)`` for ``i < n``
    (``read`` must pickle: the pipeline may call it in a worker process)."""

    def __init__(self, n: int, read: Callable[[int], dict[str, np.ndarray]]):
        self._n, self._read = n, read

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self._n:
            raise IndexError(f"example {index} of {self._n}")
        return self._read(index)
