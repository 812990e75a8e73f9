"""Additive white Gaussian noise at a signal-to-noise ratio, for images and audio alike."""

from __future__ import annotations

import numpy as np

from fusionjax.interfaces import Augmentation
from fusionjax_plugins.augmentations.settings import Range, draw, value_range


class Noise(Augmentation):
    """Additive white Gaussian noise at a signal-to-noise ratio drawn from ``snr_db``,
    measured against the example's own signal: ``10 log10(signal power / noise power)``
    is the drawn value exactly (the noise is scaled to its power after it is drawn).

    The signal's power is its variance: an audio clip's power about its mean (a DC offset
    is not heard), an image's contrast (a normalised image's mean is an offset, not
    signal); so an image's noise has a standard deviation of ``10^(-snr/20)`` times the
    image's.  A silent clip or a flat image (variance 0) is left unchanged.

    Corruption of severity ``s``: ``snr_db = 30 * (1 - s)`` (22.5 dB at 0.25, 15 dB at 0.5,
    0 dB -- noise as strong as the signal -- at 1).

    Parameters:
        snr_db: The signal-to-noise ratio in dB: one value or a range ``[low, high]`` drawn
            per example (lower is noisier).
    """

    applies_to = ("image", "audio")
    test_settings = {"snr_db": [5.0, 20.0]}

    def __init__(self, *, snr_db: float | tuple[float, float] = (10.0, 30.0)):
        self.snr_db: Range = value_range(snr_db, "snr_db", unit="dB")

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"snr_db": 30.0 * (1.0 - severity)}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        snr = draw(rng, self.snr_db)
        noise = rng.standard_normal(x.shape)
        signal = float(np.var(x, dtype=np.float64))
        spread = float(noise.std())
        if signal == 0.0 or spread == 0.0:  # silence stays silent
            return x.copy()
        noise = (noise - noise.mean()) * (np.sqrt(signal * 10.0 ** (-snr / 10.0)) / spread)
        return (x + noise).astype(x.dtype)
