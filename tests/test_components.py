"""Every bundled component against the contract kit (``fusionjax.testing``), with the test
settings it declares, plus each bundled component's own promises beyond the contract
(padding, widths)."""

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax import testing
from fusionjax.data.sources import ArraySource
from fusionjax.interfaces import LABEL, Dataset, Encoder, FieldSpec, Fusion
from fusionjax.plugins import default_registry
from fusionjax.registry import KINDS
from fusionjax_plugins.fusions.concat import ConcatFusion

BUNDLED = [s for s in default_registry() if s.origin.package == "fusionjax"]


@pytest.mark.parametrize("spec", BUNDLED, ids=lambda s: f"{s.kind}-{s.name}")
def test_contract(spec):
    testing.check_component(spec)


NEEDS = {"encoder": ("test_settings", "test_input"), "fusion": ("test_settings",),
         "head": ("test_settings", "test_labels"), "dataset": ("test_settings",),
         "augmentation": ("test_settings",)}


def test_every_bundled_component_declares_its_test_settings():
    assert {s.kind for s in BUNDLED} == set(KINDS)
    missing = []
    for spec in BUNDLED:
        cls = spec.load()
        for attr in NEEDS[spec.kind]:
            value = getattr(cls, attr, None)
            if not isinstance(value, Mapping if attr == "test_settings" else FieldSpec):
                missing.append(f"{spec.kind} {spec.name}: {attr} is {value!r}")
    assert not missing, "bundled components without their test settings:\n" + "\n".join(missing)


# ---- the kit catches what it promises to ------------------------------------------------------

class LeakyFusion(Fusion):
    """Masks *after* the projection: absent NaN reaches the weight gradient."""

    test_settings = {}

    def __init__(self, in_features, *, rngs):
        self.proj = nnx.Dict({m: nnx.Linear(w, 4, rngs=rngs) for m, w in in_features.items()})
        self.out_features = 4

    def __call__(self, embeddings, masks, tokens=None):
        return sum(jnp.where(masks[m][:, None], self.proj[m](e), 0.0) for m, e in embeddings.items())


class WrongWidth(Encoder):
    test_settings = {}
    test_input = FieldSpec((5,), "float32")

    def __init__(self, input_shape, *, rngs):
        self.proj = nnx.Linear(5, 3, rngs=rngs)
        self.out_features = 4

    def __call__(self, x):
        return self.proj(x)


class BadData(Dataset):
    """float64 where the spec says float32, and a shuffled pass that repeats examples."""

    test_settings = {}
    splits = ("train", "test")

    def __init__(self):
        self.spec = {"x": FieldSpec((3,), "float32"), LABEL: FieldSpec((), "int32")}

    def size(self, split):
        self.check_split(split)
        return 10

    def source(self, split, *, seed):
        return ArraySource({"x": np.arange(30.0).reshape(10, 3), LABEL: np.arange(10, dtype=np.int32)})

    def order(self, split, *, seed, shuffle):
        return np.random.default_rng(seed).integers(0, 10, 10) if shuffle else np.arange(10)


class Undeclared(ConcatFusion):
    test_settings = None


@pytest.mark.parametrize("component, checks", [
    (LeakyFusion, {"fusion_ignores_absent_data", "fusion_one_modality_is_enough",
                   "fusion_absent_modalities_change_nothing"}),
    (WrongWidth, {"encoder_output"}),
    (BadData, {"dataset_batches_match_the_spec", "dataset_one_exact_pass"}),
    (Undeclared, {"declares_test_settings"}),
], ids=["leaky_fusion", "wrong_width", "bad_data", "undeclared"])
def test_the_kit_catches_broken_components(component, checks):
    with pytest.raises(testing.ContractError) as e:
        testing.check_component(component)
    assert {f.check for f in e.value.failures} == checks, str(e.value)
    assert all(f.component.endswith(component.__name__) for f in e.value.failures)


def test_check_plugin_checks_what_a_plugin_registers():
    testing.check_plugin("datasets")  # every bundled data set, from its declared settings
    with pytest.raises(AssertionError, match="no plugin 'nope' is installed.*installed: .*datasets"):
        testing.check_plugin("nope")


def test_example_arrays_follow_the_documented_conventions():
    ids = testing.example_array(FieldSpec((9,), "int32", {"vocab_size": 5}), 50, seed=1)
    assert ids.dtype == np.int32 and ids.min() == 0 and ids.max() <= 4 and np.all(ids[:, 0] >= 1)
    lengths = (ids != 0).sum(1)
    assert np.all(ids[np.arange(9) >= lengths[:, None]] == 0)  # trailing padding only
    classes = testing.example_array(FieldSpec((), "int64", {"num_classes": 3}), 50)
    assert set(np.unique(classes)) == {0, 1, 2}
    hot = testing.example_array(FieldSpec((4,), "float32", {"binary": True}), 20)
    assert set(np.unique(hot)) == {0.0, 1.0} and hot.dtype == np.float32
    assert testing.example_array(FieldSpec((2,), "bool"), 10).dtype == bool
    np.testing.assert_array_equal(testing.example_array(FieldSpec((3,), "float32"), 2, seed=7),
                                  testing.example_array(FieldSpec((3,), "float32"), 2, seed=7))


# ---- bundled components' own promises --------------------------------------------------------

def build(kind, name, **kwargs):
    return default_registry().resolve(kind, name).load()(**kwargs, rngs=nnx.Rngs(0))


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


@pytest.mark.parametrize("plugin", ["encoders", "fusions", "heads", "datasets"])
def test_every_bundled_plugin_passes_the_one_line_check(plugin):
    """What a plugin author runs: `fusionjax.testing.check_plugin(name)`."""
    testing.check_plugin(plugin)
