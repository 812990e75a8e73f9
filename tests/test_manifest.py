"""The `manifest` data set on generated files: PNG/JPEG images, WAV audio, text (inline
and files), CSV and JSONL manifests; errors named by file and row; training from a config."""

from __future__ import annotations

import csv
import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from fusionjax.errors import ConfigError, DataError
from fusionjax_plugins.datasets.manifest import ManifestDataset

LEVELS = {"low": 0, "mid": 1, "high": 2}  # what each label means in the generated files
KEYWORDS = {"low": "pebble", "mid": "stone", "high": "boulder"}
NOTES = {"low": "quiet", "mid": "medium", "high": "loud"}
FILLER = "the a some big small red blue old new".split()
MODS = {"image": "image", "audio": "audio", "caption": "text", "note": "text_file"}
KW = {"modalities": MODS, "image_size": (8, 8), "sample_rate": 8000, "num_samples": 1024, "max_len": 6}


def _write_png(path: Path, level: int, rng, jpeg: bool = False) -> None:
    from PIL import Image

    pixels = np.clip(40 + 80 * level + rng.normal(0, 10, (12, 12)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "L").save(path, **({"quality": 95} if jpeg else {}))


def _write_wav(path: Path, level: int, rng, *, channels: int = 1) -> None:
    t = np.arange(2400) / 16000
    x = 0.5 * np.sin(2 * np.pi * (300 + 400 * level) * t + rng.uniform(0, 6.3))
    x = x + 0.05 * rng.standard_normal(len(t))
    ints = (np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.repeat(ints, channels).tobytes())


def make_records(folder: Path, n: int, seed: int = 0) -> list[dict]:
    """``n`` examples whose label every modality carries; files under ``folder``."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "audio", "notes"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    records = []
    for k in range(n):
        label = list(LEVELS)[k % 3]
        level = LEVELS[label]
        image = f"images/i{k}.{'jpg' if k % 4 == 3 else 'png'}"
        _write_png(folder / image, level, rng, jpeg=image.endswith("jpg"))
        _write_wav(folder / f"audio/a{k}.wav", level, rng, channels=2 if k % 5 == 0 else 1)
        words = list(rng.choice(FILLER, 3))
        words.insert(int(rng.integers(0, 4)), KEYWORDS[label])
        (folder / f"notes/n{k}.txt").write_text(f"café n{k}, {NOTES[label]}", encoding="utf-8")
        records.append({"image": image, "audio": f"audio/a{k}.wav",
                        "caption": f"w{k} " + ", ".join(words), "note": f"notes/n{k}.txt", "label": label})
    return records


def write_csv(path: Path, records: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("manifest")
    records = make_records(folder, 60)
    write_csv(folder / "data.csv", records)
    write_jsonl(folder / "data.jsonl", records)
    splits = ["test" if k % 4 == 0 else "train" for k in range(60)]
    write_csv(folder / "split.csv", [{**r, "part": s} for r, s in zip(records, splits)])
    return folder


@pytest.fixture(scope="module")
def ds(folder) -> ManifestDataset:
    return ManifestDataset(path=str(folder / "data.csv"), **KW)


def test_spec_shapes_and_labels(ds):
    assert ds.label_names == ("high", "low", "mid") and ds.num_classes == 3  # sorted
    assert ds.modalities == ("image", "audio", "caption", "note")
    assert ds.spec["image"].shape == (8, 8, 1) and ds.spec["audio"].shape == (1024,)
    assert ds.spec["audio"].metadata == {"sample_rate": 8000}
    assert ds.spec["caption"].metadata == {"vocab_size": len(ds.vocab)}
    assert ds.spec["note"].metadata == {"vocab_size": len(ds.vocab)}  # one shared vocabulary
    assert ds.size("train") == 48 and ds.size("test") == 12
    batches = list(ds.batches("train", 16, seed=0, shuffle=True, drop_remainder=False))
    assert [len(b["label"]) for b in batches] == [16, 16, 16]
    b = batches[0]
    assert set(b) == {"image", "audio", "caption", "note", "label"}
    for key, (shape, dtype) in {"image": ((16, 8, 8, 1), np.float32), "audio": ((16, 1024), np.float32),
                                "caption": ((16, 6), np.int32), "note": ((16, 6), np.int32),
                                "label": ((16,), np.int32)}.items():
        assert b[key].shape == shape and b[key].dtype == dtype, key
    # the label ids follow the files: image brightness grows with the level
    data = ds.arrays("train")
    names = np.array(ds.label_names)[data["label"]]
    brightness = data["image"].mean(axis=(1, 2, 3))
    for a, b_ in (("low", "mid"), ("mid", "high")):
        assert brightness[names == a].max() < brightness[names == b_].min()
    with pytest.raises(ConfigError, match="has no split 'valid'") as e:
        ds.size("valid")
    assert "its splits are: train, test" in str(e.value)


def test_batches_shuffle_and_remainder(ds):
    one = list(ds.batches("test", 5, seed=3, shuffle=True, drop_remainder=True))
    two = list(ds.batches("test", 5, seed=3, shuffle=True, drop_remainder=True))
    assert len(one) == 2
    for x, y in zip(one, two):
        np.testing.assert_array_equal(x["caption"], y["caption"])
    plain = next(ds.batches("test", 12, seed=0, shuffle=False, drop_remainder=False))
    np.testing.assert_array_equal(plain["label"], ds.arrays("test")["label"])


def test_split_disjoint_stratified_reproducible(folder, ds):
    train, test = ds.lines("train"), ds.lines("test")
    assert not set(train) & set(test)
    assert sorted(train + test) == list(range(2, 62))  # CSV: the header is line 1
    assert np.bincount(ds.arrays("test")["label"]).tolist() == [4, 4, 4]  # stratified
    again = ManifestDataset(path=str(folder / "data.csv"), **KW)
    assert again.lines("test") == test
    other = ManifestDataset(path=str(folder / "data.csv"), seed=1, **KW)
    assert other.lines("test") != test
    quarter = ManifestDataset(path=str(folder / "data.csv"), test_fraction=0.25, **KW)
    assert quarter.size("test") == 15


def test_split_column(folder):
    ds = ManifestDataset(path=str(folder / "split.csv"), split_column="part", **KW)
    assert ds.lines("test") == [k + 2 for k in range(60) if k % 4 == 0]
    assert ds.size("train") == 45
    with pytest.raises(ConfigError, match="also the label") as e:
        ManifestDataset(path=str(folder / "split.csv"), split_column="label", **KW)
    assert e.value.key == "split_column"


def test_jsonl_equals_csv(folder, ds):
    js = ManifestDataset(path=str(folder / "data.jsonl"), **KW)
    assert js.lines("test") == [n - 1 for n in ds.lines("test")]  # JSONL has no header line
    for split in ("train", "test"):
        a, b = ds.arrays(split), js.arrays(split)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_vocabulary_from_train_only(ds):
    for split, known in (("train", True), ("test", False)):
        for line in ds.lines(split):
            k = line - 2
            assert (f"w{k}" in ds.vocab.stoi) is known, (split, k)  # the caption's unique word
            assert (f"n{k}" in ds.vocab.stoi) is known, (split, k)  # the note's
    assert "café" in ds.vocab.stoi and "boulder" in ds.vocab.stoi
    limited = ManifestDataset(path=str(ds.path), **{**KW, "max_vocab": 10})
    assert len(limited.vocab) == 10 and limited.spec["caption"].metadata["vocab_size"] == 10


def _records(folder: Path) -> list[dict]:
    """The rows of ``data.csv``, as written."""
    with open(folder / "data.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_encode_equals_the_batch_row(folder, ds):
    data, records = ds.arrays("test"), _records(folder)
    for row, line in enumerate(ds.lines("test")[:4]):
        record = records[line - 2]
        for m in ("image", "audio", "note"):
            np.testing.assert_array_equal(ds.encode(m, str(folder / record[m])), data[m][row], err_msg=m)
        np.testing.assert_array_equal(ds.encode("caption", record["caption"]), data["caption"][row])
    with pytest.raises(DataError, match="no modality 'captoin' \\(did you mean 'caption'"):
        ds.encode("captoin", "x")
    with pytest.raises(DataError, match="nope.png: image file not found"):
        ds.encode("image", str(folder / "nope.png"))
    with pytest.raises(DataError, match="nope.txt: text file not found"):
        ds.encode("note", str(folder / "nope.txt"))


def test_image_settings(folder):
    ds = ManifestDataset(path=str(folder / "data.csv"), modalities={"image": "image"},
                         image_size=(4, 6), image_channels=3, image_mean=0.5, image_std=0.25)
    x = ds.arrays("test")["image"]
    assert x.shape == (12, 4, 6, 3)
    raw = ManifestDataset(path=str(folder / "data.csv"), modalities={"image": "image"},
                          image_size=(4, 6), image_channels=3).arrays("test")["image"]
    np.testing.assert_allclose(x, (raw - 0.5) / 0.25, rtol=1e-6)


def test_save_restore(folder, ds, tmp_path):
    ds.save(tmp_path)
    assert json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))["tokens"] == ds.vocab.itos[2:]
    fresh = ManifestDataset(path=str(folder / "data.csv"), **KW)
    fresh.arrays("test")
    fresh.restore(tmp_path)
    assert fresh.vocab.itos == ds.vocab.itos
    # a restored vocabulary replaces the one built here, also for already encoded splits
    (tmp_path / "vocab.json").write_text(json.dumps({"tokens": ds.vocab.itos[2:][::-1]}))
    fresh.restore(tmp_path)
    assert not np.array_equal(fresh.arrays("test")["caption"], ds.arrays("test")["caption"])
    first = _records(folder)[fresh.lines("test")[0] - 2]["caption"]
    np.testing.assert_array_equal(fresh.arrays("test")["caption"][0], fresh.encode("caption", first))
    (tmp_path / "vocab.json").write_text(json.dumps({"tokens": ["just", "three", "words"]}))
    with pytest.raises(DataError, match="vocab.json: the saved vocabulary has 5 ids, but this data set's "
                                        f"vocab_size is {len(ds.vocab)}"):
        fresh.restore(tmp_path)
    with pytest.raises(DataError, match="not found"):
        fresh.restore(tmp_path / "elsewhere")
    no_text = ManifestDataset(path=str(folder / "data.csv"), modalities={"image": "image"})
    no_text.save(tmp_path / "empty")  # nothing to save, nothing written, no error
    assert not (tmp_path / "empty").exists()
    no_text.restore(tmp_path / "empty")


# -- errors -------------------------------------------------------------------------------


def _float_wav(path: Path) -> None:
    samples = np.zeros(64, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(samples)) + samples)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _break(case: str, folder: Path, record: dict) -> tuple[str, str, bool]:
    """Make ``record`` bad; returns (its column, the bad file's name, found when constructed)."""
    if case == "missing file":
        record["image"] = "images/nope.png"
        return "image", "nope.png: file not found", True
    if case == "unreadable image":
        (folder / "images/bad.png").write_text("not an image")
        record["image"] = "images/bad.png"
        return "image", "bad.png: not a readable image", False
    if case == "truncated wav":
        data = (folder / record["audio"]).read_bytes()
        (folder / "audio/cut.wav").write_bytes(data[:-100])
        record["audio"] = "audio/cut.wav"
        return "audio", "cut.wav: truncated WAV", False
    if case == "float wav":
        _float_wav(folder / "audio/float.wav")
        record["audio"] = "audio/float.wav"
        return "audio", "float.wav: not a PCM WAV file", False
    if case == "non-utf8 text":
        (folder / "notes/latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
        record["note"] = "notes/latin.txt"
        return "note", "latin.txt: not UTF-8 text (byte 0xe9 at offset 3)", True
    assert case == "label outside"
    record["label"] = "huge"
    return "label", "label 'huge' is not in the label set ('high', 'low', 'mid')", True


CASES = ["missing file", "unreadable image", "truncated wav", "float wav", "non-utf8 text",
         "label outside"]


def _read_all(ds: ManifestDataset) -> None:
    for split in ("train", "test"):
        ds.arrays(split)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("case", CASES)
def test_bad_row_raises_naming_file_row_and_column(tmp_path, case, fmt):
    records = make_records(tmp_path, 10)
    column, message, eager = _break(case, tmp_path, records[3])
    manifest = (write_csv if fmt == "csv" else write_jsonl)(tmp_path / f"m.{fmt}", records)
    line = 5 if fmt == "csv" else 4
    settings = {**KW, "labels": ("high", "low", "mid"), "test_fraction": 0.5}
    expected = f"{manifest}, line {line}: column '{column}': "
    with pytest.raises(DataError) as e:
        ds = ManifestDataset(path=str(manifest), **settings)
        assert not eager, "should have been found by the constructor"
        _read_all(ds)
    assert expected in str(e.value) and message in str(e.value), str(e.value)
    assert 'on_error = "skip"' in str(e.value)

    ds = ManifestDataset(path=str(manifest), on_error="skip", **settings)
    _read_all(ds)
    assert len(ds.problems) == 1, ds.problems
    assert ds.problems[0].startswith(expected) and message in ds.problems[0]
    assert sorted(ds.lines("train") + ds.lines("test")) == [n for n in range(line - 3, line + 7)
                                                          if n != line]
    assert ds.size("train") + ds.size("test") == 9


def test_many_bad_rows_are_counted(tmp_path):
    records = make_records(tmp_path, 12)
    for r in records[:8]:
        r["audio"] = "audio/gone.wav"
    manifest = write_csv(tmp_path / "m.csv", records)
    with pytest.raises(DataError, match=r"(?s)line 2: column 'audio'.*line 6: .*\(and 3 more bad rows\)"):
        ManifestDataset(path=str(manifest), **KW)
    ds = ManifestDataset(path=str(manifest), on_error="skip", **KW)
    assert [p.split(": ")[0] for p in ds.problems] == [f"{manifest}, line {n}" for n in range(2, 10)]
    assert ds.size("train") + ds.size("test") == 4


def test_malformed_manifests(tmp_path):
    records = make_records(tmp_path, 9)
    m = write_csv(tmp_path / "m.csv", records)
    text = m.read_text().splitlines()
    text[3] += ",extra"
    m.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"m.csv, line 4: has 6 fields, the header has 5"):
        ManifestDataset(path=str(m), **KW)
    j = write_jsonl(tmp_path / "m.jsonl", records)
    lines = j.read_text().splitlines()
    lines[2] = lines[2][:-1]
    lines[5] = "[1, 2]"
    j.write_text("\n".join(lines) + "\n\n")
    with pytest.raises(DataError, match=r"(?s)m.jsonl, line 3: not valid JSON.*line 6: not a JSON object"):
        ManifestDataset(path=str(j), **KW)
    skipped = ManifestDataset(path=str(j), on_error="skip", **KW)
    assert len(skipped.problems) == 2 and skipped.size("train") + skipped.size("test") == 7
    del records[4]["caption"]
    records[5]["label"] = ""
    write_jsonl(j, records)
    with pytest.raises(DataError, match=r"(?s)line 5: column 'caption': no text.*line 6: column 'label': "
                                        "no value"):
        ManifestDataset(path=str(j), **KW)
    (tmp_path / "cols.csv").write_text("picture,label\na.png,x\n")
    with pytest.raises(DataError, match=r"cols.csv: no column 'image'; the header \(line 1\) has: "
                                        "'picture', 'label'"):
        ManifestDataset(path=str(tmp_path / "cols.csv"), modalities={"image": "image"})
    (tmp_path / "latin.csv").write_bytes("caption,label\nok,a\ncaf\xe9,b\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv, line 3: not UTF-8"):
        ManifestDataset(path=str(tmp_path / "latin.csv"), modalities={"caption": "text"})
    (tmp_path / "one.csv").write_text("caption,label\nx,a\ny,a\nz,a\n")
    with pytest.raises(DataError, match="only the label 'a'"):
        ManifestDataset(path=str(tmp_path / "one.csv"), modalities={"caption": "text"})
    (tmp_path / "nosplit.csv").write_text("caption,label,part\nx,a,test\ny,b,valid\n")
    with pytest.raises(DataError, match="no row has 'part' = 'train'"):
        ManifestDataset(path=str(tmp_path / "nosplit.csv"), modalities={"caption": "text"},
                        split_column="part")


def test_numeric_labels_sort_as_numbers(tmp_path):
    rows = "".join(f"t{k},{k % 11}\n" for k in range(44))
    (tmp_path / "n.csv").write_text("caption,label\n" + rows)
    ds = ManifestDataset(path=str(tmp_path / "n.csv"), modalities={"caption": "text"})
    assert ds.label_names == tuple(str(k) for k in range(11))
    write_jsonl(tmp_path / "n.jsonl", [{"caption": "x", "label": k % 3} for k in range(9)])
    js = ManifestDataset(path=str(tmp_path / "n.jsonl"), modalities={"caption": "text"})
    assert js.label_names == ("0", "1", "2")


@pytest.mark.parametrize("settings, key", [
    ({"path": "nowhere.csv"}, "path"),
    ({"path": "data.txt"}, "path"),
    ({"modalities": {}}, "modalities"),
    ({"modalities": {"image": "picture"}}, "modalities.image"),
    ({"modalities": {"label": "text"}}, "modalities"),
    ({"labels": ("a", "a")}, "labels"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"image_size": (0, 4)}, "image_size"),
    ({"image_channels": 2}, "image_channels"),
    ({"image_std": 0.0}, "image_std"),
    ({"num_samples": 0}, "num_samples"),
    ({"max_vocab": 2}, "max_vocab"),
    ({"on_error": "ignore"}, "on_error"),
])
def test_bad_settings_are_config_errors(folder, settings, key):
    """Bound as a config section is (types and Literal choices checked there, once), then
    built (the data set's own checks, keyed relative to its section)."""
    from fusionjax.config.validation import bind

    kwargs = {"path": str(folder / "data.csv"), **KW, **settings}
    with pytest.raises(ConfigError) as e:
        ManifestDataset(**bind(ManifestDataset, kwargs, "data", owner="datasets/manifest"))
    assert e.value.key in (key, f"data.{key}")


def test_config_check_names_a_missing_file(tmp_path):
    records = make_records(tmp_path, 9)
    records[6]["audio"] = "audio/lost.wav"
    manifest = write_csv(tmp_path / "m.csv", records)
    config = _config(manifest)
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    result = run_cli("config", "check", str(tmp_path / "cfg.json"))
    assert result.returncode == 1, result.stderr
    assert f"{manifest}, line 8: column 'audio': {tmp_path / 'audio' / 'lost.wav'}: file not found" \
        in result.stderr, result.stderr


def _config(manifest: Path, **train) -> dict:
    return {
        "model": {
            "encoders": {
                "image": {"type": "cnn_image", "channels": [8], "dense": 16},
                "audio": {"type": "spectrogram_audio", "n_fft": 128, "hop_length": 64, "n_mels": 16,
                          "channels": [8], "dense": 16},
                "caption": {"type": "lstm_text", "embed_dim": 8, "hidden": 16},
            },
            "fusion": {"type": "concat"},
            "head": {"type": "classification", "hidden": [16]},
        },
        "data": {"type": "manifest", "path": str(manifest),
                 "modalities": {"image": "image", "audio": "audio", "caption": "text"},
                 "image_size": [8, 8], "sample_rate": 8000, "num_samples": 1024, "max_len": 6},
        "train": {"steps": 40, "batch_size": 16, "log_every": 20, "seed": 0,
                  "optimizer": {"name": "adam", "learning_rate": 3e-3}, **train},
    }


def test_assemble_and_train(folder, tmp_path):
    from fusionjax.assembly import assemble
    from fusionjax.training.loop import train

    a = assemble(_config(folder / "data.csv"))
    assert a.encoders["caption"].kwargs["vocab_size"] == len(a.dataset.vocab)
    assert a.encoders["audio"].kwargs["sample_rate"] == 8000
    assert a.head.kwargs["num_classes"] == 3
    assert a.resolved_config()["data"]["modalities"] == {"image": "image", "audio": "audio",
                                                         "caption": "text"}
    result = train(a, tmp_path / "run", log=lambda s: None)
    assert result.eval_metrics["accuracy"] >= 0.75, result.eval_metrics  # chance: 1/3
