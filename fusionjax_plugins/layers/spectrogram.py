"""The audio front end: centred STFT, power spectrum, Slaney mel filterbank, log.

The filterbank follows the Slaney definitions that ``librosa.filters.mel`` uses by
default (the mel scale is linear below 1 kHz and logarithmic above; each
triangle is scaled to unit area, ``2 / (upper edge - lower edge)``), and is
tested against librosa itself.  It is built in float64 with NumPy, once per
setting, and enters the compiled step as a constant.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

_F_SP = 200.0 / 3  # Hz per mel below the break
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0  # mel step of the log region


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    log_part = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(hz >= _BREAK_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    log_part = _BREAK_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _BREAK_MEL) - _BREAK_MEL))
    return np.where(mel >= _BREAK_MEL, log_part, mel * _F_SP)


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular filters, ``[n_mels, n_fft // 2 + 1]`` float64
    (the orientation of ``librosa.filters.mel``).  Read-only."""
    fmax = sample_rate / 2 if fmax is None else fmax
    bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up_slope = (bins_hz - lower) / (centre - lower)
    down_slope = (upper - bins_hz) / (upper - centre)
    weights = np.clip(np.minimum(up_slope, down_slope), 0.0, None) * (2.0 / (upper - lower))
    weights.setflags(write=False)
    return weights


def num_frames(num_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT."""
    return 1 + num_samples // hop_length


def power_spectrogram(audio: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
    """``[B, samples]`` -> ``[B, frames, n_fft // 2 + 1]``: periodic Hann window,
    frames centred on ``t * hop_length`` (reflect padding at both ends)."""
    half = n_fft // 2
    padded = jnp.pad(audio, ((0, 0), (half, half)), mode="reflect")
    frames = num_frames(audio.shape[-1], hop_length)
    index = np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spectrum = jnp.fft.rfft(padded[:, index] * window.astype(np.float32), axis=-1)
    return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


def log_mel_spectrogram(audio: jax.Array, *, sample_rate: int, n_fft: int, hop_length: int,
                        n_mels: int, fmin: float = 0.0, fmax: float | None = None,
                        log_offset: float = 1e-6) -> jax.Array:
    """``[B, samples]`` -> ``log(mel power + log_offset)``, ``[B, frames, n_mels]``."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T.astype(np.float32)
    power = power_spectrogram(audio.astype(jnp.float32), n_fft, hop_length)
    return jnp.log(power @ fb + log_offset)


@dataclass(frozen=True)
class LogMel:
    """The front end's settings, callable on a batch of waveforms (hashable, so it
    can live as static data on a module)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    fmin: float = 0.0
    fmax: float | None = None
    log_offset: float = 1e-6

    def __call__(self, audio: jax.Array) -> jax.Array:
        return log_mel_spectrogram(audio, **self.__dict__)
