"""The audio front end against librosa itself (a dev dependency), not copied numbers."""

import jax.numpy as jnp
import numpy as np
import pytest

from fusionjax_plugins.layers import spectrogram as frontend

librosa = pytest.importorskip("librosa", reason="librosa is a dev dependency: pip install -e '.[dev]'")

SETTINGS = [  # (sample_rate, n_fft, n_mels, fmin, fmax)
    (8000, 256, 64, 0.0, None),
    (16000, 512, 80, 0.0, 8000.0),
    (22050, 2048, 128, 0.0, None),
    (16000, 400, 40, 300.0, 6000.0),
]


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", SETTINGS)
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
    ours = frontend.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                              dtype=np.float64)  # defaults: htk=False (Slaney), norm="slaney"
    assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    ref32 = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    # float32 precision: within one float32 rounding of librosa's own float32 bank
    np.testing.assert_allclose(ours.astype(np.float32), ref32, rtol=2 ** -23, atol=1e-12)


def test_mel_scale_round_trip():
    hz = np.array([0.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 11025.0])
    np.testing.assert_allclose(frontend.mel_to_hz(frontend.hz_to_mel(hz)), hz, rtol=1e-12)
    np.testing.assert_allclose(frontend.hz_to_mel(hz), librosa.hz_to_mel(hz), rtol=1e-12)


@pytest.mark.parametrize("sr,n_fft,hop,n_mels,samples", [(8000, 256, 128, 64, 8000),
                                                          (16000, 512, 160, 80, 5000)])
def test_log_mel_matches_librosa(sr, n_fft, hop, n_mels, samples):
    rng = np.random.default_rng(0)
    t = np.arange(samples) / sr
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)[None] + 0.1 * rng.standard_normal((3, samples)))
    ours = np.asarray(frontend.log_mel_spectrogram(
        jnp.asarray(audio, jnp.float32), sample_rate=sr, n_fft=n_fft, hop_length=hop,
        n_mels=n_mels))
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=n_fft, hop_length=hop,
                                         n_mels=n_mels, window="hann", center=True,
                                         pad_mode="reflect", power=2.0, dtype=np.float64)
    ref = np.log(mel.transpose(0, 2, 1) + 1e-6)
    assert ours.shape == ref.shape == (3, frontend.num_frames(samples, hop), n_mels)
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-5)  # float32 vs float64
