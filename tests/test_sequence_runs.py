"""Answers in words, end to end on the shipped subset: a CTC head and a decoder head learn
to read strips of real MNIST digits, and a trained run answers in text from the command
line (``predict``, ``--json`` with the beam's alternatives), evaluates to CER, WER and
sequence accuracy, and exports (CTC) or says why it cannot (decoder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, run_cli
from PIL import Image

from fusionjax.errors import ConfigError
from fusionjax_plugins.datasets import digit_sources as sources

# strips of 2-3 digits (92 pixels wide) and a small model: a few hundred steps learn them
SMALL = ["train.steps=400", "train.log_every=200", "data.min_digits=2", "data.max_digits=3",
         "data.train_size=4000", "data.test_size=200", "model.encoders.image.channels=[16,32]",
         "model.head.layers=1", "model.head.features=64", "train.optimizer.schedule.warmup_steps=20"]


def _test_strip_png(run, path) -> None:
    """The first test strip of the run's data set, written as a PNG file."""
    batch = next(run.assembly.dataset.batches("test", 1, seed=0, shuffle=False, drop_remainder=False))
    pixels = (batch["image"][0, :, :, 0] * sources.MNIST_STD + sources.MNIST_MEAN) * 255
    Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(path)


def test_ctc_reads_digit_strips_and_answers_in_text(tmp_path):
    import fusionjax as fj
    from fusionjax.sequences import TargetVocabulary

    run_path = tmp_path / "ctc"
    out = run_cli("train", str(ROOT / "examples" / "digit_strips.toml"), *SMALL,
                  "--output-dir", str(run_path))
    assert out.returncode == 0, out.stderr[-3000:]
    final = json.loads((run_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["cer"] < 0.5 and final["sequence_accuracy"] > 0.2, final  # untrained: cer 1.0, 0.0

    run = fj.load_run(run_path)
    metrics, scored = run.evaluate()
    assert scored == 200 and metrics["cer"] == pytest.approx(final["cer"])
    _test_strip_png(run, tmp_path / "strip.png")
    spec = run.assembly.dataset.spec["label"]
    vocab = TargetVocabulary(tuple(spec.metadata["vocabulary"]), spec.metadata["separator"])
    assert vocab.tokens[2:] == tuple("0123456789")

    out = run_cli("predict", str(run_path), f"image={tmp_path / 'strip.png'}", "--json", "--top", "3")
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout)
    assert answer["kind"] == "text" and set(answer["text"]) <= set("0123456789")
    alternatives = answer["alternatives"]
    assert alternatives[0] == {"text": answer["text"], "score": answer["score"]}
    scores = [a["score"] for a in alternatives]
    assert len(alternatives) == 3 and scores == sorted(scores, reverse=True) and scores[0] <= 0
    assert len({a["text"] for a in alternatives}) == 3
    # the command line answers what the Python API answers for the same file
    same = run.predictor()({"image": str(tmp_path / "strip.png")})
    assert same.text == answer["text"] and same.score == pytest.approx(answer["score"], abs=1e-6)

    from fusionjax.export import export_run
    export_run(run_path, tmp_path / "exported", platforms=("cpu",))
    manifest = json.loads((tmp_path / "exported" / "manifest.json").read_text())
    assert manifest["answer"]["kind"] == "text" and manifest["answer"]["vocabulary"] == list(vocab.tokens)
    assert set(manifest["output"]["leaves"]) == {"logits", "valid"}


def test_decoder_learns_to_caption_strips_and_never_recompiles(tmp_path):
    import fusionjax as fj
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax.prediction import answer_kind
    from fusionjax.training.loop import train
    from fusionjax_plugins.heads import decoder

    cfg = load_config(ROOT / "examples" / "digit_strips.toml", [*SMALL, "model.head.type=decoder"])
    result = train(assemble(cfg), tmp_path / "run", log=lambda s: None)
    m = result.eval_metrics
    assert m["sequence_accuracy"] > 0.4 and m["cer"] < 0.3, m  # untrained: 0.0 and >= 1.0
    assert {"cer", "wer", "token_error_rate", "token_accuracy", "loss"} <= set(m)

    run = fj.load_run(tmp_path / "run")
    _test_strip_png(run, tmp_path / "strip.png")
    # what `fusionjax predict` checks before the run loads: the kind, from the assembly alone
    assert answer_kind(run.assembly) == "text"
    predictor = run.predictor(max_batch=4)
    predictor.warm_up()
    compiled = (predictor.compilations(), decoder._beam_search._cache_size())
    examples = [predictor.read({"image": str(tmp_path / "strip.png")})] * 3
    answers = predictor.answer_many(examples) + predictor.answer_many(examples[:1])
    assert (predictor.compilations(), decoder._beam_search._cache_size()) == compiled
    best = answers[0]
    assert best.kind == "text" and best.alternatives[0].text == best.text
    assert all(a.text == best.text for a in answers)
    with pytest.raises(ConfigError, match="answers by a search") as e:
        from fusionjax.export import export_run
        export_run(tmp_path / "run", tmp_path / "exported", platforms=("cpu",))
    assert "fusionjax serve" in e.value.hint
