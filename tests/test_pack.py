"""Packing (`fusionjax pack`, the `packed` data set): the packed examples are the source's,
bit for bit; training from them is the same run, without the original files; damaged
packed data is named by file (and record); a pack never overwrites what it must not."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fusionjax import __version__, testing
from fusionjax.cli import main
from fusionjax.data import packing
from fusionjax.data.locate import shipped_root
from fusionjax.errors import ConfigError, DataError
from fusionjax_plugins.datasets.manifest import ManifestDataset
from fusionjax_plugins.datasets.packed import PackedDataset

QUIET = {"log": lambda line: None}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[dict, Path, str]:
    """The shipped sample manifest, copied with its recordings (so that a test may take them
    away), as a ``decode = "per_read"`` [data] section; packed by `fusionjax pack`, which
    printed the third value."""
    tmp = tmp_path_factory.mktemp("pack")
    manifest = shipped_root() / "samples" / "spoken_digits.csv"
    (tmp / "samples").mkdir()
    (tmp / "fsdd" / "recordings").mkdir(parents=True)
    shutil.copy(manifest, tmp / "samples")
    for line in manifest.read_text().splitlines()[1:]:  # ../fsdd/recordings/<name>.wav,text,label
        shutil.copy(manifest.parent / line.split(",")[0], tmp / "fsdd" / "recordings")
    section = {"type": "manifest", **ManifestDataset.test_settings, "decode": "per_read",
               "path": str(tmp / "samples" / "spoken_digits.csv")}
    config = tmp / "data.json"
    config.write_text(json.dumps({"data": {**section, "decode": "once"}}))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["pack", str(config), str(tmp / "packed"), "data.decode=per_read"]) == 0
    return section, tmp / "packed", printed.getvalue()


def _rows(source) -> list:
    return [source[i] for i in range(len(source))]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (a[k].dtype, a[k].shape, a[k].tobytes()) == (b[k].dtype, b[k].shape, b[k].tobytes()) for k in a)


def test_packed_examples_are_the_sources_bit_for_bit(sample):
    section, out, printed = sample
    original, resolved = packing.build_dataset(section)
    packed = PackedDataset(path=str(out))
    assert packed.splits == original.splits == ("train", "test")
    for split in original.splits:
        want, got = _rows(original.source(split, seed=0)), _rows(packed.source(split, seed=7))
        assert len(got) == len(want) == packed.size(split)
        assert all(_same(a, b) for a, b in zip(want, got))
    assert packed.spec == original.spec
    assert (packed.num_classes, packed.label_names) == (original.num_classes, original.label_names)

    meta = json.loads((out / "packed.json").read_text())
    assert (meta["format"], meta["version"], meta["fusionjax"]) == ("fusionjax.packed", 1, __version__)
    assert meta["data"] == json.loads(json.dumps(resolved))  # the source's type and parameters
    assert meta["data"]["type"] == "datasets/manifest" and meta["data"]["decode"] == "per_read"
    assert {s: e["examples"] for s, e in meta["splits"].items()} == {"train": 27, "test": 9}
    assert sorted(p.name for p in out.iterdir()) == ["packed.json", "test.array_record",
                                                     "train.array_record", "vocab.json"]
    assert meta["saved"] == ["vocab.json"]  # what the source's save wrote
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary left
    for line in ("train: 27 examples, ", "test: 9 examples, ",
                 f'[data]\ntype = "packed"\npath = {json.dumps(str(out))}'):
        assert line in printed, printed

    # a new input is read by the source data set, rebuilt, exactly as it reads it
    wav = next((out.parent / "fsdd" / "recordings").iterdir())
    np.testing.assert_array_equal(packed.encode("audio", str(wav)), original.encode("audio", str(wav)))
    np.testing.assert_array_equal(packed.encode("text", "the word two"),
                                  original.encode("text", "the word two"))
    testing.check_dataset(PackedDataset, {"path": str(out)})


def test_the_shipped_packed_sample_is_what_pack_writes(tmp_path):
    """The sample the `packed` data set declares as its test_settings holds what packing its
    recorded source data set gives today (the format has not drifted from it)."""
    shipped = PackedDataset(**PackedDataset.test_settings)
    original, resolved = packing.build_dataset(dict(shipped.meta["data"]))
    packing.pack(original, tmp_path / "again", config=resolved, **QUIET)
    again = PackedDataset(path=str(tmp_path / "again"))
    assert again.meta["spec"] == shipped.meta["spec"] and again.meta["splits"] == shipped.meta["splits"]
    for split in shipped.splits:
        assert all(_same(a, b) for a, b in zip(_rows(shipped.source(split, seed=0)),
                                                _rows(again.source(split, seed=0))))


def test_training_from_packed_data_is_the_same_run_without_the_original_files(sample, tmp_path):
    from fusionjax.assembly import assemble
    from fusionjax.rundir import RunDir
    from fusionjax.training.loop import train

    section, out, _ = sample
    audio = {"type": "spectrogram_audio", "n_fft": 64, "hop_length": 32, "n_mels": 16,
             "channels": [4], "dense": 8}

    def metrics(data: dict, run: Path) -> list[tuple]:
        train(assemble({"data": data, "train": {"steps": 6, "batch_size": 9, "log_every": 1, "seed": 3},
                        "model": {"encoders": {"audio": audio}, "fusion": {"type": "concat"},
                                  "head": {"type": "classification"}}}), run, log=lambda s: None)
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [(x["step"], x["split"], x["loss"], x["accuracy"]) for x in lines]

    original = metrics(section, tmp_path / "original")
    recordings = out.parent / "fsdd"
    recordings.rename(out.parent / "gone")  # training from packed data reads none of them
    try:
        packed = metrics({"type": "packed", "path": str(out)}, tmp_path / "packed")
        assert len(packed) == 6 and packed == original  # train steps 2..6, then the test split
        assert (tmp_path / "packed" / "vocab.json").read_bytes() == (out / "vocab.json").read_bytes()
        run = RunDir(tmp_path / "packed").assemble()  # the finished run loads without them too
        with pytest.raises(DataError, match=r"packed\.json: the data set it was packed from "
                                            r"\(datasets/manifest\).*cannot be rebuilt.*file not found"):
            run.dataset.encode("text", "the word one")  # but a new input needs the source data set
    finally:
        (out.parent / "gone").rename(recordings)


def _record(header: list, payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return packing.MAGIC + len(head).to_bytes(4, "little") + head + payload


def test_damaged_packed_data_is_named_by_file_and_record(sample, tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    _, out, _ = sample
    with pytest.raises(ConfigError, match=r"path: '.*nowhere' does not exist"):
        PackedDataset(path=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty' holds no packed\.json"):
        PackedDataset(path=str(tmp_path / "empty"))
    records = _rows(PackedDataset(path=str(out)).source("train", seed=0)._records)

    def damaged(name: str, *, meta=None, train=None) -> tuple[Path, str]:
        folder = tmp_path / name
        shutil.copytree(out, folder)
        if meta is not None:
            changed = meta(json.loads((out / "packed.json").read_text()))
            (folder / "packed.json").write_text(json.dumps(changed))
        if train is not None:
            writer = ArrayRecordWriter(str(folder / "train.array_record"), "group_size:1")
            for record in train:
                writer.write(record)
            writer.close()
        return folder, re.escape(str(folder))

    folder, named = damaged("v99", meta=lambda m: {**m, "version": 99})
    with pytest.raises(DataError, match=rf"{named}/packed\.json: packed data of format version 99 .*"
                                        rf"reads version 1\n  hint: pack the data again"):
        PackedDataset(path=str(folder))

    folder, named = damaged("fewer", train=records[:-1])
    with pytest.raises(DataError, match=rf"{named}/train\.array_record: holds 26 records, but "
                                        rf"packed\.json says 27"):
        PackedDataset(path=str(folder))

    folder, named = damaged("garbage")
    (folder / "train.array_record").write_bytes(bytes(70_000))
    with pytest.raises(DataError, match=rf"{named}/train\.array_record: not a readable ArrayRecord file"):
        PackedDataset(path=str(folder))

    label = ["label", "<i4", []]
    folder, named = damaged("bad_records", train=[
        records[4][:-10] if i == 4 else _record([label, label], b"") if i == 5
        else _record([["label", "|O8", []]], bytes(8)) if i == 6 else r for i, r in enumerate(records)])
    ds = PackedDataset(path=str(folder))  # the counts agree: a bad record is found when it is read
    source, at = ds.source("train", seed=0), rf"{named}/train\.array_record, record"
    with pytest.raises(DataError, match=rf"{at} 4: cut short \([\d,]+ bytes; its header describes"):
        source[4]
    with pytest.raises(DataError, match=rf"{at} 5: holds 'label' twice"):
        source[5]
    with pytest.raises(DataError, match=rf"{at} 6: holds 'label' as '\|O8': not a bool or numeric"):
        source[6]  # never an object array (nor a pickle)
    assert _same(source[3], PackedDataset(path=str(out)).source("train", seed=0)[3])
    with pytest.raises(DataError, match=rf"{at} 4: cut short"):  # and so through the pipeline
        list(ds.batches("train", 9, seed=0, shuffle=False, drop_remainder=False))


def test_pack_never_overwrites_what_it_must_not_and_leaves_nothing_when_interrupted(
        sample, tmp_path, capsys):
    section, out, _ = sample
    config = tmp_path / "data.json"
    config.write_text(json.dumps({"data": section}))
    assert main(["pack", str(config), str(out)]) == 2
    assert f"'{out}' already holds packed data" in capsys.readouterr().err

    shipped = PackedDataset(**PackedDataset.test_settings)
    synthetic, resolved = packing.build_dataset(dict(shipped.meta["data"]))
    target = tmp_path / "target"
    packing.pack(synthetic, target, config=resolved, **QUIET)
    with pytest.raises(ConfigError, match="already holds packed data"):
        packing.pack(synthetic, target, config=resolved, **QUIET)
    meta = packing.pack(synthetic, target, splits=["test"], config=resolved, overwrite=True, **QUIET)
    assert list(meta["splits"]) == ["train", "test"]  # train is always packed
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files, not packed data: it is never overwritten"):
        packing.pack(synthetic, tmp_path / "other", config=resolved, overwrite=True, **QUIET)

    class Interrupted(type(synthetic)):
        def source(self, split, *, seed):
            if split == "test":  # after the train split is written
                raise KeyboardInterrupt
            return super().source(split, seed=seed)

    interrupted = Interrupted(**{k: v for k, v in resolved.items() if k != "type"})
    before = sorted(p.name for p in tmp_path.iterdir())
    for into in (tmp_path / "new", target):
        with pytest.raises(KeyboardInterrupt):
            packing.pack(interrupted, into, config=resolved, overwrite=True, **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-packed, no temporary
    assert PackedDataset(path=str(target)).size("test") == 6  # the packed data it did not replace
