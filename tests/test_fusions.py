"""The fusions' promises beyond the contract: the multiplicative fusions and the gated unit
against direct NumPy implementations of their papers' formulas, and their config-time
refusals.  The contract itself -- absent modalities never matter (a hypothesis property),
one modality is enough, shapes, jit, gradients -- is ``fusionjax.testing``'s, run over every
fusion by tests/test_components.py."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax import testing
from fusionjax.assembly import assemble
from fusionjax.errors import ConfigError
from fusionjax.plugins import default_registry

B = 4
IN = testing.FUSION_IN_FEATURES
MODALITIES = tuple(sorted(IN))
FUSIONS = sorted(s.name for s in default_registry() if s.kind == "fusion" and s.origin.package == "fusionjax")


def build_fusion(name, **overrides):
    """The bundled fusion ``name`` with its declared test settings (and ``overrides``), for
    modalities a, b, c."""
    spec = default_registry().resolve("fusion", name)
    return testing.build(spec, {**spec.load().test_settings, **overrides})


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
    return default_registry().resolve("fusion", name).load()(in_features=in_features, **kwargs,
                                                             rngs=nnx.Rngs(0))


# ---- config-time refusals ---------------------------------------------------------------

def test_tensor_fusion_too_large_is_refused_before_any_compute(tiny_config):
    tiny_config["model"]["fusion"] = {"type": "tensor"}
    encoders = tiny_config["model"]["encoders"]
    encoders["image"]["dense"] = encoders["audio"]["dense"] = encoders["text"]["hidden"] = 64
    gc.collect()  # arrays earlier tests left in reference cycles are not this test's
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


@pytest.mark.parametrize("name", FUSIONS)
def test_every_fusion_assembles_with_the_bundled_encoders(tiny_config, name):
    declared = default_registry().resolve("fusion", name).load().test_settings
    settings_ = {k: v for k, v in declared.items() if k != "modality"}  # film's names "b"
    tiny_config["model"]["fusion"] = {"type": name, **settings_}
    assembly = assemble(tiny_config)
    assert assembly.param_counts()["model.fusion"] >= 0
