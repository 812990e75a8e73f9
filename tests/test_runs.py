"""A trained run directory is self-describing: `evaluate` and `predict` in a subprocess
need nothing but the directory (and the plugins it used)."""

import json
import shutil

import numpy as np
import pytest
from conftest import ROOT, run_cli

SHIPPED = ROOT / "examples" / "data"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "qa"
    out = run_cli("train", str(ROOT / "examples" / "digit_qa.toml"), "train.steps=30",
                  "train.log_every=10", "data.train_size=2000", "data.test_size=300",
                  "--output-dir", str(run))
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def test_run_directory_holds_everything(run_dir):
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "run.json", "metrics.jsonl",
                                                   "vocab.json", "checkpoint"}
    assert len(json.loads((run_dir / "vocab.json").read_text())["tokens"]) > 40


def test_evaluate_reproduces_the_runs_test_metrics(run_dir):
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    out = run_cli("evaluate", str(run_dir), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout)
    assert metrics["split"] == final["split"] == "test"
    for key in ("loss", "accuracy", "macro_f1"):
        assert metrics[key] == pytest.approx(final[key], rel=1e-5)
    train = json.loads(run_cli("evaluate", str(run_dir), "--split", "train", "--json").stdout)
    assert train["split"] == "train" and 0 <= train["accuracy"] <= 1
    bad = run_cli("evaluate", str(run_dir), "--split", "valid")
    assert bad.returncode == 2 and "valid" in bad.stderr


def test_predict_answers_from_raw_files(run_dir, tmp_path):
    from PIL import Image

    from fusionjax.data.image import read_idx

    digit = read_idx(SHIPPED / "mnist" / "t10k-images-idx3-ubyte.gz")[0]
    Image.fromarray(digit).save(tmp_path / "digit.png")
    wav = next((SHIPPED / "fsdd" / "recordings").glob("3_*_0.wav"))
    out = run_cli("predict", str(run_dir), f"image={tmp_path / 'digit.png'}", f"audio={wav}",
                  "text=what is the written digit plus the spoken digit", "--json", "--top", "5")
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout)
    probs = [t["probability"] for t in answer["top"]]
    assert answer["answer"] in [str(v) for v in range(19)] and answer["absent"] == []
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    human = run_cli("predict", str(run_dir), f"audio={wav}", "text=which is larger")
    assert human.returncode == 0 and human.stdout.startswith("answer: ")
    assert "absent modalities: image" in human.stdout


def test_predict_and_evaluate_errors(run_dir, tmp_path):
    out = run_cli("predict", str(run_dir), "smell=roses")
    assert out.returncode == 2 and "image, audio, text" in out.stderr.replace("audio, image", "")  \
        or "modality" in out.stderr
    out = run_cli("predict", str(run_dir), f"image={tmp_path / 'nope.png'}")
    assert out.returncode == 1 and "nope.png: image file not found" in out.stderr
    out = run_cli("evaluate", str(tmp_path))
    assert out.returncode == 1 and "not a fusionjax run directory" in out.stderr


def test_missing_plugin_names_its_package(run_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["model"]["fusion"]["type"] = "ghost_fusions/ghost"
    (broken / "config.json").write_text(json.dumps(config))
    facts = json.loads((broken / "run.json").read_text())
    facts["plugins"]["ghost_fusions"] = {"package": "fusionjax-ghost", "version": "1.2",
                                         "status": "active"}
    (broken / "run.json").write_text(json.dumps(facts))
    out = run_cli("evaluate", str(broken))
    assert out.returncode == 2
    assert "ghost_fusions" in out.stderr and "pip install fusionjax-ghost" in out.stderr


def test_a_damaged_checkpoint_is_refused(run_dir, tmp_path):
    broken = tmp_path / "damaged"
    shutil.copytree(run_dir, broken)
    (broken / "checkpoint" / "params.msgpack").write_bytes(b"\x00garbage")
    out = run_cli("evaluate", str(broken))
    assert out.returncode == 1 and "params.msgpack" in out.stderr
    shutil.copytree(run_dir / "checkpoint", broken / "checkpoint", dirs_exist_ok=True)
    config = json.loads((broken / "config.json").read_text())
    config["model"]["head"]["hidden"] = [7]
    (broken / "config.json").write_text(json.dumps(config))
    out = run_cli("evaluate", str(broken))
    assert out.returncode == 1 and "does not fit the model" in out.stderr
    assert np.isfinite(1.0)
