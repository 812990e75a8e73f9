"""Missing modalities: the manifest marks bad inputs absent (``on_error = "absent"``),
``evaluate --drop`` / ``--sweep`` score a run with modalities removed, ``predict`` takes
any non-empty subset, and ``train.modality_dropout`` teaches a model to do without one."""

from __future__ import annotations

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_manifest import KW, _config, make_records, write_csv

from fusionjax.assembly import assemble
from fusionjax.cli import main
from fusionjax.errors import ConfigError, DataError
from fusionjax.interfaces import FieldSpec, mask_key
from fusionjax.training.loop import train
from fusionjax.training.modality_dropout import drop_modalities

# Two modalities that both carry the label; the image is the easier one to learn.
SYNTHETIC = {
    "model": {
        "encoders": {"image": {"type": "cnn_image", "channels": [8], "dense": 16},
                     "text": {"type": "lstm_text", "embed_dim": 8, "hidden": 16}},
        "fusion": {"type": "concat"},
        "head": {"type": "classification", "hidden": [16]},
    },
    "data": {"type": "synthetic", "modalities": ["image", "text"], "train_size": 512,
             "test_size": 256, "image_size": 12, "seq_len": 8, "vocab_size": 50, "num_classes": 4},
    "train": {"steps": 200, "batch_size": 32, "log_every": 100, "seed": 0,
              "optimizer": {"name": "adam", "learning_rate": 3e-3}},
}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """``fusionjax ARGS`` in this process (no second JAX start-up): (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The same model trained without and with ``modality_dropout = {image = 0.5}``."""
    out = {}
    for name, dropout in (("plain", {}), ("dropout", {"image": 0.5})):
        config = copy.deepcopy(SYNTHETIC)
        config["train"]["modality_dropout"] = dropout
        out[name] = train(assemble(config), tmp_path_factory.mktemp("runs") / name,
                          log=lambda s: None).run_dir
    return out


# -- the manifest: on_error = "absent" ------------------------------------------------------

BROKEN = {  # record index -> (modality, how it is broken, found when constructed)
    2: ("image", "missing file"),
    4: ("caption", "empty text"),
    5: ("caption", "punctuation only"),
    7: ("note", "missing text file"),
    8: ("audio", "truncated wav"),
}


def _broken_manifest(folder, n: int = 24):
    records = make_records(folder, n)
    records[2]["image"] = "images/nope.png"
    records[4]["caption"] = ""
    records[5]["caption"] = "?! ... --"
    records[7]["note"] = "notes/gone.txt"
    data = (folder / records[8]["audio"]).read_bytes()
    (folder / "audio/cut.wav").write_bytes(data[:-100])
    records[8]["audio"] = "audio/cut.wav"
    for m in ("image", "audio", "note"):  # a row with nothing usable: skipped, and listed
        records[10][m] = f"gone/{m}"
    records[10]["caption"] = ""
    return write_csv(folder / "m.csv", records)


def test_absent_inputs_are_zeros_with_masks_false(tmp_path):
    from fusionjax_plugins.datasets.manifest import ManifestDataset

    manifest = _broken_manifest(tmp_path)
    ds = ManifestDataset(path=str(manifest), on_error="absent", **KW)
    assert ds.modalities == ("image", "audio", "caption", "note")
    for m in ds.modalities:
        assert ds.spec[mask_key(m)] == FieldSpec((), "bool")
    # found when constructed: the missing files and the texts without words; the audio
    # file exists, so it is found unreadable only when its split is decoded
    counts = {m: len(v) for m, v in ds.absent_inputs.items()}
    assert counts == {"image": 1, "caption": 2, "note": 1}, ds.absent_inputs
    assert ds.absent_inputs["image"][0] == (f"{manifest}, line 4: column 'image': "
                                            f"{tmp_path / 'images' / 'nope.png'}: file not found")
    assert len(ds.problems) == 1 and "line 12: no usable input" in ds.problems[0]
    assert ds.size("train") + ds.size("test") == 23

    seen = {}
    for split in ("train", "test"):
        data = ds.arrays(split)
        for row, line in enumerate(ds.lines(split)):
            seen[line - 2] = {m: (bool(data[mask_key(m)][row]), data[m][row]) for m in ds.modalities}
    assert {m: len(v) for m, v in ds.absent_inputs.items()} == {"image": 1, "caption": 2, "note": 1,
                                                                 "audio": 1}
    assert "cut.wav: truncated WAV" in ds.absent_inputs["audio"][0]
    assert 10 not in seen
    for k, row in seen.items():
        for m, (present, x) in row.items():
            assert present == (BROKEN.get(k, (None,))[0] != m), (k, m)
            assert np.any(x != 0) == present, (k, m)  # absent: all zeros; present: data
    batch = next(ds.batches("train", 8, seed=0, shuffle=True, drop_remainder=True))
    assert set(batch) == {*ds.modalities, "label", *(mask_key(m) for m in ds.modalities)}
    assert all(batch[mask_key(m)].dtype == bool for m in ds.modalities)

    # the default still stops at the first pass, naming the file and the row
    with pytest.raises(DataError, match=r"m.csv, line 4: column 'image': .*nope.png: file not found"):
        ManifestDataset(path=str(manifest), **KW)
    skipping = ManifestDataset(path=str(manifest), on_error="skip", **KW)
    assert mask_key("image") not in skipping.spec and not skipping.absent_inputs
    from fusionjax.config.validation import bind

    with pytest.raises(ConfigError) as e:  # checked where the config is read, once
        bind(ManifestDataset, {"path": str(manifest), "on_error": "ignore", **KW}, "data", owner="manifest")
    assert e.value.key == "data.on_error" and "'absent'" in str(e.value)


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("absent")
    manifest = _broken_manifest(folder, 36)
    config = _config(manifest, steps=20)
    config["data"]["on_error"] = "absent"
    (folder / "cfg.json").write_text(json.dumps(config))
    run = train(assemble(config), folder / "run", log=lambda s: None).run_dir
    return folder, run


