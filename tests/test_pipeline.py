"""The data pipeline (Grain): each example once per epoch, across processes and worker
processes; seeded orders; positions that survive a resume; unreadable files mid-epoch."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fusionjax.data.pipeline import PipelineSettings, TrainBatches, epoch_seed, one_pass
from fusionjax.data.sources import ArraySource
from fusionjax.errors import DataError
from fusionjax.interfaces import LABEL, Dataset, FieldSpec


class Numbered(Dataset):
    """Example ``i`` of the train split is ``{"x": [i, i], "label": i}``."""

    splits = ("train", "test")
    spec = {"x": FieldSpec((2,), "float32"), LABEL: FieldSpec((), "int32")}
    num_classes = 2

    def __init__(self, n: int = 100):
        self.n = n

    def size(self, split):
        return self.n

    def source(self, split, *, seed):
        ids = np.arange(self.n)
        return ArraySource({"x": np.stack([ids, ids], 1).astype(np.float32), LABEL: ids.astype(np.int32)})


def _labels(batches, n_batches):
    return [np.asarray(next(batches)[LABEL]) for _ in range(n_batches)]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_example_once_per_epoch_across_processes_and_workers(workers):
    ds, batch, per_epoch = Numbered(100), 8, 100 // 8  # 12 batches an epoch, 4 examples left out
    steps = 3 * per_epoch
    single = TrainBatches(ds, batch, seed=5, steps=steps)  # in this process
    whole = _labels(single, steps)
    single.close()
    halves = []
    for p in range(2):  # each "process" with its worker processes
        it = TrainBatches(ds, batch, seed=5, steps=steps, process=p, processes=2,
                          settings=PipelineSettings(workers=workers))
        halves.append(_labels(it, steps))
        it.close()
    # each process reads only its rows of every global batch; together, the global batch
    for g in range(steps):
        assert len(halves[0][g]) == len(halves[1][g]) == batch // 2
        np.testing.assert_array_equal(np.concatenate([halves[0][g], halves[1][g]]), whole[g])
    epochs = [np.concatenate(whole[e * per_epoch:(e + 1) * per_epoch]) for e in range(3)]
    for e, seen in enumerate(epochs):
        assert max(Counter(seen.tolist()).values()) == 1  # no example twice in an epoch
        # the epoch's order is the data set's permutation for the epoch's seed
        order = ds.order("train", seed=epoch_seed(5, e), shuffle=True)
        np.testing.assert_array_equal(seen, order[:per_epoch * batch])
    assert not np.array_equal(epochs[0], epochs[1])  # another epoch, another order
    again = TrainBatches(ds, batch, seed=5, steps=steps)
    np.testing.assert_array_equal(np.concatenate(_labels(again, steps)), np.concatenate(whole))
    again.close()


def test_resume_continues_at_the_saved_batch_with_or_without_the_workers_it_was_saved_with():
    ds, steps = Numbered(60), 20
    reference = np.concatenate(_labels(TrainBatches(ds, 8, seed=1, steps=steps), steps))
    for saved_with, resumed_with in [(0, 0), (1, 1), (1, 0)]:
        it = TrainBatches(ds, 8, seed=1, steps=steps, settings=PipelineSettings(workers=saved_with))
        head = _labels(it, 7)
        state = it.state()
        it.close()
        rest = TrainBatches(ds, 8, seed=1, steps=steps, start=7, resume=state,
                            settings=PipelineSettings(workers=resumed_with))
        tail = _labels(rest, steps - 7)
        rest.close()
        np.testing.assert_array_equal(np.concatenate(head + tail), reference)


def test_one_pass_is_the_split_in_order_with_a_short_last_batch():
    ds = Numbered(10)
    sizes = [len(b[LABEL]) for b in one_pass(ds, "test", 4, seed=0, shuffle=False, drop_remainder=False)]
    assert sizes == [4, 4, 2]
    labels = np.concatenate([b[LABEL] for b in ds.batches("test", 3, seed=0, shuffle=False,
                                                          drop_remainder=True)])
    np.testing.assert_array_equal(labels, np.arange(9))


def test_a_file_unreadable_mid_epoch_in_a_worker(tmp_path):
    """Decoding per read, a worker meets a broken WAV: the run stops naming the manifest
    line and the file; with on_error = "absent" that example's audio is absent, with
    "skip" the split's next readable row takes its place and the row is reported."""
    import wave

    from fusionjax_plugins.datasets.manifest import ManifestDataset

    with wave.open(str(tmp_path / "ok.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes((np.sin(np.arange(800) / 3) * 3000).astype("<i2").tobytes())
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    rows = [f"ok.wav,word {i % 2},{i % 2},{'train' if i < 12 else 'test'}" for i in range(16)]
    rows.insert(5, "broken.wav,word 1,1,train")
    (tmp_path / "m.csv").write_text("audio,text,label,split\n" + "\n".join(rows) + "\n")  # broken: line 7
    settings = dict(path=str(tmp_path / "m.csv"), modalities={"audio": "audio", "text": "text"},
                    split_column="split", sample_rate=8000, num_samples=800, decode="per_read")
    it = TrainBatches(ManifestDataset(**settings), 4, seed=0, steps=6, settings=PipelineSettings(workers=1))
    with pytest.raises(DataError) as e:
        list(it)
    it.close()
    assert "m.csv, line 7: column 'audio'" in str(e.value) and "broken.wav" in str(e.value)

    absent = ManifestDataset(**settings, on_error="absent")
    batches = list(one_pass(absent, "train", 4, seed=0, shuffle=False, drop_remainder=False))
    np.testing.assert_array_equal(np.concatenate([b["mask/audio"] for b in batches]),
                                  np.arange(13) != 5)
    skip = ManifestDataset(**settings, on_error="skip")
    batches = list(one_pass(skip, "train", 4, seed=0, shuffle=False, drop_remainder=False))
    assert [len(b[LABEL]) for b in batches] == [4, 4, 4, 1]
    assert len(skip.problems) == 1 and "line 7" in skip.problems[0]


def test_a_batch_read_at_once_equals_its_examples_read_one_by_one():
    """``read_many`` (what the pipeline uses) is the examples of ``source[i]`` stacked,
    bitwise, for the digit sets' per-example noise as for arrays."""
    from fusionjax_plugins.datasets.avdigits import AVDigits

    for ds in (AVDigits(noisy=True, train_size=64), Numbered(20)):
        source = ds.source("train", seed=3)
        indices = np.array([5, 0, 17, 3])
        many = source.read_many(indices)
        for row, i in enumerate(indices):
            one = source[int(i)]
            for k in one:
                np.testing.assert_array_equal(many[k][row], one[k])
