"""`fusionjax export`: the trained forward pass as a jax.export artifact that a standalone
loader runs with jax and numpy alone (no fusionjax, no plugins, no flax), giving the
outputs fusionjax's own compiled forward gives, for any batch size."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, run_cli

SAMPLES = ROOT / "examples" / "data"
IMAGE = str(SAMPLES / "samples" / "digit7.png")
AUDIO = str(SAMPLES / "fsdd" / "recordings" / "4_george_0.wav")
TEXTS = ["what is the sum of the written digit and the spoken digit",
         "Tell me the BIGGER of the drawn number, or the word in the audio?!",
         "which is smaller zebra's quux or the number in the recording",
         "", "the " * 40]

# Runs the exported loader with fusionjax, its plugins and flax impossible to import, and
# says what it printed and which of them got imported anyway.
CHECK = textwrap.dedent("""
    import contextlib, io, json, runpy, sys

    BLOCKED = ("fusionjax", "fusionjax_plugins", "flax")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked: {name}")

    sys.meta_path.insert(0, Block())
    out_dir, texts = sys.argv[1], json.loads(sys.argv[2])
    loader = out_dir + "/fusionjax_export_loader.py"
    printed = {}
    for npz in sys.argv[3:]:
        sys.argv = [loader, out_dir, npz]
        with contextlib.redirect_stdout(io.StringIO()) as buffer:
            runpy.run_path(loader, run_name="__main__")
        printed[npz] = json.loads(buffer.getvalue())
    sys.path.insert(0, out_dir)
    import fusionjax_export_loader as L

    model, manifest = L.load(out_dir)
    max_len = manifest["inputs"]["text"]["preprocessing"]["max_len"]
    tokens = [L.tokenize(t, L.read_vocab(out_dir, "text"), max_len).tolist() for t in texts]
    try:
        import fusionjax  # noqa: F401
        blocked = False
    except ImportError:
        blocked = True
    print(json.dumps({"printed": printed, "tokens": tokens, "pattern": L.WORD.pattern,
                      "blocked": blocked, "imported": sorted(m for m in sys.modules
                                                             if m.split(".")[0] in BLOCKED)}))
""")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small digit_qa run, trained here (in-process: no second JAX start-up)."""
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax.training.loop import train

    run = tmp_path_factory.mktemp("runs") / "qa"
    config = load_config(ROOT / "examples" / "digit_qa.toml", [
        "train.steps=10", "train.log_every=10", "data.train_size=640", "data.test_size=64",
        "train.eval_batch_size=64"])
    train(assemble(config), run, log=lambda s: None)
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("export") / "qa"
    out = run_cli("export", str(run_dir), str(out_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model.jaxexport" in out.stdout and "platforms: cpu" in out.stdout
    return out_dir


def test_the_manifest_says_what_a_consumer_needs(run_dir, exported):
    from fusionjax_plugins.datasets.digit_sources import MNIST_MEAN, MNIST_STD

    manifest = json.loads((exported / "manifest.json").read_text())
    assert {p.name for p in exported.iterdir()} == {"model.jaxexport", "manifest.json", "vocab.json",
                                                    "fusionjax_export_loader.py"}
    assert (exported / "vocab.json").read_bytes() == (run_dir / "vocab.json").read_bytes()
    assert manifest["format_version"] == 1 and "cpu" in manifest["platforms"]
    inputs = manifest["inputs"]
    assert {m: (i["shape"], i["dtype"], i["input_kind"]) for m, i in inputs.items()} == {
        "image": ([28, 28, 1], "float32", "file"), "audio": ([6000], "float32", "file"),
        "text": ([24], "int32", "text")}
    image, audio, text = (inputs[m]["preprocessing"] for m in ("image", "audio", "text"))
    assert image["mean"] == pytest.approx([MNIST_MEAN]) and image["std"] == pytest.approx([MNIST_STD])
    assert (audio["sample_rate"], audio["num_samples"], audio["align"]) == (8000, 6000, "center")
    assert (text["vocab"], text["max_len"], text["vocab_size"]) == ("vocab.json", 24, 57)
    assert manifest["masks"] == {m: f"mask/{m}" for m in ("audio", "image", "text")}
    assert manifest["output"]["structure"] == "array" and manifest["output"]["shape"] == ["b", 19]
    assert manifest["answer"]["kind"] == "class"
    assert manifest["answer"]["label_names"] == [str(i) for i in range(19)]
    assert manifest["config"] == json.loads((run_dir / "config.json").read_text())
    assert manifest["dataset"]["resolved_settings"]["root"] == str(SAMPLES)


def test_the_standalone_loader_matches_fusionjax_without_importing_it(run_dir, exported, tmp_path):
    from fusionjax.prediction import read_example
    from fusionjax.rundir import RunDir, load_run

    assembly = RunDir(run_dir).assemble()
    given = [{"image": IMAGE, "audio": AUDIO, "text": TEXTS[0]},
             {"image": IMAGE, "text": TEXTS[1]},  # audio absent
             {"audio": AUDIO, "text": TEXTS[2]},  # image absent
             {"image": IMAGE, "audio": AUDIO},  # text absent
             {"audio": AUDIO}]
    examples = [read_example(assembly, g) for g in given]
    batch = {m: np.stack([e.arrays[m] for e in examples]) for m in examples[0].arrays}
    batch |= {f"mask/{m}": np.array([m in e.present for e in examples]) for m in examples[0].arrays}
    files = [tmp_path / "one.npz", tmp_path / "five.npz"]
    np.savez(files[0], **{k: v[:1] for k, v in batch.items()})
    texts = np.array([g.get("text", "") for g in given])
    np.savez(files[1], **(batch | {"text": texts}))  # strings: the loader tokenises them
    (tmp_path / "check.py").write_text(CHECK)
    work = tmp_path / "elsewhere"
    work.mkdir()
    check = subprocess.Popen(  # meanwhile, fusionjax's own forward here
        [sys.executable, "-I", str(tmp_path / "check.py"), str(exported), json.dumps(TEXTS),
         *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work,
        env={"PATH": os.environ.get("PATH", ""), "JAX_PLATFORMS": "cpu", "HOME": str(work)})
    predictor = load_run(run_dir, assembly=assembly).predictor()
    expected = np.asarray(predictor._forward(predictor._state, batch))
    stdout, stderr = check.communicate(timeout=300)
    assert check.returncode == 0, stderr[-3000:]
    found = json.loads(stdout.strip().splitlines()[-1])
    assert found["blocked"] and found["imported"] == []
    for path, want in zip(files, (expected[:1], expected)):
        got = np.array(found["printed"][str(path)], np.float32)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert found["tokens"] == [assembly.dataset.encode("text", t).tolist() for t in TEXTS]
    from fusionjax.data.text import _WORD

    assert found["pattern"] == _WORD.pattern


def test_export_refuses_a_non_empty_folder_and_reports_run_errors(run_dir, exported, tmp_path):
    before = sorted(p.name for p in exported.iterdir())
    out = run_cli("export", str(run_dir), str(exported))
    assert out.returncode == 2 and "not empty" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in exported.iterdir()) == before
    out = run_cli("export", str(tmp_path / "no_run"), str(tmp_path / "new"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "run directory error" in out.stderr and "not a fusionjax run directory" in out.stderr
    assert not (tmp_path / "new").exists()