def test_config_check_and_run_json_count_absent_inputs(manifest_run, capsys):
    folder, run = manifest_run
    code, out, err = _cli(capsys, "config", "check", str(folder / "cfg.json"))
    assert code == 0, err
    assert "absent inputs: image 1, caption 2" in out  # the model reads no `note`
    assert "skipped 1 unreadable examples" in out
    facts = json.loads((run / "run.json").read_text())
    assert facts["absent_inputs"] == {"image": 1, "caption": 2, "audio": 1}  # audio: when decoded
    assert len(facts["absent_examples"]["caption"]) == 2 and len(facts["skipped_examples"]) == 1


def test_evaluate_and_predict_a_run_trained_with_absent_inputs(manifest_run, capsys):
    folder, run = manifest_run
    code, out, err = _cli(capsys, "evaluate", str(run), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert 0 <= result["accuracy"] <= 1 and result["dropped"] == []
    code, out, err = _cli(capsys, "evaluate", str(run), "--split", "train", "--sweep", "--json")
    assert code == 0, err
    rows = {r["condition"]: r for r in json.loads(out)}
    size = rows["all"]["examples"]
    # the train row without an image (line 4) has nothing left under "only image": not scored
    assert rows["only image"]["examples"] == size - 1 and rows["-image"]["examples"] == size

    code, out, err = _cli(capsys, "predict", str(run), "caption=a big stone", "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["absent"] == ["audio", "image"] and answer["answer"] in ("high", "low", "mid")
    code, out, err = _cli(capsys, "predict", str(run), f"image={folder / 'images' / 'i0.png'}")
    assert code == 0 and "absent modalities: audio, caption" in out, err
    # no input at all is refused: some modality must be present
    code, out, err = _cli(capsys, "predict", str(run))
    assert code == 2 and "the following arguments are required: modality=VALUE" in err


# -- evaluate --drop / --sweep --------------------------------------------------------------


def test_drop_changes_the_metrics(runs, capsys):
    results = {}
    for drop in ((), ("image",), ("text",)):
        code, out, err = _cli(capsys, "evaluate", str(runs["plain"]), "--json",
                              *(a for m in drop for a in ("--drop", m)))
        assert code == 0, err
        results[drop] = json.loads(out)
        assert results[drop]["dropped"] == list(drop) and results[drop]["examples"] == 256
    full, no_image, no_text = results[()], results[("image",)], results[("text",)]
    assert full["accuracy"] >= 0.95, full
    assert no_image["accuracy"] <= full["accuracy"] - 0.2, (full, no_image)  # it relies on the image
    assert no_text["loss"] != full["loss"]
    code, out, _ = _cli(capsys, "evaluate", str(runs["plain"]), "--drop", "image")
    assert code == 0 and "[test, 256 examples, without image]: loss" in out, out


def test_drop_errors(runs, capsys):
    code, _, err = _cli(capsys, "evaluate", str(runs["plain"]), "--drop", "imgae")
    assert code == 2
    assert "--drop: the model has no modality 'imgae' (did you mean 'image'?)" in err, err
    code, _, err = _cli(capsys, "evaluate", str(runs["plain"]), "--drop", "image", "--drop", "text")
    assert code == 2 and "dropping every modality" in err, err
    code, _, err = _cli(capsys, "evaluate", str(runs["plain"]), "--drop", "image", "--sweep")
    assert code == 2 and "not allowed with argument" in err, err


def test_sweep_compiles_one_eval_step(runs):
    from fusionjax.evaluation import sweep, sweep_conditions
    from fusionjax.parallel import data_mesh
    from fusionjax.rundir import load_run
    from fusionjax.training.step import make_steps

    assert [c.name for c in sweep_conditions(["image", "text", "audio"])] == [
        "all", "-image", "-text", "-audio", "only image", "only text", "only audio"]
    assert sweep_conditions(["a", "b"])[4].drop == ("a",)  # "only b"
    with pytest.raises(ConfigError, match="two or more modalities"):
        sweep_conditions(["image"])
    run, mesh = load_run(runs["plain"]), data_mesh()
    steps = make_steps(run.model, run.assembly.optimizer, mesh, run.assembly.train)
    rows = sweep(steps, steps.init, run.assembly, "test", 64, mesh)  # 4 batches per condition
    assert len(rows) == 2 * 2 + 1
    assert steps.eval._cache_size() == 1  # 20 batches, 5 conditions, one compilation
    by_name = {r.condition.name: r.metrics for r in rows}
    assert by_name["-image"] == by_name["only text"] and by_name["-text"] == by_name["only image"]
    assert by_name["-image"]["accuracy"] < by_name["all"]["accuracy"]


def test_sweep_table_and_json(runs, capsys):
    code, out, err = _cli(capsys, "evaluate", str(runs["plain"]), "--sweep")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("[test, 256 examples]")
    assert lines[1].split() == ["condition", "loss", "accuracy", "macro_f1", "examples"]
    assert [line.split("  ")[0].strip() for line in lines[2:]] == [
        "all", "-image", "-text", "only image", "only text"]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    code, out, err = _cli(capsys, "evaluate", str(runs["plain"]), "--sweep", "--json")
    table = json.loads(out)
    assert [r["condition"] for r in table] == ["all", "-image", "-text", "only image", "only text"]
    assert table[1]["dropped"] == ["image"] and table[3]["dropped"] == ["text"]
    assert set(table[0]) == {"condition", "dropped", "examples", "loss", "accuracy", "macro_f1"}


# -- modality dropout -----------------------------------------------------------------------


def test_modality_dropout_helps_without_the_image(runs, capsys):
    table = {}
    for name, run in runs.items():
        code, out, err = _cli(capsys, "evaluate", str(run), "--sweep", "--json")
        assert code == 0, err
        table[name] = {r["condition"]: r["accuracy"] for r in json.loads(out)}
    print(json.dumps(table, indent=1))
    # measured (200 steps): plain -image 0.55, dropout -image 0.98; both 1.00 with everything
    assert table["dropout"]["-image"] >= table["plain"]["-image"] + 0.2, table
    assert table["dropout"]["all"] >= 0.95 and table["plain"]["all"] >= 0.95, table


def _batch(masks: dict[str, list[bool]] | None = None, size: int = 4000) -> dict:
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.normal(size=(size, 3)), jnp.float32),
             "text": jnp.asarray(rng.integers(0, 9, (size, 5)), jnp.int32),
             "label": jnp.zeros((size,), jnp.int32)}
    for m, pattern in (masks or {}).items():
        batch[mask_key(m)] = jnp.asarray(np.resize(np.array(pattern, bool), size))
    return batch


