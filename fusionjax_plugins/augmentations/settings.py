"""What the bundled augmentations share: checking a probability or a range setting (a
:class:`~fusionjax.errors.ConfigError` at the parameter's key) and drawing from a range.

A range setting is one number (always that value) or ``[low, high]`` (drawn uniformly for
each example): ``db = 3`` or ``db = [-6, 6]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusionjax.errors import ConfigError, shown

Range = tuple[float, float]


def probability(value: float, key: str) -> float:
    """``value`` if it is a probability in ``[0, 1]``."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"must be a probability in [0, 1], got {shown(value)}", key=key)
    return float(value)


def value_range(value: float | Sequence[float], key: str, *, low: float | None = None,
                high: float | None = None, unit: str = "") -> Range:
    """``value`` (a number or ``[low, high]``) as ``(low, high)``, each within the bounds
    ``low`` / ``high`` when given (inclusive)."""
    lo, hi = (value, value) if isinstance(value, int | float) else tuple(value)
    unit = f" {unit}" if unit else ""
    if lo > hi:
        raise ConfigError(f"[{lo}, {hi}] is not a range: its low end is above its high end",
                          key=key, hint=f"write [{hi}, {lo}]")
    if low is not None and lo < low or high is not None and hi > high:
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"must lie within {bounds}{unit}, got {shown(value)}", key=key)
    return float(lo), float(hi)


def non_negative(value: float, key: str, unit: str = "") -> float:
    """``value`` if it is ``>= 0``."""
    if value < 0:
        raise ConfigError(f"must be >= 0{f' {unit}' if unit else ''}, got {shown(value)}", key=key)
    return float(value)


def draw(rng: np.random.Generator, bounds: Range) -> float:
    """One value of ``bounds``, uniformly (the value itself for a fixed setting; one draw
    from ``rng`` either way, so a setting's form never shifts the draws after it)."""
    lo, hi = bounds
    u = rng.random()
    return lo if lo == hi else lo + (hi - lo) * u


def background(image: np.ndarray) -> np.ndarray:
    """Each channel's minimum, ``[C]``: an image's background, whatever its normalisation
    (a normalised MNIST digit's background is ``-mean / std``, not 0)."""
    return image.min(axis=(0, 1))
