"""The plugin template (examples/plugin_template) as a user gets it: pip-installed
for real, then discovered, validated and trained through the ``fusionjax`` CLI.

The package is installed once per module, with ``pip install --no-deps
--no-build-isolation --no-index --target <tmp>/site`` (no network: the build
backend, setuptools, comes from this environment), and made visible to each
subprocess with ``PYTHONPATH=<tmp>/site`` only.  pip builds in the source
directory (``build/``, ``*.egg-info``), so it installs a copy of the template:
concurrent test runs never share a build tree and the checkout stays clean.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Encoder, TokenSequence

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "plugin_template"
CONFIG = "examples/plugin_template/bow_text.toml"  # relative to ROOT, as in its README
PACKAGE = "fusionjax-bow-text"
VERSION = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())["project"]["version"]
# small and quick: a smoke test of the full train path, not of learning
SMALL = ["train.steps=3", "train.log_every=1", "data.train_size=64", "data.test_size=32",
         "train.batch_size=16"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", reason="pip install --no-build-isolation needs setuptools")
    tmp = tmp_path_factory.mktemp("bow_text")
    src = tmp / "plugin_template"
    shutil.copytree(TEMPLATE, src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--no-input", "-q",
         "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300, cwd=tmp,
    )
    assert r.returncode == 0, f"pip install failed:\n{r.stdout}\n{r.stderr}"
    assert (target / "fusionjax_bow_text" / "encoder.py").exists()
    return target


def fusionjax(*args: str, site: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """``python -m fusionjax ARGS`` from the repo root, seeing the plugin only via ``site``."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "FUSIONJAX_DISABLE_PLUGINS",
                             "FUSIONJAX_STRICT_PLUGINS")}
    full_env.setdefault("JAX_PLATFORMS", "cpu")
    if site is not None:
        full_env["PYTHONPATH"] = str(site)
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "fusionjax", *args], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=300)


def plugins(site: Path | None = None, **env: str) -> dict[str, dict]:
    r = fusionjax("plugins", "list", "--json", site=site, **env)
    assert r.returncode == 0, r.stderr
    return {p["name"]: p for p in json.loads(r.stdout)}


# ---------------------------------------------------------------- discovery, end to end


def test_not_visible_without_the_install():
    listed = plugins()
    assert "cnn_image" in listed  # the listing itself works
    assert "bow_text" not in listed, (
        "fusionjax-bow-text is installed in this environment itself; uninstall it "
        "(pip uninstall fusionjax-bow-text), or this test proves nothing")


def test_plugins_list_shows_it_active(site):
    info = plugins(site)["bow_text"]
    assert info["package"] == PACKAGE
    assert info["version"] == VERSION
    assert info["status"] == "active"
    assert info["components"] == ["encoder:bow_text"]
    assert info["error"] is None


def test_components_list_finds_the_encoder(site):
    r = fusionjax("components", "list", "--kind", "encoder", "--json", site=site)
    assert r.returncode == 0, r.stderr
    specs = {c["name"]: c for c in json.loads(r.stdout)}
    assert {c["kind"] for c in specs.values()} == {"encoder"}
    bow = specs["bow_text"]
    assert bow["qualified_name"] == "bow_text/bow_text"
    assert (bow["plugin"], bow["package"], bow["version"]) == ("bow_text", PACKAGE, VERSION)
    assert bow["summary"]


def test_config_check(site):
    r = fusionjax("config", "check", CONFIG, site=site)
    assert r.returncode == 0, r.stderr
    assert "bow_text" in r.stdout
    assert "OK" in r.stdout


def test_bad_value_names_its_key_path(site):
    r = fusionjax("config", "check", CONFIG, "model.encoders.text.features=0", site=site)
    assert r.returncode == 2
    assert "model.encoders.text.features: must be >= 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_train(site, tmp_path):
    run = tmp_path / "run"
    r = fusionjax("train", CONFIG, *SMALL, "--output-dir", str(run), site=site)
    assert r.returncode == 0, r.stdout + r.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["split"] for x in records] == ["train", "train", "test"]  # steps 2, 3; then eval
    assert all(np.isfinite(x["loss"]) for x in records)
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["model"]["encoders"]["text"]["type"] == "bow_text/bow_text"
    facts = json.loads((run / "run.json").read_text())
    assert facts["plugins"]["bow_text"] == {"package": PACKAGE, "version": VERSION,
                                            "status": "active"}