def test_drop_modalities():
    key, mods = jax.random.key(3), ("image", "text")
    # rates 0: nothing changes (masks all True where the batch had none)
    batch = _batch({"text": [True, False, True]})
    out = drop_modalities(batch, {"image": 0.0, "text": 0.0}, mods, key)
    assert bool(jnp.all(out[mask_key("image")]))
    np.testing.assert_array_equal(out[mask_key("text")], batch[mask_key("text")])
    for k in ("image", "text", "label"):
        assert out[k] is batch[k]  # only masks change; the model zeroes absent inputs
    # rate near 1: the image is hidden, except where it is the only modality present
    out = drop_modalities(batch, {"image": 0.999}, mods, key)
    image, text = np.asarray(out[mask_key("image")]), np.asarray(out[mask_key("text")])
    only_image = ~np.asarray(batch[mask_key("text")])
    assert image[only_image].all() and image[~only_image].mean() < 0.005  # ~0.001 kept by chance
    np.testing.assert_array_equal(text, batch[mask_key("text")])
    # never a row left with nothing unless it came with nothing
    given = {"image": [True, True, False, False, True], "text": [True, False, True, False, True]}
    batch = _batch(given)
    out = drop_modalities(batch, {"image": 0.7, "text": 0.7}, mods, key)
    before = np.asarray(batch[mask_key("image")]) | np.asarray(batch[mask_key("text")])
    after = np.asarray(out[mask_key("image")]) | np.asarray(out[mask_key("text")])
    np.testing.assert_array_equal(after, before)
    for m in mods:  # a hidden input was present before; nothing absent comes back
        assert not (np.asarray(out[mask_key(m)]) & ~np.asarray(batch[mask_key(m)])).any()
    # a moderate rate hides about that share of the examples that have the modality
    out = drop_modalities(_batch(), {"image": 0.3}, mods, key)
    assert 0.27 < 1 - float(jnp.mean(out[mask_key("image")])) < 0.33
