"""A trained run directory is self-describing: `evaluate` and `predict` in a subprocess
need nothing but the directory (and the plugins it used).  Its layout has one home
(fusionjax/rundir.py), and each way a directory can be wrong is its own error."""

import ast
import json
import shutil

import pytest
from conftest import ROOT, run_cli

from fusionjax import rundir

SHIPPED = ROOT / "examples" / "data"


def test_run_directory_holds_everything(run_dir):
    assert {p.name for p in run_dir.iterdir()} == set(rundir.LAYOUT) | {"vocab.json"}
    assert len(json.loads((run_dir / "vocab.json").read_text())["tokens"]) > 40


def test_the_layout_is_spelled_in_one_place():
    """No module but fusionjax/rundir.py spells a run-directory name as a string."""
    spelled = []
    for path in sorted([*(ROOT / "fusionjax").rglob("*.py"), *(ROOT / "fusionjax_plugins").rglob("*.py")]):
        if path.name == "rundir.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
                      and n.body and isinstance(n.body[0], ast.Expr)}
        spelled += [f"{path.relative_to(ROOT)}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and n.value in rundir.LAYOUT and id(n) not in docstrings]
    assert not spelled, spelled


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
    assert out.returncode == 2 and "has no modality 'smell'" in out.stderr
    assert "its modalities are: audio, image, text" in out.stderr
    out = run_cli("predict", str(run_dir), "imgae=x.png")
    assert out.returncode == 2 and "did you mean 'image'?" in out.stderr
    out = run_cli("predict", str(run_dir), f"image={tmp_path / 'nope.png'}")
    assert out.returncode == 1 and "nope.png: image file not found" in out.stderr
    for top in ("0", "-1"):
        out = run_cli("predict", str(run_dir), "text=which is larger", "--top", top)
        assert out.returncode == 2 and "must be an int >= 1" in out.stderr
    out = run_cli("evaluate", str(run_dir), "--split", "tset")
    assert out.returncode == 2 and "(did you mean 'test'?)" in out.stderr and "Traceback" not in out.stderr


def test_each_wrong_directory_is_its_own_error(run_dir, tmp_path):
    """Not a run, an unfinished run, a file of the wrong shape: exit 2, a message that
    names the directory and what to do, never a traceback."""
    cases = {}
    cases["empty"] = tmp_path / "empty"
    cases["empty"].mkdir()
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    shutil.rmtree(unfinished / rundir.MODEL)
    listed = tmp_path / "listed"
    shutil.copytree(run_dir, listed)
    (listed / rundir.CONFIG).write_text("[1, 2]")
    expected = {"empty": "not a fusionjax run directory", unfinished.name: "has no final model",
                listed.name: "config.json holds a list, not a JSON object"}
    for path in (cases["empty"], unfinished, listed):
        for command in ("evaluate", "predict"):
            args = [command, str(path)] + (["text=which is larger"] if command == "predict" else [])
            out = run_cli(*args)
            assert out.returncode == 2, (path, out.stderr)
            assert str(path) in out.stderr and expected[path.name] in out.stderr, out.stderr
            assert "Traceback" not in out.stderr
    out = run_cli("resume", str(unfinished))  # an unfinished run resumes; a finished one never
    assert out.returncode == 0, out.stderr[-2000:]
    out = run_cli("resume", str(unfinished))
    assert out.returncode == 2 and "already holds a finished run" in out.stderr


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


def test_a_damaged_model_is_refused(run_dir, tmp_path):
    broken = tmp_path / "damaged"
    shutil.copytree(run_dir, broken)
    for f in (broken / rundir.MODEL).rglob("*"):  # the array data; the metadata still reads
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"\x00garbage")
    out = run_cli("evaluate", str(broken))
    assert out.returncode == 2 and "the final model (final_model/) cannot be read" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr) < 2000, out.stderr
    shutil.rmtree(broken / rundir.MODEL)
    shutil.copytree(run_dir / rundir.MODEL, broken / rundir.MODEL)
    config = json.loads((broken / rundir.CONFIG).read_text())
    config["model"]["head"]["hidden"] = [7]
    (broken / rundir.CONFIG).write_text(json.dumps(config))
    out = run_cli("evaluate", str(broken))
    assert out.returncode == 2 and "does not fit the model" in out.stderr


def test_answers_are_honest_about_their_inputs(run_dir, tmp_path):
    """A dark-on-light digit is inverted (and the answer says so); a text with no known
    word counts as absent; an example with nothing usable is refused."""
    from PIL import Image, ImageOps

    digit = SHIPPED / "samples" / "digit7.png"
    ImageOps.invert(Image.open(digit).convert("L")).save(tmp_path / "dark7.png")
    wav = str(SHIPPED / "fsdd" / "recordings" / "4_george_0.wav")
    text = "text=what is the written digit plus the spoken digit"
    light = json.loads(run_cli("predict", str(run_dir), f"image={digit}", f"audio={wav}", text,
                               "--json").stdout)
    dark = run_cli("predict", str(run_dir), f"image={tmp_path / 'dark7.png'}", f"audio={wav}", text,
                   "--json")
    assert dark.returncode == 0, dark.stderr
    dark = json.loads(dark.stdout)
    assert dark["answer"] == light["answer"] and "notes" not in light
    assert dark["top"][0]["probability"] == pytest.approx(light["top"][0]["probability"], abs=0.05)
    assert any("inverted" in n for n in dark["notes"])
    out = run_cli("predict", str(run_dir), f"image={digit}", "text=?! ...")
    assert out.returncode == 0 and "absent modalities: audio, text" in out.stdout
    assert "no word of it is in the model's vocabulary" in out.stdout
    out = run_cli("predict", str(run_dir), "text=?! ...")
    assert out.returncode == 2 and "none of the inputs can be used" in out.stderr


def test_a_predictor_answers_many_at_once_without_recompiling(run_dir):
    from fusionjax.rundir import load_run

    predictor = load_run(run_dir).predictor(max_batch=8)
    assert predictor.buckets == (1, 2, 4, 8)
    predictor.warm_up()
    assert predictor.compilations() == 4
    texts = ["what is the written digit plus the spoken digit", "which is larger",
             "what is the spoken digit minus the written digit"]
    examples = [predictor.read({"image": str(SHIPPED / "samples" / "digit3.png"), "text": t}) for t in texts]
    one_by_one = [predictor.answer_many([e])[0].to_json() for e in examples]
    for n in (3, 5, 11):  # padded to 4, 8, and 8 + 4
        together = [a.to_json() for a in predictor.answer_many([examples[i % 3] for i in range(n)])]
        for i, answer in enumerate(together):
            assert answer["answer"] == one_by_one[i % 3]["answer"]
            assert answer["probability"] == pytest.approx(one_by_one[i % 3]["probability"], abs=1e-5)
    assert predictor.compilations() == 4
