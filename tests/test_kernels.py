"""Every fast path gives the values and gradients of the plain JAX formulation
(relative error < 1e-4 in float32, on random inputs), and every one can be
switched off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax import fast_paths
from fusionjax.errors import ConfigError
from fusionjax_plugins.encoders.cnn_image import CNNImageEncoder
from fusionjax_plugins.encoders.lstm_text import LSTMTextEncoder
from fusionjax_plugins.encoders.spectrogram_audio import SpectrogramAudioEncoder
from fusionjax_plugins.kernels import conv, pooling

TOL = 1e-4


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def both_ways(fn, *args, name: str):
    """``jax.jit(jax.value_and_grad(fn))`` traced with fast path ``name`` on and off.
    A fresh function per setting: jit caches traces per function object."""
    out = {}
    for on in (True, False):
        with fast_paths.override(**{name: on}):
            out[on] = jax.jit(jax.value_and_grad(lambda *a: fn(*a), argnums=tuple(range(len(args)))))(
                *args)
    return out[True], out[False]


def assert_same(fast, plain):
    (fv, fg), (pv, pg) = fast, plain
    assert rel_err(fv, pv) < TOL
    for a, b in zip(jax.tree.leaves(fg), jax.tree.leaves(pg), strict=True):
        assert a.shape == b.shape and rel_err(a, b) < TOL


@pytest.mark.parametrize("shape,k", [((4, 12, 10, 3), 2), ((3, 13, 11, 2), 2), ((2, 9, 10, 4), 3)])
def test_max_pool_matches_reduce_window_including_ties(shape, k):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0] = np.round(x[0])  # many ties inside windows: the gradient goes to the first one
    x = jnp.asarray(np.maximum(x, 0.0))  # and all-zero windows, as after a ReLU
    w = jnp.asarray(rng.standard_normal((shape[0], shape[1] // k, shape[2] // k, shape[3])),
                    jnp.float32)
    fast, plain = both_ways(lambda x: jnp.sum(pooling.max_pool(x, k) * w), x, name="max_pool")
    assert_same(fast, plain)
    np.testing.assert_array_equal(fast[1][0], plain[1][0])  # the very same elements chosen


def test_max_pool_propagates_nan_like_reduce_window():
    """Under differentiation the fast path's forward pass is its own (window index
    kept); a NaN anywhere in a window must still come out, as through XLA's max."""
    x = np.random.default_rng(5).standard_normal((2, 6, 6, 3)).astype(np.float32)
    x[0, 1, 1, 0] = x[1, 4, 5, 2] = np.nan  # the last position of their windows
    x[1, 0:2, 0:2, 1] = np.nan  # and a window of NaN only
    outs = {}
    for on in (True, False):
        with fast_paths.override(max_pool=on):
            outs[on, "vjp"] = jax.jit(lambda x: jax.vjp(lambda x: pooling.max_pool(x, 2), x)[0])(x)
            outs[on, "plain"] = jax.jit(lambda x: pooling.max_pool(x, 2))(x)
            outs[on, "eager"] = pooling.max_pool(jnp.asarray(x), 2)
    for out in outs.values():
        np.testing.assert_array_equal(out, outs[False, "plain"])  # NaN where NaN
    assert np.isnan(outs[True, "vjp"][0, 0, 0, 0]) and np.isnan(outs[True, "vjp"][1, 2, 2, 2])
    assert np.isnan(outs[True, "plain"][1, 0, 0, 1])


def test_avg_pool_matches_reduce_window():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 11, 9, 5)), jnp.float32)
    assert_same(*both_ways(lambda x: jnp.sum(jnp.sin(pooling.avg_pool(x, 2))), x,
                           name="avg_pool"))


@pytest.mark.parametrize("shape,kernel,out", [
    ((3, 10, 12, 1), 3, 8),    # one input channel: one patch matrix
    ((2, 9, 8, 16), 3, 6),     # many channels: row-offset matmuls
    ((2, 7, 9, 3), 5, 4),
    ((2, 8, 8, 5), 2, 3),      # even kernel: XLA pads one more at the end
])
def test_conv_gradients_match_xla(shape, kernel, out):
    """Every formulation the tuner may choose, for the forward pass, the input gradient and
    the weight gradient, gives plain JAX's values and gradients."""
    from fusionjax import tuning

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, shape[-1], out)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(out), jnp.float32)
    ops = (conv.FORWARD, conv.INPUT_GRADIENT, conv.WEIGHT_GRADIENT)
    # each candidate of each op at least once (the rest at their first)
    longest = max(len(op.candidates) for op in ops)
    for choice in zip(*(list(op.candidates) + [next(iter(op.candidates))] * (longest - len(op.candidates))
                        for op in ops)):
        with tuning.recording() as found:
            jax.eval_shape(jax.grad(lambda x, w, b: jnp.sum(conv.conv2d_same(x, w, b)), (0, 1, 2)),
                           x, w, b)
        assert {k.split(" ")[0] for k in found} == {op.name for op in ops}
        tuning.use({k: dict(zip([op.name for op in ops], choice))[k.split(" ")[0]] for k in found})
        try:
            assert_same(*both_ways(lambda x, w, b: jnp.sum(jnp.tanh(conv.conv2d_same(x, w, b))),
                                   x, w, b, name="conv"))
            assert_same(*both_ways(lambda x, w: jnp.sum(jnp.tanh(conv.conv2d_same(x, w))), x, w,
                                   name="conv"))
        finally:
            tuning.use({})


