"""What the digit data sets share: where the files are, drawing an epoch's examples."""

from __future__ import annotations

import numpy as np

from fusionjax.data.audio import Align, load_audio
from fusionjax.data.image import read_image
from fusionjax.data.locate import data_dir
from fusionjax.errors import ConfigError, DataError
from fusionjax.interfaces import LABEL, Batch, Dataset, FieldSpec
from fusionjax_plugins.datasets import digit_sources as sources

SPLITS = ("train", "test")


class DrawnDigits(Dataset):
    """The digit data sets' examples: drawn from a split's sources (which images, which
    recordings, ...) by :meth:`draw`, made into arrays by :meth:`materialise`.  Train
    examples are re-drawn every epoch, the test examples are one fixed draw; the per-example
    generators make noise independent of the batching.  Subclasses set ``self.seed``."""

    splits = SPLITS
    seed: int

    def draw(self, split: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Index arrays (``{"image": [n], ..., "label": [n]}``) of ``n`` examples of a split."""
        raise NotImplementedError

    def materialise(self, split: str, draws: dict[str, np.ndarray], rows: np.ndarray,
                    rngs: list[np.random.Generator]) -> Batch:
        """Arrays for ``rows`` of ``draws``; ``rngs`` has one generator per row, seeded by
        the example itself."""
        raise NotImplementedError

    def _epoch(self, split: str, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """The draws of one epoch, the permutation it is read in, and its seed.  Train
        examples are re-drawn every epoch (the loop passes a new seed); the test examples
        are one fixed draw, whatever the seed."""
        epoch_seed = seed if split == "train" else 0
        cached = getattr(self, "_last_epoch", None)
        if cached is not None and cached[0] == (split, epoch_seed):
            return cached[1]
        rng = np.random.default_rng([self.seed, SPLITS.index(split), epoch_seed])
        draws = self.draw(split, self.size(split), rng)
        epoch = (draws, rng.permutation(self.size(split)), epoch_seed)
        self._last_epoch = ((split, epoch_seed), epoch)
        return epoch

    def source(self, split: str, *, seed: int) -> DrawnExamples:
        self.check_split(split)
        draws, _, epoch_seed = self._epoch(split, seed)
        return DrawnExamples(self, split, draws, epoch_seed)

    def order(self, split: str, *, seed: int, shuffle: bool) -> np.ndarray:
        return self._epoch(split, seed)[1] if shuffle else np.arange(self.size(split))

    def __getstate__(self):  # a worker process draws its own epochs
        return {k: v for k, v in self.__dict__.items() if k != "_last_epoch"}


class DrawnExamples:
    """One epoch of a digit data set: example ``i`` is made from its draws when read, with
    a generator seeded by the example itself (so its noise never depends on the batching)."""

    def __init__(self, dataset: DrawnDigits, split: str, draws: dict[str, np.ndarray], epoch_seed: int):
        self.dataset, self.split, self.draws, self.epoch_seed = dataset, split, draws, epoch_seed

    def __len__(self) -> int:
        return len(self.draws[LABEL])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.read_many(np.array([index])).items()}

    def read_many(self, indices: np.ndarray) -> Batch:
        d, split = self.dataset, SPLITS.index(self.split)
        rngs = [np.random.default_rng([d.seed, split, self.epoch_seed, int(i)]) for i in indices]
        return d.materialise(self.split, self.draws, np.asarray(indices), rngs)


class DigitsBase(DrawnDigits):
    """Image + audio digit data.  Subclasses implement :meth:`draw`: the examples of
    a split as index arrays (which MNIST image, which recording, ...), from an rng."""

    def __init__(self, *, root: str | None, sample_rate: int, num_samples: int, align: Align,
                 train_size: int | None, test_size: int | None, seed: int):
        for key, value in (("sample_rate", sample_rate), ("num_samples", num_samples)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        self.mnist_dir = data_dir(root, "mnist")
        self.fsdd_dir = data_dir(root, "fsdd")
        self.root = str(self.mnist_dir.parent)
        self.sample_rate, self.num_samples, self.align = sample_rate, num_samples, align
        self.requested = {"train": train_size, "test": test_size}
        self.seed = seed
        self.spec = {
            "image": FieldSpec((28, 28, 1), "float32"),
            "audio": FieldSpec((num_samples,), "float32", {"sample_rate": sample_rate}),
        }
        self.problems = []

    # -- sources -------------------------------------------------------------------------------
    def images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return sources.mnist(self.mnist_dir, split)

    def recordings(self, split: str) -> sources.Recordings:
        return sources.fsdd(self.fsdd_dir, split, self.sample_rate, self.num_samples, self.align)

    def size(self, split: str) -> int:
        self.check_split(split)
        requested = self.requested[split]
        if requested is not None and requested < 1:
            raise ConfigError(f"must be >= 1 (or left out for the whole split), got {requested}",
                              key=f"{split}_size")
        return requested or len(self.images(split)[1])

    def resolved_settings(self) -> dict:
        return {"root": self.root}

    # -- examples ------------------------------------------------------------------------------
    def materialise(self, split: str, draws: dict[str, np.ndarray], rows: np.ndarray,
                    rngs: list[np.random.Generator]) -> Batch:
        """Arrays for ``rows`` of ``draws``; ``rngs`` has one generator per row, seeded by
        the example itself, so noise never depends on how examples are batched."""
        images, _ = self.images(split)
        audio = self.recordings(split).audio
        return {"image": sources.mnist_float(images[draws["image"][rows]]),
                "audio": audio[draws["audio"][rows]],
                LABEL: draws[LABEL][rows]}

    # -- new inputs ----------------------------------------------------------------------------
    def encode(self, modality: str, value: str) -> np.ndarray:
        if modality == "image":
            x = read_image(value, size=(28, 28), channels=1)
            return ((x - sources.MNIST_MEAN) / sources.MNIST_STD).astype(np.float32)
        if modality == "audio":
            return load_audio(value, sample_rate=self.sample_rate, num_samples=self.num_samples,
                              align=self.align)
        raise DataError(f"{type(self).__name__} has no modality {modality!r}")

    def review(self, modality: str, x: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        """Polarity: MNIST's digits are light on a dark background.  A new image whose
        border is brighter than its middle (a dark digit on light paper, a photo of ink)
        is inverted before the model sees it, and the answer says so."""
        if modality != "image":
            return super().review(modality, x)
        raw = x * sources.MNIST_STD + sources.MNIST_MEAN  # back to [0, 1]
        border = np.concatenate([raw[:3].ravel(), raw[-3:].ravel(), raw[:, :3].ravel(), raw[:, -3:].ravel()])
        if border.mean() > 0.5 and border.mean() > raw[7:21, 7:21].mean():
            inverted = ((1.0 - raw) - sources.MNIST_MEAN) / sources.MNIST_STD
            return inverted.astype(np.float32), ("image: a dark digit on a light background; it was "
                                                 "inverted, as the training digits are light on dark")
        return x, None


def pick_per_class(wanted: np.ndarray, by_class: list[np.ndarray],
                   rng: np.random.Generator) -> np.ndarray:
    """For each wanted class, a random index among ``by_class[class]``."""
    out = np.empty(len(wanted), np.int64)
    for c, members in enumerate(by_class):
        where = np.flatnonzero(wanted == c)
        out[where] = rng.choice(members, size=len(where))
    return out