@pytest.mark.parametrize("name", [PACKAGE, "bow_text", "FUSIONJAX_BOW_TEXT"])
def test_disabled_by_package_or_entry_point_name(site, name):
    info = plugins(site, FUSIONJAX_DISABLE_PLUGINS=f"nothing_else,{name}")["bow_text"]
    assert (info["status"], info["components"]) == ("disabled", [])


def test_config_fails_cleanly_when_disabled(site):
    r = fusionjax("config", "check", CONFIG, site=site, FUSIONJAX_DISABLE_PLUGINS=PACKAGE)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "model.encoders.text.type" in r.stderr
    assert "bow_text" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- the encoder, in-process


@pytest.fixture(scope="module")
def bow():
    """The template's encoder module, imported from examples/ (not installed)."""
    sys.path.insert(0, str(TEMPLATE))
    try:
        import fusionjax_bow_text.encoder as module
    finally:
        sys.path.remove(str(TEMPLATE))
    yield module
    for name in [m for m in sys.modules if m.split(".")[0] == "fusionjax_bow_text"]:
        del sys.modules[name]


def make(bow, **kw):
    kw = {"vocab_size": 50, "embed_dim": 8, "features": 6, **kw}
    return bow.BagOfEmbeddingsEncoder((7,), **kw, rngs=nnx.Rngs(0))


IDS = jnp.array([[5, 9, 3, 0, 0, 0, 0],
                 [1, 2, 3, 4, 5, 6, 7],
                 [0, 0, 0, 0, 0, 0, 0],
                 [0, 12, 0, 40, 0, 0, 2]], jnp.int32)


def test_encoder_shapes_and_tokens(bow):
    enc = make(bow)
    assert isinstance(enc, Encoder)
    assert (enc.out_features, enc.token_features) == (6, 8)
    assert enc(IDS).shape == (4, 6)
    seq = enc.tokens(IDS)
    assert isinstance(seq, TokenSequence)
    assert seq.values.shape == (4, 7, 8)
    np.testing.assert_array_equal(seq.valid, IDS != 0)
    assert not np.any(np.asarray(seq.values)[~np.asarray(seq.valid)])  # zero where padded


def test_padding_never_changes_the_embedding(bow):
    enc = make(bow, features=32)
    unpadded = jnp.array([[5, 9, 3]], jnp.int32)
    padded = jnp.array([[5, 9, 3, 0, 0, 0, 0, 0, 0, 0]], jnp.int32)
    interleaved = jnp.array([[0, 5, 0, 0, 9, 3, 0]], jnp.int32)
    ref = enc(unpadded)
    assert float(jnp.abs(ref).max()) > 0  # not trivially zero
    np.testing.assert_allclose(enc(padded), ref, atol=1e-6)
    np.testing.assert_allclose(enc(interleaved), ref, atol=1e-6)
    np.testing.assert_allclose(enc(IDS)[0], ref[0], atol=1e-6)  # in a mixed batch too


def test_all_padding_row_is_finite_and_has_finite_gradients(bow):
    enc = make(bow)
    out = enc(IDS)
    assert np.all(np.isfinite(out))
    # the mean of no tokens is 0, so the row is the head's response to zeros
    np.testing.assert_allclose(out[2], nnx.relu(enc.proj.bias[...]), atol=1e-7)
    grads = nnx.grad(lambda m: m(jnp.zeros((2, 7), jnp.int32)).sum())(enc)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_jit_and_split_merge_round_trip(bow):
    enc = make(bow)
    eager = enc(IDS)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(enc, IDS), eager, atol=1e-6)
    graphdef, state = nnx.split(enc)
    again = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(again(IDS), eager)
    np.testing.assert_array_equal(again.tokens(IDS).values, enc.tokens(IDS).values)


@pytest.mark.parametrize("kw, key", [({"vocab_size": 1}, "vocab_size"),
                                     ({"embed_dim": 0}, "embed_dim"),
                                     ({"features": -3}, "features")])
def test_bad_values_raise_config_error_with_relative_key(bow, kw, key):
    with pytest.raises(ConfigError) as err:
        make(bow, **kw)
    assert err.value.key == key


def test_rejects_non_sequence_input(bow):
    with pytest.raises(ConfigError) as err:
        bow.BagOfEmbeddingsEncoder((4, 4), vocab_size=50, rngs=nnx.Rngs(0))
    assert err.value.key == "type"
