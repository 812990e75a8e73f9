"""The contract every registered encoder, fusion and head keeps, plus each bundled
component's own promises (padding, masks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_heads import HEAD_CASES

from fusionjax.interfaces import Encoder, Fusion, Head, TokenSequence
from fusionjax.plugins import default_registry

B = 3
# Small settings per encoder, and the input it takes: (input_shape, make input).
ENCODERS = {
    "cnn_image": ((12, 12, 1), {"channels": [4, 8], "dense": 16},
                  lambda r: r.standard_normal((B, 12, 12, 1)).astype(np.float32)),
    "lstm_text": ((7,), {"vocab_size": 30, "embed_dim": 8, "hidden": 8, "bidirectional": True,
                         "layers": 2},
                  lambda r: np.where(np.arange(7) < r.integers(1, 8, (B, 1)),
                                     r.integers(1, 30, (B, 7)), 0).astype(np.int32)),
    "spectrogram_audio": ((800,), {"sample_rate": 8000, "n_fft": 64, "hop_length": 32,
                                   "n_mels": 16, "channels": [4, 8], "dense": 16},
                          lambda r: r.standard_normal((B, 800)).astype(np.float32)),
}
IN = {"a": 6, "b": 6, "c": 6}
TOKEN_IN = {"a": 5, "b": 3, "c": 4}  # token widths; sequence lengths are T_LEN
T_LEN = {"a": 4, "b": 7, "c": 1}
FUSIONS = {
    "concat": {}, "sum": {}, "mean": {"features": 8}, "max": {"features": 8},
    "gated": {"features": 8}, "attention": {"features": 8, "attention_features": 4},
    "film": {"modality": "b"}, "tensor": {"project": 3}, "low_rank": {"features": 8, "rank": 3},
    "multiplicative": {"features": 8},
    "transformer": {"features": 8, "heads": 2, "layers": 1, "self_layers": 1},
    "bottleneck": {"features": 8, "heads": 2, "layers": 2, "unimodal_layers": 1, "bottlenecks": 2},
}


def fusion_inputs(rng, batch=B):
    """Embeddings, and token sequences (with some padding) for the token fusions."""
    emb = {m: jnp.asarray(rng.standard_normal((batch, w)), jnp.float32) for m, w in IN.items()}
    tokens = {}
    for m, d in TOKEN_IN.items():
        lengths = rng.integers(1, T_LEN[m] + 1, (batch, 1))
        tokens[m] = TokenSequence(jnp.asarray(rng.standard_normal((batch, T_LEN[m], d)), jnp.float32),
                                  jnp.asarray(np.arange(T_LEN[m]) < lengths))
    return emb, tokens


def build_fusion(name, **overrides):
    kwargs = {"in_features": IN, **FUSIONS[name], **overrides}
    if default_registry().resolve("fusion", name).load().uses_tokens:
        kwargs["token_features"] = TOKEN_IN
    return build("fusion", name, **kwargs)


def registered(kind):
    return sorted({s.name for s in default_registry() if s.kind == kind})


def test_every_bundled_component_has_a_contract_case():
    bundled = {s.name for s in default_registry() if s.origin.package == "fusionjax"}
    assert bundled >= set(ENCODERS) | set(FUSIONS) | set(HEAD_CASES)
    for kind, table in (("encoder", ENCODERS), ("fusion", FUSIONS), ("head", HEAD_CASES)):
        missing = {s.name for s in default_registry()
                   if s.kind == kind and s.origin.package == "fusionjax"} - set(table)
        assert not missing, f"bundled {kind}s without a contract case: {missing}"


def build(kind, name, **kwargs):
    return default_registry().resolve(kind, name).load()(**kwargs, rngs=nnx.Rngs(0))


def check_roundtrip_and_jit(module, fn, *args):
    out = fn(module, *args)
    graphdef, state = nnx.split(module)
    again = nnx.merge(graphdef, state)
    jax.tree.map(np.testing.assert_array_equal, fn(again, *args), out)

    @jax.jit
    def pure(state, *a):
        return fn(nnx.merge(graphdef, state), *a)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 pure(state, *args), out)
    # finite gradients for every parameter
    params = nnx.state(module, nnx.Param)
    rest = nnx.state(module, nnx.Not(nnx.Param))
    def square_sum(p):
        out = fn(nnx.merge(graphdef, p, rest), *args)
        return sum(jnp.sum(jnp.where(jnp.isfinite(o), o, 0.0) ** 2)
                   for o in jax.tree.leaves(out) if jnp.issubdtype(o.dtype, jnp.floating))

    grads = jax.jit(jax.grad(square_sum))(params)
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g))
    assert jax.tree.leaves(grads) == [] or any(np.any(g != 0) for g in jax.tree.leaves(grads))
    return out


@pytest.mark.parametrize("name", registered("encoder"))
def test_encoder_contract(name):
    if name not in ENCODERS:
        pytest.skip(f"third-party encoder {name!r}: tested by its own package")
    shape, kwargs, make = ENCODERS[name]
    enc = build("encoder", name, input_shape=shape, **kwargs)
    assert isinstance(enc, Encoder)
    x = jnp.asarray(make(np.random.default_rng(0)))
    out = check_roundtrip_and_jit(enc, lambda m, v: m(v), x)
    assert out.shape == (B, enc.out_features) and np.all(np.isfinite(out))
    seq = enc.tokens(x)
    assert isinstance(seq, TokenSequence)
    assert seq.values.shape[0] == B and seq.values.shape[2] == enc.token_features
    assert seq.valid.shape == seq.values.shape[:2] and seq.valid.dtype == bool
    # determinism: same seed, same parameters
    again = build("encoder", name, input_shape=shape, **kwargs)
    np.testing.assert_array_equal(again(x), out)


@pytest.mark.parametrize("name", registered("fusion"))
def test_fusion_contract(name):
    if name not in FUSIONS:
        pytest.skip(f"third-party fusion {name!r}: tested by its own package")
    fusion = build_fusion(name)
    assert isinstance(fusion, Fusion)
    emb, tokens = fusion_inputs(np.random.default_rng(1))
    tokens = tokens if fusion.uses_tokens else None
    masks = {m: jnp.array([True, m != "b", m == "a"]) for m in IN}
    out = check_roundtrip_and_jit(fusion, lambda f, e, k, t: f(e, k, t), emb, masks, tokens)
    assert out.shape == (B, fusion.out_features) and np.all(np.isfinite(out))
    # determinism: same seed, same parameters, same output
    np.testing.assert_array_equal(build_fusion(name)(emb, masks, tokens), out)
    # an absent modality contributes nothing (the property test in test_fusions.py
    # covers random masks; this is the readable case): b is absent from rows 1-2, c from row 2
    changed = dict(emb, b=emb["b"].at[1:].set(1e3), c=emb["c"].at[2].set(jnp.nan))
    if tokens is not None:
        tokens = dict(tokens, b=tokens["b"]._replace(values=tokens["b"].values.at[1:].set(1e3)),
                      c=tokens["c"]._replace(values=tokens["c"].values.at[2].set(jnp.nan)))
    again = fusion(changed, masks, tokens)
    np.testing.assert_array_equal(again[1:], out[1:])
    assert np.all(np.isfinite(again))


@pytest.mark.parametrize("name", registered("head"))
def test_head_contract(name):
    if name not in HEAD_CASES:
        pytest.skip(f"third-party head {name!r}: tested by its own package")
    kwargs, make_inputs, make_labels = HEAD_CASES[name]
    head = build("head", name, **kwargs)
    assert isinstance(head, Head)
    rng = np.random.default_rng(2)
    x = make_inputs(rng, B)
    args = x if isinstance(x, tuple) else (x,)
    labels = make_labels(rng, B)
    preds = check_roundtrip_and_jit(head, lambda h, *a: h(*a), *args)
    loss = head.loss(preds, labels)
    assert loss.shape == () and np.isfinite(loss)
    # determinism: same seed, same parameters
    np.testing.assert_array_equal(head.loss(build("head", name, **kwargs)(*args), labels), loss)
    stats = head.metric_stats(preds, labels, jnp.array([1.0, 1.0, 0.0]))
    metrics = head.finalize_metrics(jax.device_get(stats))
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    # additive statistics: two batches' totals are the sum of their statistics
    x2 = make_inputs(rng, B)
    labels2 = make_labels(rng, B)
    preds2 = head(*(x2 if isinstance(x2, tuple) else (x2,)))
    s1, s2 = (jax.device_get(head.metric_stats(p, y, jnp.ones(B)))
              for p, y in ((preds, labels), (preds2, labels2)))
    assert set(s1) == set(s2)
    totals = {k: np.asarray(s1[k]) + np.asarray(s2[k]) for k in s1}
    assert all(np.isfinite(v) for v in head.finalize_metrics(totals).values())


@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 2)])
def test_lstm_padding_never_changes_the_embedding(bidirectional, layers):
    enc = build("encoder", "lstm_text", input_shape=(10,), vocab_size=40, embed_dim=8, hidden=12,
                bidirectional=bidirectional, layers=layers)
    row = jnp.array([[5, 9, 3, 17]], jnp.int32)
    padded = jnp.array([[5, 9, 3, 17, 0, 0, 0, 0, 0, 0],
                        [1, 2, 0, 0, 0, 0, 0, 0, 0, 0]], jnp.int32)
    np.testing.assert_allclose(enc(padded)[0], enc(row)[0], rtol=1e-5, atol=1e-6)
    # and the state is the one after the last real token: different content, different output
    assert not np.allclose(enc(padded)[0], enc(padded)[1])
    seq = enc.tokens(padded)
    assert np.all(seq.values[0, 4:] == 0) and seq.valid[0].tolist() == [True] * 4 + [False] * 6


def test_sum_projects_to_a_common_width():
    fusion = build("fusion", "sum", in_features={"a": 3, "b": 7}, features=5)
    out = fusion({"a": jnp.ones((2, 3)), "b": jnp.ones((2, 7))},
                 {"a": jnp.array([True, True]), "b": jnp.array([True, False])})
    assert out.shape == (2, 5)
    only_a = fusion({"a": jnp.ones((2, 3)), "b": jnp.zeros((2, 7))},
                    {"a": jnp.array([True, True]), "b": jnp.array([False, False])})
    np.testing.assert_allclose(out[1], only_a[1], rtol=1e-6)


@pytest.mark.parametrize("readout", ["avg", "max", "time_avg", "flatten"])
def test_spectrogram_readouts_declare_their_width(readout):
    for dense in (16, 0):
        enc = build("encoder", "spectrogram_audio", input_shape=(800,), sample_rate=8000, n_fft=64,
                    hop_length=32, n_mels=16, channels=[4, 8], dense=dense, readout=readout)
        out = enc(jnp.ones((2, 800)))
        assert out.shape == (2, enc.out_features)
        if dense:
            assert enc.out_features == 16