@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 2)])
def test_lstm_gradients_match_scan_autodiff(bidirectional, layers):
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 50, (6, 9)).astype(np.int32)
    ids[np.arange(9)[None] >= rng.integers(1, 10, 6)[:, None]] = 0  # right padding
    ids[2, :3] = 0  # and left padding
    model = LSTMTextEncoder((9,), vocab_size=50, embed_dim=8, hidden=16, layers=layers,
                            bidirectional=bidirectional, rngs=nnx.Rngs(0))
    graph, state = nnx.split(model)

    def loss(state):
        m = nnx.merge(graph, state)
        return jnp.sum(jnp.sin(m(ids))) + jnp.sum(jnp.cos(3 * m.tokens(ids).values))

    assert_same(*both_ways(loss, state, name="lstm"))


def test_encoders_with_every_fast_path_off_match():
    """The bundled encoders end to end: all fast paths on vs all off."""
    rng = np.random.default_rng(4)
    image = jnp.asarray(rng.standard_normal((4, 14, 14, 1)), jnp.float32)
    audio = jnp.asarray(0.1 * rng.standard_normal((4, 2000)), jnp.float32)
    cnn = CNNImageEncoder((14, 14, 1), channels=(8, 16), dense=12, rngs=nnx.Rngs(0))
    spec = SpectrogramAudioEncoder((2000,), sample_rate=8000, n_fft=128, hop_length=64,
                                   n_mels=16, channels=(4, 8), dense=12, rngs=nnx.Rngs(1))
    for model, x in ((cnn, image), (spec, audio)):
        graph, state = nnx.split(model)

        def loss(state, graph=graph, x=x):
            return jnp.sum(jnp.sin(nnx.merge(graph, state)(x)))

        out = {}
        for on in (True, False):
            with fast_paths.override(all=on):
                out[on] = jax.jit(jax.value_and_grad(lambda s: loss(s)))(state)
        assert_same(out[True], out[False])


def test_switches_from_the_environment(monkeypatch):
    names = set(fast_paths.declared())
    assert {"max_pool", "avg_pool", "conv", "lstm", "malloc"} <= names
    monkeypatch.setenv(fast_paths.ENV, "none")
    assert not any(fast_paths.enabled(n) for n in names)
    with fast_paths.override(conv=True):  # an override beats the environment
        assert fast_paths.enabled("conv")
    monkeypatch.setenv(fast_paths.ENV, "-conv, -lstm")
    assert not fast_paths.enabled("conv") and fast_paths.enabled("max_pool")
    monkeypatch.setenv(fast_paths.ENV, "conv")
    assert fast_paths.enabled("conv") and not fast_paths.enabled("max_pool")
    monkeypatch.setenv(fast_paths.ENV, "max_pol")
    with pytest.raises(ConfigError, match="did you mean 'max_pool'") as e:
        fast_paths.check()
    assert e.value.key == fast_paths.ENV
    monkeypatch.setenv(fast_paths.ENV, "conv,-lstm")
    with pytest.raises(ConfigError, match="mixes"):
        fast_paths.enabled("conv")
    monkeypatch.delenv(fast_paths.ENV)
    assert all(fast_paths.enabled(n) for n in names)
    # measured on XLA:CPU only: off on a GPU unless named (malloc is host-side: on)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not fast_paths.enabled("conv") and fast_paths.enabled("malloc")
    monkeypatch.setenv(fast_paths.ENV, "conv,lstm")
    assert fast_paths.enabled("conv") and not fast_paths.enabled("max_pool")
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="'lstm'"):
        with fast_paths.override(lstn=False):
            pass


ALLOCATOR = textwrap.dedent("""
    import json, resource
    import fusionjax
    from fusionjax import allocator
    import jax, jax.numpy as jnp
    # a step whose intermediates need one large buffer (~100 MB), like a train step
    f = jax.jit(lambda x: jnp.sum(jnp.tanh(x[:, None] * x[None, :4096]) @ x[:4096]))
    x = jnp.linspace(0, 1, 6000)
    for _ in range(12):  # the heap settles after a few calls (alignment leaves holes)
        f(x).block_until_ready()
    faults = []
    for _ in range(9):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # the median call: an occasional call may still land its buffer on fresh pages
    print(json.dumps({"applied": allocator.applied(), "faults": sorted(faults)[4]}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_malloc_tuning_keeps_step_buffers_mapped():
    res = {}
    for setting in ("all", "-malloc"):
        env = {**os.environ, fast_paths.ENV: setting, "JAX_PLATFORMS": "cpu"}
        out = subprocess.run([sys.executable, "-c", ALLOCATOR], capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        res[setting] = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["all"]["applied"]["M_ARENA_MAX"] == 1 and res["-malloc"]["applied"] is None
    # ~24,000 pages of 4 KiB are mapped in again per call with glibc's defaults
    assert res["-malloc"]["faults"] > 10_000
    assert res["all"]["faults"] < res["-malloc"]["faults"] / 10


def test_every_bundled_fast_path_name_is_known_before_its_kernel_is_imported():
    """`-lstm` is a valid setting for a model without text: names come from the
    `fusionjax.fast_paths` entry points, not from whatever the model imported."""
    code = ("from fusionjax import fast_paths; fast_paths.check(); "
            "print(sorted(fast_paths.declared()))")
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                        env={**os.environ, fast_paths.ENV: "-lstm,-conv"})
    assert ok.returncode == 0, ok.stderr
    assert "'lstm'" in ok.stdout and "jax" not in ok.stderr
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, fast_paths.ENV: "-lstn"})
    assert bad.returncode != 0 and "did you mean 'lstm'" in bad.stderr
