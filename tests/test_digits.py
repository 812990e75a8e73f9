"""The digit data sets (avdigits, digit_qa) on the shipped subset, and on the full
sets in ../shared/data when they are there."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from fusionjax.data.text import UNK
from fusionjax.errors import ConfigError, DataError
from fusionjax_plugins.datasets import digit_sources as sources
from fusionjax_plugins.datasets.avdigits import AVDigits
from fusionjax_plugins.datasets.digit_qa import OPERATIONS, DigitQA

FULL = ROOT.parent / "shared" / "data"
needs_full = pytest.mark.skipif(not (FULL / "mnist").is_dir(),
                                reason=f"the full data sets are not at {FULL}")


def test_fsdd_split_follows_the_standard_recording_index():
    ds = AVDigits()
    train, test = ds.recordings("train"), ds.recordings("test")
    index = lambda name: int(re.match(r"\d_[a-z]+_(\d+)\.wav", name).group(1))  # noqa: E731
    assert all(index(n) <= 4 for n in test.names)
    assert all(index(n) >= 5 for n in train.names)
    assert not set(train.names) & set(test.names)
    assert train.audio.shape[1] == ds.num_samples and train.audio.dtype == np.float32


def test_avdigits_pairs_image_and_recording_of_the_same_digit():
    ds = AVDigits()
    for split in ("train", "test"):
        rng = np.random.default_rng(0)
        draws = ds.draw(split, ds.size(split), rng)
        _, image_labels = ds.images(split)
        assert np.array_equal(image_labels[draws["image"]], draws["label"])
        assert np.array_equal(ds.recordings(split).labels[draws["audio"]], draws["label"])
    batch = next(ds.batches("train", 32, seed=0, shuffle=True, drop_remainder=True))
    assert batch["image"].shape == (32, 28, 28, 1) and batch["audio"].shape == (32, 6000)


def test_train_pairing_is_redrawn_each_epoch_and_test_is_fixed():
    ds = AVDigits()

    def first(split, seed):
        return next(ds.batches(split, 64, seed=seed, shuffle=False, drop_remainder=True))

    a, b = first("train", 1), first("train", 2)
    assert np.array_equal(a["image"], b["image"]) and not np.array_equal(a["audio"], b["audio"])
    np.testing.assert_array_equal(first("train", 1)["audio"], a["audio"])  # seeded
    np.testing.assert_array_equal(first("test", 1)["audio"], first("test", 2)["audio"])


def test_noisy_variant_degrades_both_modalities_reproducibly():
    clean = AVDigits()
    noisy = AVDigits(noisy=True)
    c = next(clean.batches("test", 16, seed=0, shuffle=False, drop_remainder=False))
    n = next(noisy.batches("test", 16, seed=0, shuffle=False, drop_remainder=False))
    n2 = next(noisy.batches("test", 16, seed=0, shuffle=False, drop_remainder=False))
    np.testing.assert_array_equal(n["image"], n2["image"])
    assert np.array_equal(c["label"], n["label"])
    assert np.abs(n["image"] - c["image"]).mean() > 0.5
    assert np.std(n["audio"]) > 1.5 * np.std(c["audio"])  # -6 dB: noise louder than the voice


def test_digit_qa_labels_answer_the_question():
    ds = DigitQA(test_size=500)
    draws = ds.draw("test", 500, np.random.default_rng(3))
    a = ds.images("test")[1][draws["image"]]
    b = ds.recordings("test").labels[draws["audio"]]
    keywords = {"difference": {"difference", "apart", "subtract", "differ"},
                "sum": {"plus", "add", "sum", "added"},
                "larger": {"larger", "bigger", "maximum", "greater", "higher"},
                "smaller": {"smaller", "lesser", "minimum", "lower"}}
    seen = set()
    for i in range(500):
        text = set(ds.vocab.decode(draws["text"][i]).split())
        # "subtract the smaller ... from the larger" is a difference: check that first
        op = next(name for name, words in keywords.items() if words & text)
        seen.add(op)
        assert draws["label"][i] == OPERATIONS[op][0](np.array(a[i]), np.array(b[i]))
        assert UNK not in draws["text"][i]
    assert seen == set(OPERATIONS) and draws["label"].max() <= 18 and ds.num_classes == 19


def test_digit_qa_vocabulary_round_trip(tmp_path):
    ds = DigitQA()
    ds.save(tmp_path)
    again = DigitQA()
    again.restore(tmp_path)
    assert again.vocab.itos == ds.vocab.itos
    np.testing.assert_array_equal(again.encode("text", "what is the written digit plus the spoken digit"),
                                  ds.encode("text", "what is the written digit plus the spoken digit"))
    (tmp_path / "vocab.json").write_text('{"tokens": ["just", "three", "words"]}')
    with pytest.raises(DataError, match="vocab.json: 5 words"):
        again.restore(tmp_path)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"no 'mnist' folder under .*the data set's `root`"):
        AVDigits(root=str(tmp_path))
    (tmp_path / "mnist").mkdir()
    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    src = Path(sources.__file__).resolve().parents[2] / "examples" / "data" / "mnist"
    for name in ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "train-images-idx3-ubyte.gz"):
        (tmp_path / "mnist" / name).write_bytes((src / name).read_bytes())
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(
        (src / "t10k-images-idx3-ubyte.gz").read_bytes()[:5000])
    ds = AVDigits(root=str(tmp_path))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        ds.images("test")
    with pytest.raises(DataError, match="no train recordings"):
        ds.recordings("train")


@needs_full
def test_full_sets_sizes():
    ds = AVDigits(root=str(FULL))
    assert ds.size("train") == 60000 and ds.size("test") == 10000
    assert len(ds.recordings("train").labels) == 2700 and len(ds.recordings("test").labels) == 300


def test_learns_real_digits_from_the_shipped_subset(tmp_path):
    """Image + audio on real MNIST digits and FSDD recordings (the shipped subset):
    a short run must recognise the digits well above chance (0.1)."""
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax.training.loop import train

    cfg = load_config(ROOT / "examples" / "avdigits.toml",
                      ["train.steps=150", "train.log_every=50", "data.test_size=500"])
    result = train(assemble(cfg), tmp_path / "run", log=lambda s: None)
    assert result.eval_metrics["accuracy"] >= 0.85, result.eval_metrics


def test_noise_does_not_depend_on_batching():
    ds = AVDigits(noisy=True, test_size=40)
    whole = next(ds.batches("test", 40, seed=0, shuffle=False, drop_remainder=False))
    parts = list(ds.batches("test", 7, seed=0, shuffle=False, drop_remainder=False))
    for key in ("image", "audio", "label"):
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_sizes_are_checked_and_the_data_folder_recorded(tiny_config):
    from fusionjax.assembly import assemble
    from fusionjax.config import apply_overrides

    cfg = apply_overrides(tiny_config, ["data={type=\"avdigits\", train_size=5000}"])
    cfg["model"]["encoders"] = {"image": cfg["model"]["encoders"]["image"]}
    with pytest.raises(ConfigError, match=r"^data.train_size: asks for 5000 train examples"):
        assemble(cfg)
    cfg = apply_overrides(cfg, ["data.train_size=0"])
    with pytest.raises(ConfigError, match=r"^data.train_size: must be >= 1"):
        assemble(cfg)
    cfg = apply_overrides(cfg, ["data.train_size=100"])
    resolved = assemble(cfg).resolved_config()
    assert Path(resolved["data"]["root"]).is_absolute()
    assert resolved["data"]["root"] == str((ROOT / "examples" / "data").resolve())
