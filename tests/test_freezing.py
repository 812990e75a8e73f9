"""Per-component training settings (`trainable = false`, `lr_scale`), through Optax's
multi_transform: a frozen component's parameters stay bit-identical and it holds no
optimiser state; `lr_scale = 0` is the same run as frozen; a resume stays exact."""

from __future__ import annotations

import copy

import jax
import numpy as np
import pytest
from conftest import TINY

from fusionjax.assembly import assemble
from fusionjax.errors import ConfigError
from fusionjax.rundir import load_run
from fusionjax.summary import summarize
from fusionjax.training.loop import train


def _config(**image):
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(steps=20, log_every=10)
    cfg["model"]["encoders"]["image"].update(image)
    return cfg


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _params(run_dir):
    from flax import nnx

    return nnx.to_pure_dict(nnx.state(load_run(run_dir).model, nnx.Param))


def test_a_frozen_component_never_changes_and_has_no_optimiser_state(tmp_path):
    from flax import nnx

    start = nnx.to_pure_dict(nnx.state(assemble(_config()).build(), nnx.Param))
    frozen = train(assemble(_config(trainable=False)), tmp_path / "frozen", log=lambda s: None)
    zero = train(assemble(_config(lr_scale=0.0)), tmp_path / "zero", log=lambda s: None)
    plain = train(assemble(_config()), tmp_path / "plain", log=lambda s: None)
    after = _params(tmp_path / "frozen")
    # the frozen encoder is bit-identical to its initialisation; the rest learned
    for a, b in zip(_leaves(start["encoders"]["image"]), _leaves(after["encoders"]["image"])):
        assert a.tobytes() == b.tobytes()
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(start["head"]), _leaves(after["head"])))
    # lr_scale = 0 is the frozen run, bit for bit
    for a, b in zip(_leaves(after), _leaves(_params(tmp_path / "zero"))):
        assert a.tobytes() == b.tobytes()
    assert frozen.eval_metrics == zero.eval_metrics
    # no optimiser state for the frozen component: Adam's two moments of the encoder are gone
    image_params = sum(x.size for x in jax.tree.leaves(start["encoders"]["image"]))
    state = lambda r: sum(x.size for x in jax.tree.leaves(r.state.opt_state))  # noqa: E731
    assert state(plain) - state(frozen) == 2 * image_params
    summary = summarize(assemble(_config(trainable=False)), flops=False)
    assert summary.frozen == ("model.encoders.image",)
    assert summary.optimizer_bytes == summarize(assemble(_config()), flops=False).optimizer_bytes \
        - 2 * 4 * image_params
    # the setting is part of the run: its config records it, and it resumes as frozen
    assert load_run(tmp_path / "frozen").assembly.encoders["image"].training.trainable is False


def test_lr_scale_scales_the_updates_and_defaults_change_nothing(tmp_path):
    half = assemble(_config(lr_scale=0.5))
    assert half.resolved_config()["model"]["encoders"]["image"]["lr_scale"] == 0.5
    plain = assemble(_config())
    assert "lr_scale" not in plain.resolved_config()["model"]["encoders"]["image"]
    assert plain.optimizer is not half.optimizer
    import optax

    params = {"encoders": {"image": {"w": np.ones(3, np.float32)}}, "head": {"w": np.ones(2, np.float32)}}
    from fusionjax.training.optim import per_component

    sgd = optax.sgd(1.0)
    assert per_component(sgd, {("encoders", "image"): (True, 1.0), ("head",): (True, 1.0)}) is sgd
    tx = per_component(sgd, {("encoders", "image"): (True, 0.5), ("head",): (True, 1.0)})
    grads = jax.tree.map(np.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.allclose(updates["encoders"]["image"]["w"], -0.5) and np.allclose(updates["head"]["w"], -1.0)


@pytest.mark.parametrize("setting, message", [
    ("trainable=1", "must be true or false"), ('trainable="no"', "must be true or false"),
    ("lr_scale=-0.1", "must be a finite number >= 0"), ("lr_scale=inf", "finite"),
])
def test_bad_settings_are_config_errors_at_their_key(setting, message):
    from fusionjax.config import apply_overrides

    key, _, _ = setting.partition("=")
    with pytest.raises(ConfigError) as e:
        assemble(apply_overrides(TINY, [f"model.encoders.image.{setting}"]))
    assert e.value.key == f"model.encoders.image.{key}" and message in str(e.value)
