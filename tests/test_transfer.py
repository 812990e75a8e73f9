"""`init_from`: a component starts from a finished run's parameters, checked against the
abstract component when the config is assembled (before any compute)."""

from __future__ import annotations

import copy

import numpy as np
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


def _arrays(run, component):
    from fusionjax.rundir import RunDir

    prefix = component + "/"
    return {k[len(prefix):]: np.asarray(v) for k, v in RunDir(run).final_arrays().items()
            if k.startswith(prefix)}


def _params(assembly, modality="image"):
    from flax import nnx

    from fusionjax.rundir import flatten

    model = assembly.build()
    return flatten(nnx.to_pure_dict(nnx.state(model.encoders[modality], nnx.Param)))


def test_weight_files_orbax_and_safetensors_load_the_same_parameters(source, tmp_path):
    import orbax.checkpoint as ocp
    from safetensors.numpy import save_file

    cfg, run, _ = source
    image = _arrays(run, "encoders/image")
    # an Orbax checkpoint of a bigger tree: the component is chosen by prefix
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "ckpt", {"params": {"backbone": _nest(image)}, "step": np.float32(3)})
    # a safetensors file with other names: prefix, rename and ignore map them
    renamed = {"net." + k.replace("convs/convs/0/kernel", "first_kernel"): v for k, v in image.items()}
    save_file({**renamed, "net.classifier.weight": np.zeros((3, 2), np.float32),
               "net.bn.num_batches_tracked": np.zeros((), np.int64)},  # no parameter, left out
              tmp_path / "w.safetensors")
    for init in ({"orbax": str(tmp_path / "ckpt"), "prefix": "params/backbone/"},
                 {"safetensors": str(tmp_path / "w.safetensors"), "prefix": "net.",
                  "rename": {"first_kernel": "convs/convs/0/kernel"},
                  "ignore": ["classifier.*", "*.num_batches_tracked"]}):
        config = copy.deepcopy(cfg)
        config["model"]["encoders"]["image"]["init_from"] = init
        config["train"]["seed"] = 7
        a = assemble(config)
        got = _params(a)
        assert set(got) == set(image)
        for k in image:
            np.testing.assert_array_equal(np.asarray(got[k]), image[k], err_msg=k)
        assert a.resolved_config()["model"]["encoders"]["image"]["init_from"] == init


def _nest(flat):
    tree: dict = {}
    for name, value in flat.items():
        *path, leaf = name.split("/")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def test_every_weight_file_problem_is_a_config_error_at_its_key(source, tmp_path):
    from safetensors.numpy import save_file

    cfg, run, _ = source
    image = _arrays(run, "encoders/image")
    good = tmp_path / "good.safetensors"
    save_file(image, good)
    some = sorted(image)[0]
    save_file({k: v for k, v in image.items() if k != some}, tmp_path / "missing.safetensors")
    save_file({**image, "extra/bias": np.zeros(3, np.float32)}, tmp_path / "extra.safetensors")
    save_file({**image, some: np.zeros((2, 2), np.float32)}, tmp_path / "shape.safetensors")
    save_file({**image, some: image[some].astype(np.float64)}, tmp_path / "f64.safetensors")
    save_file({**image, some: image[some].astype(np.int32)}, tmp_path / "int.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04\x95 not a safetensors file" * 4)
    where = "model.encoders.image.init_from"
    cases = [
        ({"safetensors": str(tmp_path / "missing.safetensors")}, where, f"needs '{some}'"),
        ({"safetensors": str(tmp_path / "extra.safetensors")}, where, "the source has 'extra/bias' (3,)"),
        ({"safetensors": str(tmp_path / "shape.safetensors")}, where, "gives (2, 2)"),
        ({"safetensors": str(tmp_path / "f64.safetensors")}, where, "is F64"),
        ({"safetensors": str(tmp_path / "int.safetensors")}, where, "is I32"),
        ({"safetensors": str(tmp_path / "junk.safetensors")}, where, "not a safetensors file"),
        ({"safetensors": str(tmp_path / "none.safetensors")}, f"{where}.safetensors", "does not exist"),
        ({"safetensors": str(good), "prefix": "x."}, f"{where}.prefix", "no tensor"),
        ({"safetensors": str(good), "rename": {"nope": "a"}}, f"{where}.rename", "'nope'"),
        ({"safetensors": str(good), "layout": "pytroch"}, f"{where}.layout", "did you mean 'pytorch'"),
        ({"safetensors": str(good), "prefx": "a"}, f"{where}.prefx", "did you mean 'prefix'"),
        ({"safetensors": str(good), "package": "no-such-package-x"}, f"{where}.package", "not installed"),
        ({"safetensors": str(good), "orbax": str(good)}, where, "exactly one source"),
        ({"safetensors": str(good), "layout": "pytorch"}, where, "0.1.0) needs 'convs.0.bias'"),
        ({"orbax": str(good)}, where, "is a directory"),
    ]
    for init, key, message in cases:
        config = copy.deepcopy(cfg)
        config["model"]["encoders"]["image"]["init_from"] = init
        with pytest.raises(ConfigError) as e:
            assemble(config)
        assert e.value.key == key and message in str(e.value), (init, str(e.value))
        assert len(str(e.value)) < 1200
    config = copy.deepcopy(cfg)
    config["model"]["head"]["init_from"] = {"safetensors": str(good), "layout": "pytorch"}
    with pytest.raises(ConfigError, match="declares no PyTorch layout") as e:
        assemble(config)
    assert e.value.key == "model.head.init_from.layout"


def test_a_run_started_from_a_source_does_not_need_it_again(source, tmp_path):
    """Once trained (or checkpointed), a run's parameters are its own: deleting the weight
    file it started from changes nothing for evaluate, predict or resume."""
    import shutil

    from safetensors.numpy import save_file

    from fusionjax.rundir import load_run

    cfg, run, _ = source
    weights = tmp_path / "image.safetensors"
    save_file(_arrays(run, "encoders/image"), weights)
    config = copy.deepcopy(cfg)
    config["model"]["encoders"]["image"]["init_from"] = {"safetensors": str(weights)}
    config["train"].update(steps=4, log_every=2)
    started = tmp_path / "started"
    result = train(assemble(config), started, log=lambda s: None)
    weights.unlink()
    shutil.rmtree(started / "final_model")  # as if killed after its last checkpoint
    again = train(assemble(config, read_sources=False), started, log=lambda s: None)
    assert again.eval_metrics == pytest.approx(result.eval_metrics, rel=1e-6)
    assert load_run(started).evaluate().metrics == pytest.approx(result.eval_metrics, rel=1e-6)


def test_config_check_params_lists_what_a_weight_file_must_hold(source):
    from fusionjax.transfer import parameter_listing

    cfg, run, _ = source
    config = copy.deepcopy(cfg)
    config["model"]["encoders"]["image"]["init_from"] = str(run)
    lines = parameter_listing(assemble(config))
    assert (f"model.encoders.image  (encoders/cnn_image)  init_from: run '{run}' at "
            "'model.encoders.image'") in lines
    kernel = next(line for line in lines if line.strip().startswith("dense/kernel"))
    assert "256x32" in kernel and "<- dense.weight (linear after a flatten" in kernel
    assert any(line.strip().startswith("out/kernel") for line in lines)  # the head: no layout
