"""The `sms_spam` data set: the full collection when ../shared/data has it, and small
generated files for the format and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusionjax.data.text import UNK, words
from fusionjax.errors import ConfigError, DataError
from fusionjax_plugins.datasets.sms_spam import SmsSpamDataset

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "examples" / "data"  # the repository's copy (the whole collection)
# the full collection: ../shared/data, else the shipped copy
SHARED = next((root for root in (REPO.parent / "shared" / "data", SHIPPED)
               if (root / "sms_spam" / "SMSSpamCollection").is_file()), None)
full_set = pytest.mark.skipif(
    SHARED is None, reason=f"the full SMS Spam Collection is neither in {REPO.parent / 'shared' / 'data'} "
                           f"nor in {SHIPPED} (sms_spam/SMSSpamCollection)")


@pytest.fixture(scope="module")
def full() -> SmsSpamDataset:
    return SmsSpamDataset(root=str(SHARED), max_vocab=None)  # a missing SHARED skips before this


@full_set
def test_full_set_sizes_and_stratified_split(full):
    assert len(full.texts) == 5574 and int(full.labels.sum()) == 747
    train, test = full.rows["train"], full.rows["test"]
    assert len(np.intersect1d(train, test)) == 0  # no message (by index) in both splits
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(5574))
    # 80/20 of each class: ham 4,827 -> 3,862 + 965, spam 747 -> 598 + 149
    assert full.size("train") == 4460 and full.size("test") == 1114
    for split in ("train", "test"):
        labels = full.arrays(split)["label"]
        assert abs(labels.mean() - 747 / 5574) < 0.002, (split, labels.mean())
    assert np.bincount(full.arrays("test")["label"]).tolist() == [965, 149]


@full_set
def test_full_set_vocabulary_from_train_only(full):
    train_words = {w for i in full.rows["train"] for w in words(full.texts[i])}
    assert set(full.vocab.itos[2:]) == train_words  # max_vocab=None, min_count=1: every train word
    test_only = {w for i in full.rows["test"] for w in words(full.texts[i])} - train_words
    assert len(test_only) > 100
    for w in sorted(test_only)[:50]:
        assert full.vocab.encode(w, 1)[0] == UNK
    capped = SmsSpamDataset(root=str(SHARED))  # max_vocab 20000 is more than the train words
    assert len(capped.vocab) == len(full.vocab)
    small = SmsSpamDataset(root=str(SHARED), max_vocab=1000, min_count=2)
    assert len(small.vocab) == 1000 and small.spec["text"].metadata == {"vocab_size": 1000}


@pytest.mark.skipif(not (SHIPPED / "sms_spam" / "SMSSpamCollection").is_file(),
                    reason=f"no shipped copy at {SHIPPED / 'sms_spam'}")
def test_default_root_is_the_shipped_copy(monkeypatch):
    monkeypatch.delenv("FUSIONJAX_DATA", raising=False)
    ds = SmsSpamDataset()
    assert ds.path == SHIPPED.resolve() / "sms_spam" / "SMSSpamCollection"
    assert ds.size("train") + ds.size("test") == 5574


@full_set
def test_full_set_determinism(full):
    again = SmsSpamDataset(root=str(SHARED), max_vocab=None)
    np.testing.assert_array_equal(again.rows["test"], full.rows["test"])
    assert again.vocab.itos == full.vocab.itos
    one = next(full.batches("train", 64, seed=7, shuffle=True, drop_remainder=True))
    two = next(again.batches("train", 64, seed=7, shuffle=True, drop_remainder=True))
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    other = SmsSpamDataset(root=str(SHARED), seed=1, max_vocab=None)
    assert not np.array_equal(other.rows["test"], full.rows["test"])


# -- small generated files ----------------------------------------------------------------


def _write(root: Path, text: str | bytes) -> Path:
    folder = root / "sms_spam"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "SMSSpamCollection"
    (path.write_bytes if isinstance(text, bytes) else lambda t: path.write_text(t, encoding="utf-8"))(text)
    return path


def _small(root: Path) -> Path:
    lines = [f"ham\thello friend {k}, see you at {k} o'clock" for k in range(16)]
    lines += [f"spam\tWIN a £{k}00 prize now!! call {k}" for k in range(4)]
    return _write(root, "\n".join(lines) + "\n")


def test_small_set(tmp_path):
    _small(tmp_path)
    ds = SmsSpamDataset(root=str(tmp_path), max_len=6)
    assert ds.label_names == ("ham", "spam") and ds.num_classes == 2
    assert ds.modalities == ("text",)
    assert ds.spec["text"].shape == (6,) and ds.spec["text"].metadata == {"vocab_size": len(ds.vocab)}
    assert ds.size("train") == 16 and ds.size("test") == 4
    assert np.bincount(ds.arrays("test")["label"]).tolist() == [3, 1]
    batch = next(ds.batches("train", 8, seed=0, shuffle=True, drop_remainder=True))
    assert batch["text"].shape == (8, 6) and batch["text"].dtype == np.int32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert "prize" in ds.vocab.stoi and "o'clock" in ds.vocab.stoi
    for row, i in enumerate(ds.rows["test"]):
        np.testing.assert_array_equal(ds.encode("text", ds.texts[i]), ds.arrays("test")["text"][row])
    with pytest.raises(DataError, match="no modality 'image'"):
        ds.encode("image", "x.png")
    with pytest.raises(ConfigError, match="has no split 'valid'") as e:
        ds.size("valid")
    assert "its splits are: train, test" in str(e.value)


def test_save_restore(tmp_path):
    _small(tmp_path / "data")
    ds = SmsSpamDataset(root=str(tmp_path / "data"))
    ds.save(tmp_path)
    fresh = SmsSpamDataset(root=str(tmp_path / "data"))
    before = fresh.arrays("test")["text"].copy()
    fresh.restore(tmp_path)
    assert fresh.vocab.itos == ds.vocab.itos
    np.testing.assert_array_equal(fresh.arrays("test")["text"], before)
    ds.vocab.itos = ds.vocab.itos[:-1]
    ds.save(tmp_path)
    with pytest.raises(DataError, match=f"vocab.json: the saved vocabulary has {len(fresh.vocab) - 1} ids"):
        fresh.restore(tmp_path)
    with pytest.raises(DataError, match="not found"):
        fresh.restore(tmp_path / "elsewhere")


@pytest.mark.parametrize("content, message", [
    ("ham\tfine\nspam no tab here\n", r"line 2: expected `label<TAB>text`, found no tab"),
    ("ham\tfine\nham\tok\nSPAM\tshouting\n", r"line 3: label 'SPAM' is neither 'ham' nor 'spam'"),
    ("ham\tfine\nham\tcaf\xe9\n".encode("latin-1"), r"line 2: not UTF-8 \(byte 0xe9\)"),
    ("\n\n", r"holds no messages"),
])
def test_malformed_lines_name_file_and_line(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(DataError, match=f"{path}.*{message}"):
        SmsSpamDataset(root=str(tmp_path))


def test_settings_and_location(tmp_path):
    with pytest.raises(ConfigError) as e:
        SmsSpamDataset(root=str(tmp_path))
    assert e.value.key == "root" and "no 'sms_spam' folder" in str(e.value)
    _small(tmp_path)
    for kwargs, key in (({"test_fraction": 0.0}, "test_fraction"), ({"max_len": 0}, "max_len"),
                        ({"max_vocab": 2}, "max_vocab"), ({"min_count": 0}, "min_count")):
        with pytest.raises(ConfigError) as e:
            SmsSpamDataset(root=str(tmp_path), **kwargs)
        assert e.value.key == key


def test_assembles_from_a_config(tmp_path):
    from fusionjax.assembly import assemble

    _small(tmp_path)
    a = assemble({
        "model": {"encoders": {"text": {"type": "lstm_text", "embed_dim": 8, "hidden": 8}},
                  "fusion": {"type": "concat"}, "head": {"type": "classification"}},
        "data": {"type": "sms_spam", "root": str(tmp_path), "max_len": 8},
        "train": {"batch_size": 8},
    })
    assert a.data_part.spec.qualified_name == "datasets/sms_spam"
    assert a.encoders["text"].kwargs["vocab_size"] == len(a.dataset.vocab)
    assert a.head.kwargs["num_classes"] == 2
