"""WAV files (integer PCM), resampling, mono mixdown and a fixed length.

Length policy (:func:`fit_length`): a recording longer than ``num_samples`` is
cropped, one shorter is zero-padded; ``align="center"`` keeps the middle (pads
equally on both sides), ``align="start"`` keeps the beginning (pads at the end).
"""

from __future__ import annotations

import os
import wave
from math import gcd
from pathlib import Path
from typing import Literal

import numpy as np

from fusionjax.errors import DataError, capped

Align = Literal["center", "start"]

# A WAV whose header declares a rate above this is refused as corrupt.  192 kHz is the highest
# rate of standard PCM audio (studio masters, DVD-Audio); this framework reads speech at 8-16 kHz.
# The bound also bounds resampling: its cost grows with the rate (an awkward 192,001 Hz takes
# ~0.7 s to resample; a flipped header byte can claim 4 GHz).
MAX_SAMPLE_RATE = 192_000
_CONVERT = "convert it to integer PCM, e.g. `sox in.wav -e signed-integer out.wav`"


def _size(path: str | Path) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _header_cut_short(path: str | Path) -> str:
    """What is missing of a WAV header that ends early (``wave`` says only EOFError)."""
    n = _size(path)
    where = ("the 12-byte RIFF/WAVE header" if n is not None and n < 12 else
             "its 'fmt ' chunk (format, channels, sample rate, sample width: 16 bytes)")
    size = f"{n} bytes" if n is not None else "a few bytes"
    return (f"truncated: the file has {size} and ends inside {where}; "
            "a PCM WAV header is at least 44 bytes")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """``(samples, rate)``: float32 ``[frames, channels]`` in ``[-1, 1)``, and the rate.

    The rate is an int in ``1..MAX_SAMPLE_RATE`` and there is at least one frame."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = (w.getnchannels(), w.getsampwidth(),
                                             w.getframerate(), w.getnframes())
            # never ask for more than the file can hold (a corrupt header may promise 4 GB)
            raw = w.readframes(min(frames, os.path.getsize(path) // (channels * width) + 1))
    except FileNotFoundError:
        raise DataError(f"{path}: audio file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an audio file") from None
    except EOFError:
        raise DataError(f"{path}: not a PCM WAV file ({_header_cut_short(path)})") from None
    except wave.Error as e:
        size = _size(path)
        if size is not None and size < 12:  # "not a WAVE file" of a file cut inside "WAVE"
            raise DataError(f"{path}: not a PCM WAV file ({_header_cut_short(path)})") from None
        reason = capped(str(e), 200) or "unreadable header"
        fix = _CONVERT if reason.startswith("unknown format") else "it is not a WAV file, or it is corrupt"
        raise DataError(f"{path}: not a PCM WAV file ({reason}); {fix}") from None
    except RuntimeError:  # `wave`'s chunk reader, when a chunk's size points past the RIFF chunk
        raise DataError(f"{path}: not a PCM WAV file (a chunk's size points past the end of the "
                        "file's RIFF chunk); it is corrupt") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({capped(str(e), 200)})") from None
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        raise DataError(f"{path}: its header declares a sample rate of {rate} Hz (a WAV's rate is "
                        f"1 to {MAX_SAMPLE_RATE:,} Hz); the file is corrupt")
    if frames == 0:
        raise DataError(f"{path}: holds no audio (its data chunk has 0 frames)")
    if len(raw) != frames * channels * width:
        raise DataError(f"{path}: truncated WAV: header promises {frames} frames, "
                        f"the file holds {len(raw) // (channels * width)}")
    if width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        x = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    else:
        raise DataError(f"{path}: unsupported sample width of {width} bytes (1 to 4 are read); "
                        f"{_CONVERT}")
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
