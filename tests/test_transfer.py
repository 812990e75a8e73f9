"""`init_from`: a component starts from a finished run's parameters, checked against the
abstract component when the config is assembled (before any compute)."""

from __future__ import annotations

import copy

import pytest
from conftest import TINY

from fusionjax.assembly import assemble
from fusionjax.errors import ConfigError
from fusionjax.evaluation import evaluate
from fusionjax.parallel import data_mesh
from fusionjax.training.loop import train
from fusionjax.training.step import make_steps


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(steps=20, log_every=10)
    run = tmp_path_factory.mktemp("source") / "run"
    result = train(assemble(cfg), run, log=lambda s: None)
    return cfg, run, result.eval_metrics


def _from(cfg, run, **where):
    cfg = copy.deepcopy(cfg)
    for key in ("image", "text", "audio"):
        cfg["model"]["encoders"][key]["init_from"] = str(run)
    cfg["model"]["head"]["init_from"] = str(run)
    for key, value in where.items():
        cfg["model"]["encoders"][key]["init_from"] = value
    cfg["train"]["seed"] = 7  # a different random initialisation: init_from must replace it
    return cfg


def test_init_from_a_run_reproduces_its_evaluation_before_any_step(source):
    cfg, run, metrics = source
    a = assemble(_from(cfg, run))
    mesh = data_mesh()
    steps = make_steps(a.build(), a.optimizer, mesh, a.train)
    again = evaluate(steps, steps.init, a, "test", a.train.eval_batch(1), mesh).metrics
    assert again == pytest.approx(metrics, rel=1e-6)
    assert a.resolved_config()["model"]["head"]["init_from"] == str(run)
    plain = assemble({**copy.deepcopy(cfg), "train": {**cfg["train"], "seed": 7}})
    steps = make_steps(plain.build(), plain.optimizer, mesh, plain.train)
    assert evaluate(steps, steps.init, plain, "test", 256, mesh).metrics != pytest.approx(metrics)


def test_every_mismatch_is_a_config_error_at_its_key(source, tmp_path):
    cfg, run, _ = source
    cases = [
        (_from(cfg, run, image={"run": str(run), "key": "model.encoders.audio"}),
         "model.encoders.image.init_from", "has shape"),
        (_from(cfg, run, text={"run": str(run), "key": "model.encoders.speech"}),
         "model.encoders.text.init_from", "has no component at 'model.encoders.speech'"),
        (_from(cfg, run, audio=str(tmp_path / "nowhere")),
         "model.encoders.audio.init_from", "not a fusionjax run directory"),
        (_from(cfg, run, image=5), "model.encoders.image.init_from", "must be a run directory"),
    ]
    wide = _from(cfg, run)
    wide["model"]["head"]["hidden"] = [7]
    cases.append((wide, "model.head.init_from", "has shape (7,), but the run"))
    for config, key, message in cases:
        with pytest.raises(ConfigError) as e:
            assemble(config)
        assert e.value.key == key and message in str(e.value), str(e.value)
