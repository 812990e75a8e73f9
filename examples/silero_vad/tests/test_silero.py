"""This plugin's tests: the fusionjax contract, the network checked against silero-vad's own
implementations of it (to 1e-4), and a short fusion run with the encoder frozen.

Run them where the plugin and the weights are installed::

    pip install -e ".[test]" && pip install --no-deps silero-vad==6.2.3
    python -m pytest

Without silero-vad (or onnxruntime) installed, the tests that need it are skipped.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fusionjax_silero_vad import reference
from fusionjax_silero_vad.encoder import CHUNK, CONTEXT, SileroVADEncoder, chunked, stft_basis

import fusionjax as fj
from fusionjax.data.audio import load_audio
from fusionjax.data.locate import data_dir
from fusionjax.errors import ConfigError
from fusionjax.rundir import flatten, load_run
from fusionjax.testing import check_plugin

PLUGIN = "silero_vad"  # the entry-point name in pyproject.toml
HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "avdigits_silero.toml"
TINYGRAD = HERE / "data" / "tinygrad_16k.npz"  # recorded by record_tinygrad.py
ATOL = 1e-4


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_weights = pytest.mark.skipif(not _installed("silero-vad"),
                                   reason="the weights: pip install --no-deps silero-vad==6.2.3")
needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                       reason="the reference: pip install onnxruntime")


def _encoder(init_from: dict, **data) -> SileroVADEncoder:
    """The audio encoder of the example config, its weights from ``init_from`` (assembled
    and built as `fusionjax train` does)."""
    cfg = fj.load_config(CONFIG, ["data.train_size=64", "data.test_size=64"])
    del cfg["model"]["encoders"]["image"]  # only what is checked
    cfg["model"]["encoders"]["audio"]["init_from"] = init_from
    cfg["data"].update(data)
    return fj.assemble(cfg).build().encoders["audio"]


def _run(encoder: SileroVADEncoder, audio: np.ndarray):
    return nnx.jit(lambda e, x: e.run(x))(encoder, jnp.asarray(audio))


# ---- the contract and the encoder's own promises ---------------------------------------

def test_contract():
    check_plugin(PLUGIN)


def test_needs_16_khz_and_says_how():
    with pytest.raises(ConfigError) as err:
        SileroVADEncoder((6000,), sample_rate=8000, rngs=nnx.Rngs(0))
    assert err.value.key == "sample_rate" and "16000" in err.value.message
    assert "data.sample_rate=16000" in err.value.hint
    with pytest.raises(ConfigError) as err:
        fj.assemble(fj.load_config(CONFIG, ["data.sample_rate=8000", "data.num_samples=6000"]))
    assert err.value.key == "model.encoders.audio.sample_rate"


def test_chunks_carry_the_previous_64_samples():
    x = jnp.arange(1, 1201, dtype=jnp.float32)[None]  # 3 chunks, the last one padded
    c = np.asarray(chunked(x))[0]
    assert c.shape == (3, CONTEXT + CHUNK)
    np.testing.assert_array_equal(c[0, :CONTEXT], 0)  # zeros before the start
    np.testing.assert_array_equal(c[1], np.arange(CHUNK - CONTEXT + 1, 2 * CHUNK + 1))
    np.testing.assert_array_equal(c[2, -(3 * CHUNK - 1200):], 0)  # the zero-padded tail


def test_a_stream_in_two_calls_is_the_whole_recording():
    enc = SileroVADEncoder((2048,), sample_rate=16000, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 4 * CHUNK))
    whole = enc.run(x)
    first = enc.run(x[:, :2 * CHUNK])
    second = enc.run(x[:, 2 * CHUNK:], first.state, x[:, 2 * CHUNK - CONTEXT:2 * CHUNK])
    np.testing.assert_allclose(np.concatenate([first.probs, second.probs], 1), whole.probs, atol=1e-6)
    np.testing.assert_allclose(second.state, whole.state, atol=1e-5)


def test_silence_has_finite_gradients():
    enc = SileroVADEncoder((1024,), sample_rate=16000, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda e, x: e(x).sum())(enc, jnp.zeros((2, 1024)))  # |STFT| = 0 everywhere
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


# ---- the pretrained network, against silero's own implementations ----------------------

@needs_weights
def test_the_layout_uses_every_tensor_of_the_packaged_file():
    from safetensors.numpy import load_file

    tensors = load_file(reference.packaged(reference.SAFETENSORS))
    rules = nnx.eval_shape(lambda: SileroVADEncoder((1024,), sample_rate=16000, rngs=nnx.Rngs(0))
                           ).torch_layout()
    assert len(tensors) == 15
    assert sorted(s for r in rules.values() for s in r.sources) == sorted(tensors)
    # the STFT kernel starts as silero's (a Hann-windowed DFT), weights or not
    np.testing.assert_allclose(stft_basis(), np.moveaxis(tensors["stft_conv.weight"], (0, 1), (-1, -2)),
                               atol=1e-6)


def _recordings() -> np.ndarray:
    """``[3, 16000]``: a spoken digit (FSDD, resampled to 16 kHz), a 440 Hz tone in white
    noise, and silence; 1 s each, 32 chunks."""
    speech = load_audio(data_dir(None, "fsdd") / "recordings" / "0_george_0.wav",
                        sample_rate=16000, num_samples=16000)
    t = np.arange(16000) / 16000
    noise = np.random.default_rng(0).standard_normal(16000)
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * noise
    return np.stack([speech, tone, np.zeros(16000)]).astype(np.float32)


@needs_weights
@needs_onnxruntime
def test_matches_silero_onnx_model(tmp_path):
    """The ONNX copy's weights (``silero_vad_16k_op15.onnx``, the model silero-vad's own
    ``load_silero_vad`` runs), loaded through init_from, against onnxruntime running
    that file chunk by chunk: every chunk's probability and state."""
    weights = reference.write_onnx_weights(tmp_path / "onnx.safetensors")
    enc = _encoder({"safetensors": str(weights), "layout": "pytorch"})
    audio = _recordings()
    out = _run(enc, audio)
    probs, states = reference.onnx_run(audio)  # [3, 32], [32, 2, 3, 128]
    assert probs.shape == out.probs.shape == (3, 32)
    assert probs[0].max() > 0.9 and probs[2].max() < 0.1  # it is a VAD: speech, then silence
    h, c = np.moveaxis(states[:, 0], 0, 1), np.moveaxis(states[:, 1], 0, 1)
    diffs = {"probs": np.abs(out.probs - probs).max(), "h": np.abs(out.h - h).max(),
             "c": np.abs(out.c - c).max()}
    print(f"max |JAX - onnxruntime|: {', '.join(f'{k} {v:.2e}' for k, v in diffs.items())}")
    assert max(diffs["probs"], diffs["h"]) < ATOL, diffs
    # c, the cell state, is not bounded (up to 26 here): float32 itself is ~1e-4 off a
    # float64 run after 32 chunks of silence, on either side, so c also gets 1e-5 of its size
    np.testing.assert_allclose(out.c, c, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(out.state, states[-1], atol=ATOL, rtol=1e-5)


@needs_weights
def test_matches_silero_tinygrad_port_on_the_packaged_file():
    """``silero_vad_16k.safetensors`` found inside the installed package (init_from's
    ``package``), against what silero's tinygrad port computes with that file
    (recorded: tinygrad needs clang or a minute a chunk)."""
    enc = _encoder({"safetensors": reference.SAFETENSORS, "package": "silero-vad", "layout": "pytorch"})
    ref = np.load(TINYGRAD)
    out = _run(enc, ref["audio"][None])
    diffs = {"probs": np.abs(out.probs[0] - ref["probs"]).max(),
             "h": np.abs(out.h[0] - ref["states"][:, 0]).max(),
             "c": np.abs(out.c[0] - ref["states"][:, 1]).max()}
    print(f"max |JAX - tinygrad|: {', '.join(f'{k} {v:.2e}' for k, v in diffs.items())}")
    assert max(diffs.values()) < ATOL, diffs
    # the file was found through the distribution's metadata: silero_vad (and with it
    # torch) never imported
    assert "silero_vad" not in sys.modules and "torch" not in sys.modules


# ---- in a fusion ---------------------------------------------------------------------

@needs_weights
def test_fused_with_an_image_encoder_it_helps_and_stays_frozen(tmp_path):
    cfg = fj.load_config(CONFIG, ["train.steps=150", "train.batch_size=32", "train.log_every=50",
                                  "train.optimizer.learning_rate=3e-3", "data.train_size=1024",
                                  "data.test_size=256", "model.encoders.image.channels=[8, 16]",
                                  "model.encoders.image.dense=32", "model.head.hidden=[64]"])
    assembly = fj.assemble(cfg)
    model = assembly.build()
    start = flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    # the packaged file's tensors, as the layout converts them, are the encoder's start
    from safetensors.numpy import load_file

    tensors = load_file(reference.packaged(reference.SAFETENSORS))
    rules = model.encoders["audio"].torch_layout()
    for name, rule in rules.items():
        want = rule(*(tensors[s] for s in rule.sources))
        np.testing.assert_array_equal(start[f"encoders/audio/{name}"], want, err_msg=name)

    result = fj.train(assembly, tmp_path / "run", log=lambda line: None)
    run = load_run(tmp_path / "run")
    after = flatten(nnx.to_pure_dict(nnx.state(run.model, nnx.Param)))
    audio = [k for k in start if k.startswith("encoders/audio/")]
    assert len(audio) == len(rules) == 14  # 15 tensors: the two LSTM biases are summed
    for k in audio:  # frozen: bit for bit
        assert np.asarray(start[k]).tobytes() == np.asarray(after[k]).tobytes(), k
    assert any(not np.array_equal(start[k], after[k]) for k in start if k.startswith("head/"))
    assert result.eval_metrics["accuracy"] > 0.6  # 10 classes
    # the audio is used: alone it is well above chance, and without it the fusion does worse
    only_audio = run.evaluate("test", drop=["image"]).metrics["accuracy"]
    assert only_audio > 0.15, only_audio
    assert run.evaluate("test", drop=["audio"]).metrics["accuracy"] < result.eval_metrics["accuracy"]
