"""The fusion zoo's promises beyond the contract: absent modalities never matter
(property-based, every fusion), and the multiplicative fusions and the gated unit
against direct NumPy implementations of their papers' formulas."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_components import FUSIONS, IN, build_fusion, fusion_inputs

from fusionjax.assembly import assemble
from fusionjax.errors import ConfigError

B = 4
MODALITIES = tuple(sorted(IN))


@functools.cache
def _runner(name):
    """The fusion's jitted output and parameter gradient, compiled once per fusion
    (masks and data are arguments)."""
    fusion = build_fusion(name)
    graphdef, params, rest = nnx.split(fusion, nnx.Param, ...)

    @jax.jit
    def run(params, emb, masks, tokens):
        def f(p):
            return nnx.merge(graphdef, p, rest)(emb, masks, tokens)

        out, vjp = jax.vjp(f, params)
        return out, vjp(jnp.ones_like(out))[0]

    return fusion, lambda *a: run(params, *a)


GARBAGE = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -7.0, 0.0])


@pytest.mark.parametrize("name", sorted(FUSIONS))
@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_absent_modalities_change_nothing(name, data):
    fusion, run = _runner(name)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    emb, tokens = fusion_inputs(np.random.default_rng(seed), B)
    tokens = tokens if fusion.uses_tokens else None
    flags = data.draw(st.lists(st.lists(st.booleans(), min_size=len(IN), max_size=len(IN)),
                               min_size=B, max_size=B), label="masks")
    mask_np = np.array(flags)  # [B, M]; rows may have every modality absent
    masks = {m: jnp.asarray(mask_np[:, i]) for i, m in enumerate(MODALITIES)}
    out, grads = run(emb, masks, tokens)

    fill = data.draw(GARBAGE, label="fill")
    absent = {m: ~mask_np[:, i] for i, m in enumerate(MODALITIES)}
    changed = {m: jnp.where(absent[m][:, None], fill, e) for m, e in emb.items()}
    changed_tokens = None
    if tokens is not None:
        changed_tokens = {m: t._replace(values=jnp.where(absent[m][:, None, None], fill, t.values))
                          for m, t in tokens.items()}
    out2, grads2 = run(changed, masks, changed_tokens)
    np.testing.assert_array_equal(out2, out)
    for g, g2 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
        np.testing.assert_array_equal(g2, g)
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_one_modality_left_is_enough(name):
    """Each example with exactly one modality (the others absent, holding NaN)."""
    fusion = build_fusion(name)
    emb, tokens = fusion_inputs(np.random.default_rng(3), len(IN))
    tokens = tokens if fusion.uses_tokens else None
    only = np.eye(len(IN), dtype=bool)  # row i has modality i only
    masks = {m: jnp.asarray(only[:, i]) for i, m in enumerate(MODALITIES)}
    emb = {m: jnp.where(only[:, i, None], e, jnp.nan) for i, (m, e) in enumerate(sorted(emb.items()))}
    out = fusion(emb, masks, tokens)
    assert np.all(np.isfinite(out))
    # different modalities give different outputs: the lone modality is used
    assert len({tuple(np.round(np.asarray(r), 5)) for r in out}) == len(IN)


# ---- against NumPy ----------------------------------------------------------------------

def _np(x):
    return np.asarray(x, np.float64)


def _inputs(seed=0):
    r = np.random.default_rng(seed)
    emb = {m: r.standard_normal((B, w)).astype(np.float32) for m, w in IN.items()}
    masks = {m: np.array([True, m != "b", m == "a", True]) for m in IN}
    return emb, masks


def test_tensor_fusion_is_the_outer_product_of_one_augmented_embeddings():
    fusion = build_fusion("tensor", project=None)
    emb, masks = _inputs()
    out = np.asarray(fusion({m: jnp.asarray(v) for m, v in emb.items()},
                            {m: jnp.asarray(v) for m, v in masks.items()}))
    for i in range(B):
        z = [np.concatenate([[1.0], _np(emb[m][i]) * masks[m][i]]) for m in MODALITIES]
        expected = np.einsum("i,j,k->ijk", *z).reshape(-1)
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-6)
    assert fusion.out_features == np.prod([w + 1 for w in IN.values()])


def test_low_rank_fusion_equals_its_formula_and_the_full_rank_tensor_it_factorises():
    fusion = build_fusion("low_rank", features=5, rank=3)
    emb, masks = _inputs(1)
    out = np.asarray(fusion({m: jnp.asarray(v) for m, v in emb.items()},
                            {m: jnp.asarray(v) for m, v in masks.items()}))
    factors = {m: _np(fusion.factors[m][...]).reshape(IN[m] + 1, 3, 5) for m in MODALITIES}
    lam, bias = _np(fusion.rank_weights[...]), _np(fusion.bias[...])
    # the weight tensor W[i, j, k, f] = sum_r lam_r a_r[i, f] b_r[j, f] c_r[k, f], built in full
    a, b, c = (factors[m] for m in MODALITIES)
    weight = np.einsum("r,irf,jrf,krf->ijkf", lam, a, b, c)
    for i in range(B):
        z = [np.concatenate([[1.0], _np(emb[m][i]) * masks[m][i]]) for m in MODALITIES]
        direct = sum(lam[r] * np.prod([z_m @ factors[m][:, r] for z_m, m in zip(z, MODALITIES)], 0)
                     for r in range(3)) + bias
        tensor = np.einsum("i,j,k,ijkf->f", *z, weight) + bias
        np.testing.assert_allclose(out[i], direct, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out[i], tensor, rtol=1e-4, atol=1e-5)


def test_gated_unit_against_numpy_and_the_papers_bimodal_sigmoid():
    fusion = build_fusion("gated", features=4)
    emb, masks = _inputs(2)
    out = np.asarray(fusion({m: jnp.asarray(v) for m, v in emb.items()},
                            {m: jnp.asarray(v) for m, v in masks.items()}))
    w = {m: (_np(fusion.candidates[m].kernel[...]), _np(fusion.candidates[m].bias[...]))
         for m in MODALITIES}
    wz, bz = _np(fusion.gate.kernel[...]), _np(fusion.gate.bias[...])
    for i in range(B):
        x = {m: _np(emb[m][i]) * masks[m][i] for m in MODALITIES}
        h = np.stack([np.tanh(x[m] @ w[m][0] + w[m][1]) for m in MODALITIES])  # [M, F]
        g = (np.concatenate([x[m] for m in MODALITIES]) @ wz + bz).reshape(len(IN), 4)
        have = np.array([masks[m][i] for m in MODALITIES])
        e = np.where(have[:, None], np.exp(g - g[have].max(0)), 0.0)
        expected = (e / e.sum(0) * h).sum(0)
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-6)
    # two modalities: the gate is sigmoid(g_a - g_b), i.e. Arevalo et al.'s z
    two = build("gated", {"a": 3, "b": 2}, features=4)
    xa, xb = jnp.ones((1, 3)), -jnp.ones((1, 2))
    present = {"a": jnp.array([True]), "b": jnp.array([True])}
    g = two.gate(jnp.concatenate([xa, xb], -1)).reshape(2, 4)
    z = jax.nn.sigmoid(g[0] - g[1])
    ha, hb = jnp.tanh(two.candidates["a"](xa)), jnp.tanh(two.candidates["b"](xb))
    np.testing.assert_allclose(two({"a": xa, "b": xb}, present), z * ha + (1 - z) * hb, rtol=1e-5)


def build(name, in_features, **kwargs):
    from fusionjax.plugins import default_registry

    return default_registry().resolve("fusion", name).load()(in_features=in_features, **kwargs,
                                                             rngs=nnx.Rngs(0))


# ---- config-time refusals ---------------------------------------------------------------

def test_tensor_fusion_too_large_is_refused_before_any_compute(tiny_config):
    tiny_config["model"]["fusion"] = {"type": "tensor"}
    encoders = tiny_config["model"]["encoders"]
    encoders["image"]["dense"] = encoders["audio"]["dense"] = encoders["text"]["hidden"] = 64
    live = len(jax.live_arrays())
    with pytest.raises(ConfigError) as e:
        assemble(tiny_config)
    assert e.value.key == "model.fusion.max_features"
    assert "274,625 features" in str(e.value) and "project = 31" in str(e.value)
    assert len(jax.live_arrays()) == live
    tiny_config["model"]["fusion"]["project"] = 31
    assert assemble(tiny_config).fusion.resolved()["project"] == 31


@pytest.mark.parametrize("fusion,key,hint", [
    ({"type": "film", "modality": "imgae"}, "model.fusion.modality", "did you mean 'image'"),
    ({"type": "transformer", "features": 30, "heads": 4}, "model.fusion.features", "multiple"),
    ({"type": "bottleneck", "layers": 2, "unimodal_layers": 2}, "model.fusion.unimodal_layers", "<"),
])
def test_fusion_settings_are_checked_with_their_key_path(tiny_config, fusion, key, hint):
    tiny_config["model"]["fusion"] = fusion
    with pytest.raises(ConfigError) as e:
        assemble(tiny_config)
    assert e.value.key == key and hint in str(e.value)


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_assembles_with_the_bundled_encoders(tiny_config, name):
    settings_ = {k: v for k, v in FUSIONS[name].items() if k != "modality"}
    tiny_config["model"]["fusion"] = {"type": name, **settings_}
    assembly = assemble(tiny_config)
    assert assembly.param_counts()["model.fusion"] >= 0
