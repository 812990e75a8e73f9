"""This plugin's tests: the fusionjax contract for every component it registers, its
example config trained for a few steps, and the components' own promises.

Run them where the plugin is installed (``pip install -e ".[test]"``)::

    python -m pytest
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fusionjax_bow_text.dataset import TopicsDataset
from fusionjax_bow_text.encoder import BagOfEmbeddingsEncoder

import fusionjax as fj
from fusionjax.errors import ConfigError
from fusionjax.testing import check_plugin

PLUGIN = "bow_text"  # the entry-point name in pyproject.toml
CONFIG = Path(__file__).resolve().parents[1] / "topics.toml"


def test_contract():
    check_plugin(PLUGIN)


def test_example_config_trains(tmp_path):
    config = fj.load_config(CONFIG, ["train.steps=4", "train.log_every=2", "train.batch_size=16",
                                     "data.train_size=64", "data.test_size=32"])
    result = fj.train(fj.assemble(config), tmp_path / "run", log=lambda line: None)
    assert np.isfinite(result.eval_metrics["loss"]) and 0 <= result.eval_metrics["accuracy"] <= 1
    assert (tmp_path / "run" / "config.json").is_file()


# ---- what the contract cannot know ---------------------------------------------------------

def encoder(**kw):
    kw = {"vocab_size": 50, "embed_dim": 8, "features": 32, **kw}
    return BagOfEmbeddingsEncoder((7,), **kw, rngs=nnx.Rngs(0))


def test_padding_never_changes_the_embedding():
    enc = encoder()
    ref = enc(jnp.array([[5, 9, 3]], jnp.int32))
    assert float(jnp.abs(ref).max()) > 0  # not trivially zero
    for ids in ([[5, 9, 3, 0, 0, 0, 0, 0, 0, 0]], [[0, 5, 0, 0, 9, 3, 0]]):  # trailing, interleaved
        np.testing.assert_allclose(enc(jnp.array(ids, jnp.int32)), ref, atol=1e-6)
    # a row of padding only: the mean of no tokens is 0, not NaN
    np.testing.assert_allclose(enc(jnp.zeros((1, 7), jnp.int32))[0], nnx.relu(enc.proj.bias[...]),
                               atol=1e-7)


@pytest.mark.parametrize("kw, key", [({"vocab_size": 1}, "vocab_size"), ({"embed_dim": 0}, "embed_dim"),
                                     ({"features": -3}, "features")])
def test_bad_values_raise_config_error_with_relative_key(kw, key):
    with pytest.raises(ConfigError) as err:
        encoder(**kw)
    assert err.value.key == key


def test_rejects_non_sequence_input():
    with pytest.raises(ConfigError) as err:
        BagOfEmbeddingsEncoder((4, 4), vocab_size=50, rngs=nnx.Rngs(0))
    assert err.value.key == "type"


def test_topics_lack_at_most_one_text_and_read_raw_words():
    data = TopicsDataset(train_size=200, test_size=10, missing=0.5)
    train = data.arrays("train")
    title, body = train["mask/title"], train["mask/body"]
    assert np.all(title | body) and 0.3 < np.mean(~(title & body)) < 0.7
    assert not np.any(train["title"][~title]) and not np.any(train["body"][~body])
    np.testing.assert_array_equal(data.encode("title", "w3 hello w12 w999"), [3, 12, 0, 0, 0, 0])
