"""Audio augmentations: one example, a float waveform ``[samples]`` at the data set's
``sample_rate`` (a parameter of that name is taken from the data set's metadata).

Every output keeps the clip's length: what moves out of the clip is cut, what moves in is
silence (zeros) unless a circular shift wraps it round.  The additive noise, shared with
images, is :class:`fusionjax_plugins.augmentations.noise.Noise`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import numpy as np
from scipy import signal

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Augmentation
from fusionjax_plugins.augmentations.settings import Range, draw, non_negative, value_range

# the speed factor as a fraction up / down with down at most this (resample_poly's ratio):
# within 2e-4 of any factor in [0.5, 2]
MAX_DENOMINATOR = 100


class Gain(Augmentation):
    """The clip scaled by a gain in dB drawn from ``db``: ``x 10^(db / 20)`` (no clipping:
    the waveform is float).

    Corruption of severity ``s``: ``db = -24 * s`` (quieter: a distant microphone).

    Parameters:
        db: The gain in dB: one value or a range ``[low, high]`` drawn per example.
    """

    applies_to = ("audio",)
    test_settings = {"db": [-6.0, 6.0]}

    def __init__(self, *, db: float | tuple[float, float] = (-6.0, 6.0)):
        self.db: Range = value_range(db, "db", unit="dB")

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"db": -24.0 * severity}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (x * 10.0 ** (draw(rng, self.db) / 20.0)).astype(x.dtype)


class TimeShift(Augmentation):
    """The clip shifted in time by up to ``max_shift`` seconds either way (drawn uniformly,
    rounded to whole samples): ``mode = "wrap"`` rolls it round (circular), ``"zeros"``
    fills the vacated part with silence and cuts what moves out.

    Corruption of severity ``s``: a zero-filled shift of up to ``0.3 * s`` seconds.

    Parameters:
        max_shift: The largest shift either way, in seconds. ``>= 0``.
        mode: ``"wrap"`` (circular) or ``"zeros"`` (silence in, the overhang cut).
        sample_rate: Samples per second. Taken from the data set's audio metadata.
    """

    applies_to = ("audio",)
    test_settings = {"max_shift": 0.05}

    def __init__(self, *, max_shift: float = 0.1, mode: Literal["wrap", "zeros"] = "wrap",
                 sample_rate: int):
        self.max_shift = non_negative(max_shift, "max_shift", "seconds")
        if sample_rate < 1:
            raise ConfigError(f"must be >= 1 Hz, got {sample_rate}", key="sample_rate")
        self.mode, self.sample_rate = mode, sample_rate

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"max_shift": 0.3 * severity, "mode": "zeros"}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        most = int(round(self.max_shift * self.sample_rate))
        k = int(rng.integers(-most, most + 1))
        if self.mode == "wrap":
            return np.roll(x, k)
        out = np.zeros_like(x)
        if abs(k) < len(x):
            out[max(k, 0):len(x) + min(k, 0)] = x[max(-k, 0):len(x) - max(k, 0)]
        return out


class Speed(Augmentation):
    """The clip played ``factor`` times as fast (tempo and pitch together: a 440 Hz tone
    becomes ``440 factor`` Hz), by polyphase resampling to ``1 / factor`` of its length
    (``scipy.signal.resample_poly``, the factor as a fraction with a denominator of at most
    100), then cut or zero-padded at the end back to its length.

    Corruption of severity ``s``: ``factor = 1 + 0.5 * s`` (faster and higher).

    Parameters:
        factor: The speed factor (``> 1`` faster, ``< 1`` slower): one value or a range
            ``[low, high]`` drawn per example. Within ``[0.5, 2]``.
    """

    applies_to = ("audio",)
    test_settings = {"factor": [0.8, 1.25]}

    def __init__(self, *, factor: float | tuple[float, float] = (0.9, 1.1)):
        self.factor: Range = value_range(factor, "factor", low=0.5, high=2.0)

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"factor": 1.0 + 0.5 * severity}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        ratio = Fraction(draw(rng, self.factor)).limit_denominator(MAX_DENOMINATOR)
        if ratio == 1:
            return x.copy()
        # playing f = a / b times as fast keeps b of every a samples: up b, down a
        y = signal.resample_poly(x.astype(np.float64), ratio.denominator, ratio.numerator)
        out = np.zeros_like(x)
        n = min(len(x), len(y))
        out[:n] = y[:n]
        return out
