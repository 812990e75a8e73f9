"""WAV files (integer PCM), resampling, mono mixdown and a fixed length.

Length policy (:func:`fit_length`): a recording longer than ``num_samples`` is
cropped, one shorter is zero-padded; ``align="center"`` keeps the middle (pads
equally on both sides), ``align="start"`` keeps the beginning (pads at the end).
"""

from __future__ import annotations

import wave
from math import gcd
from pathlib import Path
from typing import Literal

import numpy as np

from fusionjax.errors import DataError

Align = Literal["center", "start"]


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """``(samples, rate)``: float32 ``[frames, channels]`` in ``[-1, 1)``, and the rate."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = (w.getnchannels(), w.getsampwidth(),
                                             w.getframerate(), w.getnframes())
            raw = w.readframes(frames)
    except FileNotFoundError:
        raise DataError(f"{path}: audio file not found") from None
    except (wave.Error, EOFError) as e:
        raise DataError(f"{path}: not a PCM WAV file ({e}); convert it to integer PCM, "
                        "e.g. `sox in.wav -e signed-integer out.wav`") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    if len(raw) != frames * channels * width:
        raise DataError(f"{path}: truncated WAV: header promises {frames} frames, "
                        f"the file holds {len(raw) // max(channels * width, 1)}")
    if width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        x = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    else:
        raise DataError(f"{path}: unsupported sample width of {width} bytes")
    return x.reshape(-1, channels), rate


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling along the first axis (SciPy's ``resample_poly``)."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return resample_poly(x, target // g, rate // g, axis=0).astype(np.float32)


def fit_length(x: np.ndarray, num_samples: int, align: Align = "center") -> np.ndarray:
    """Crop or zero-pad a 1-D signal to ``num_samples`` (see the module docstring)."""
    n = len(x)
    if n >= num_samples:
        start = (n - num_samples) // 2 if align == "center" else 0
        return x[start:start + num_samples]
    before = (num_samples - n) // 2 if align == "center" else 0
    return np.pad(x, (before, num_samples - n - before))


def load_audio(path: str | Path, *, sample_rate: int, num_samples: int,
               align: Align = "center") -> np.ndarray:
    """A WAV file as float32 ``[num_samples]``: mono (channel mean), at ``sample_rate``."""
    x, rate = read_wav(path)
    return fit_length(resample(x.mean(axis=1), rate, sample_rate), num_samples, align)
