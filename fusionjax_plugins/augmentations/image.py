"""Image augmentations: one example, float ``[H, W, C]``, as the data set gives it.

Images arrive normalised (e.g. MNIST's ``(x / 255 - mean) / std``), so nothing here
assumes a value range: what an augmentation needs -- the background, the brightest
value, the contrast -- it reads from the image itself, per channel.  The background is
the channel's minimum (a normalised digit's background is ``-mean / std``, not 0), and a
pixel moved in from outside the image is background.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Augmentation
from fusionjax_plugins.augmentations.settings import (
    Range,
    background,
    draw,
    non_negative,
    probability,
    value_range,
)


class Affine(Augmentation):
    """A random shift, rotation and scale about the image's centre; pixels from outside
    the image are the background (each channel's minimum).

    Each example draws its shift (up to ``max_shift`` pixels along each axis), its angle
    (up to ``max_rotate`` degrees either way) and its scale (within ``1 ± max_scale``)
    uniformly.  Corruption of severity ``s``: rotation up to ``40 * s`` degrees and scale
    within ``1 ± 0.25 * s``, no shift (pixels would mean different things at different
    image sizes).

    Parameters:
        max_shift: The largest shift along each axis, in pixels. ``>= 0``.
        max_rotate: The largest rotation either way, in degrees. ``>= 0``.
        max_scale: The largest relative change of size: the scale is drawn from
            ``[1 - max_scale, 1 + max_scale]``. In ``[0, 1)``.
        order: Interpolation: ``1`` bilinear, ``0`` nearest pixel (exact shifts by whole
            pixels).
    """

    applies_to = ("image",)
    test_settings = {"max_shift": 2.0, "max_rotate": 15.0, "max_scale": 0.1}

    def __init__(self, *, max_shift: float = 2.0, max_rotate: float = 10.0,
                 max_scale: float = 0.0, order: Literal[0, 1] = 1):
        self.max_shift = non_negative(max_shift, "max_shift", "pixels")
        self.max_rotate = non_negative(max_rotate, "max_rotate", "degrees")
        if not 0.0 <= max_scale < 1.0:
            raise ConfigError(f"must be in [0, 1), got {max_scale}", key="max_scale")
        self.max_scale, self.order = float(max_scale), order

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"max_shift": 0.0, "max_rotate": 40.0 * severity, "max_scale": 0.25 * severity}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        angle = np.deg2rad(self.max_rotate * (2 * rng.random() - 1))
        scale = 1.0 + self.max_scale * (2 * rng.random() - 1)
        shift = self.max_shift * (2 * rng.random(2) - 1)
        # affine_transform maps each output pixel o to the input pixel it reads:
        # centre + R(-angle) (o - centre - shift) / scale
        cos, sin = np.cos(angle), np.sin(angle)
        inverse = np.array([[cos, sin], [-sin, cos]]) / scale
        centre = (np.array(x.shape[:2], np.float64) - 1) / 2
        offset = centre - inverse @ (centre + shift)
        fill = background(x)
        out = np.empty_like(x)
        for c in range(x.shape[2]):
            out[..., c] = ndimage.affine_transform(x[..., c], inverse, offset, order=self.order,
                                                   mode="constant", cval=float(fill[c]))
        return out


class Contrast(Augmentation):
    """Contrast and brightness jitter, measured on the image itself: each channel becomes
    ``mean + contrast (x - mean) + brightness std`` (its own mean and standard deviation),
    so the same settings mean the same change whatever the normalisation.

    Corruption of severity ``s``: the contrast reduced to ``1 - 0.8 * s`` of itself (a faded
    image), brightness unchanged.

    Parameters:
        contrast: The factor on each channel's deviations from its mean: one value or a range
            ``[low, high]`` drawn per example. ``>= 0`` (0: a flat image).
        brightness: The shift of each channel, in units of its standard deviation: one value
            or a range ``[low, high]`` drawn per example.
    """

    applies_to = ("image",)
    test_settings = {"contrast": [0.7, 1.3], "brightness": [-0.3, 0.3]}

    def __init__(self, *, contrast: float | tuple[float, float] = (0.8, 1.2),
                 brightness: float | tuple[float, float] = (-0.2, 0.2)):
        self.contrast: Range = value_range(contrast, "contrast", low=0.0)
        self.brightness: Range = value_range(brightness, "brightness")

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"contrast": 1.0 - 0.8 * severity, "brightness": 0.0}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        factor, shift = draw(rng, self.contrast), draw(rng, self.brightness)
        mean, std = x.mean(axis=(0, 1)), x.std(axis=(0, 1))
        return (mean + factor * (x - mean) + shift * std).astype(x.dtype)


class Invert(Augmentation):
    """With probability ``p``, dark on light becomes light on dark: each channel becomes
    ``max + min - x`` (its own maximum and minimum), which swaps its darkest and brightest
    values and keeps the image in its own value range (a normalised digit stays
    normalised-looking: its background becomes its stroke's value).

    Corruption of severity ``s``: ``p = s`` (a fraction ``s`` of the examples inverted).

    Parameters:
        p: The probability that an example is inverted. In ``[0, 1]``.
    """

    applies_to = ("image",)
    test_settings = {"p": 0.5}

    def __init__(self, *, p: float = 0.5):
        self.p = probability(p, "p")

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"p": severity}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return x.copy()
        return (x.max(axis=(0, 1)) + x.min(axis=(0, 1)) - x).astype(x.dtype)


class Cutout(Augmentation):
    """``count`` random rectangles set to the background (each channel's minimum), each
    ``size`` of the image's height by ``size`` of its width, placed uniformly inside it.

    Corruption of severity ``s``: one rectangle of ``0.5 * s`` of each side (up to a quarter
    of the image).

    Parameters:
        size: Each rectangle's side as a fraction of the image's side (height and width
            alike): one value or a range ``[low, high]`` drawn per rectangle. In ``[0, 1]``;
            a rectangle is at least one pixel.
        count: How many rectangles. ``>= 1``.
    """

    applies_to = ("image",)
    test_settings = {"size": [0.2, 0.5], "count": 1}

    def __init__(self, *, size: float | tuple[float, float] = (0.2, 0.4), count: int = 1):
        self.size: Range = value_range(size, "size", low=0.0, high=1.0)
        if count < 1:
            raise ConfigError(f"must be >= 1, got {count}", key="count")
        self.count = count

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"size": 0.5 * severity, "count": 1}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = x.copy()
        fill = background(x)
        h, w = x.shape[:2]
        for _ in range(self.count):
            fraction = draw(rng, self.size)
            rh, rw = max(1, round(fraction * h)), max(1, round(fraction * w))
            top, left = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
            out[top:top + rh, left:left + rw] = fill
        return out
