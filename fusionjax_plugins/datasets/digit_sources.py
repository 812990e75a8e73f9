"""MNIST and the Free Spoken Digit Dataset (FSDD), read once per process and cached.

FSDD's standard split decides the audio splits: recordings with index 0-4 are
test, 5-49 train.  MNIST's own train/test files decide the image splits.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionjax.data.audio import Align, load_audio
from fusionjax.data.image import read_idx
from fusionjax.errors import DataError

MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training images, in [0, 1]
FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
FSDD_TEST_INDICES = range(5)


@dataclass(frozen=True)
class Recordings:
    audio: np.ndarray  # float32 [N, num_samples]
    labels: np.ndarray  # int32 [N]
    names: tuple[str, ...]

    def by_class(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.labels == d) for d in range(10)]


@functools.lru_cache(maxsize=4)
def mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int32 [N])`` of an MNIST split."""
    images_file, labels_file = (folder / f for f in MNIST_FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_file}: not MNIST images: expected unsigned bytes of shape "
                        f"[N, 28, 28], found {images.dtype} {list(images.shape)}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_file}: not MNIST labels: expected unsigned bytes of shape [N], "
                        f"found {labels.dtype} {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{images_file} holds {len(images)} images but {labels_file} holds "
                        f"{len(labels)} labels; the two files of an MNIST split must agree")
    if len(labels) == 0:
        raise DataError(f"{labels_file}: holds no examples")
    bad = np.flatnonzero(labels > 9)
    if len(bad):
        raise DataError(f"{labels_file}: label {labels[bad[0]]} at index {bad[0]} is not a digit "
                        f"0-9 ({len(bad)} of its {len(labels)} labels are out of range); the file is "
                        "corrupt or not MNIST")
    return images, labels.astype(np.int32)


def mnist_float(images: np.ndarray) -> np.ndarray:
    """uint8 images -> normalised float32 ``[N, 28, 28, 1]``."""
    return ((images.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD)[..., None]


@functools.lru_cache(maxsize=4)
def fsdd(folder: Path, split: str, sample_rate: int, num_samples: int, align: Align) -> Recordings:
    """Every recording of an FSDD split, decoded, at ``sample_rate``, cut to ``num_samples``."""
    files = fsdd_files(folder, split)
    recordings = folder / "recordings"
    # one thread: decoding is Python-bound (the GIL), and threads measured 3x slower
    audio = [load_audio(f, sample_rate=sample_rate, num_samples=num_samples, align=align)
             for f, _, _ in files]
    labels = np.array([d for _, d, _ in files], np.int32)
    missing = sorted(set(range(10)) - set(labels.tolist()))
    if missing:
        raise DataError(f"{recordings}: no {split} recordings of digit(s) {missing}")
    return Recordings(np.stack(audio).astype(np.float32), labels, tuple(p.name for p, _, _ in files))


def fsdd_files(folder: Path, split: str) -> list[tuple[Path, int, str]]:
    """``(path, digit, speaker)`` of every recording of an FSDD split, sorted by file name
    (the split rule above); a DataError when there is no recordings folder or no recording."""
    recordings = folder / "recordings"
    if not recordings.is_dir():
        raise DataError(f"{recordings}: FSDD recordings folder not found")
    files = []
    for path in sorted(recordings.iterdir()):
        m = FSDD_NAME.match(path.name)
        if m and (int(m.group(3)) in FSDD_TEST_INDICES) == (split == "test"):
            files.append((path, int(m.group(1)), m.group(2)))
    if not files:
        raise DataError(f"{recordings}: no {split} recordings named <digit>_<speaker>_<index>.wav")
    return files
