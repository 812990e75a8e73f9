"""A generated three-modality classification data set (NumPy only).

Each example's label ``y`` is written into every modality named in
``informative``, under noise:

* image ``[H, W, 1]``: Gaussian noise plus a bright square at one of
  ``num_classes`` positions on a grid, chosen by ``y``;
* text ``[seq_len]`` int32: random words (ids ``num_classes + 1 ..``), right-padded
  with 0, with the keyword ``1 + y`` at a random position of each row;
* audio ``[num_samples]`` float32 at ``sample_rate``: a sine at
  ``200 + 300 y`` Hz (random phase) in Gaussian noise.

A modality not in ``informative`` carries the same kind of signal for a random
label, so it is pure distraction.  Generation is lazy (``config check`` costs
nothing) and deterministic in ``seed``.
"""

from __future__ import annotations

import math

import numpy as np

from fusionjax.data.sources import ArraySource
from fusionjax.errors import ConfigError
from fusionjax.interfaces import LABEL, Batch, Dataset, FieldSpec

MODALITIES = ("image", "text", "audio")


class SyntheticDataset(Dataset):
    """A generated classification data set (NumPy only, lazily generated, deterministic in
    ``seed``) with the modalities ``image`` (``[image_size, image_size, 1]`` float32),
    ``text`` (``[seq_len]`` int32, 0-padded) and ``audio`` (``[num_samples]`` float32).

    Every modality in ``informative`` carries the label under noise: the image has a
    bright square at a label-dependent grid position, the text contains the keyword id
    ``1 + label``, the audio is a sine at ``200 + 300 * label`` Hz.  A modality not in
    ``informative`` carries the same kind of signal for a random label.  Splits: ``train``
    and ``test``.  Provides ``vocab_size`` (text) and ``sample_rate`` (audio) as encoder
    defaults, and ``num_classes`` as the head's default.  The parameters are checked when
    the data set is constructed, so ``config check`` reports them
    (``data.train_size: must be >= 1, got 0``).

    Parameters:
        modalities: Which modalities the data set provides (each one of ``image``,
            ``text``, ``audio``).
        informative: Which modalities carry the label (each one of ``image``, ``text``,
            ``audio``; an unknown name is reported at ``data.informative``); none: all of
            ``modalities``.
        num_classes: Number of classes; ``2..25`` and at most ``vocab_size - 2``.
        train_size: Examples in the ``train`` split. ``>= 1``.
        test_size: Examples in the ``test`` split. ``>= 1``.
        image_size: Image height and width. ``>= 1``.
        seq_len: Text length in tokens (rows are right-padded with 0 to this length).
            ``>= 1``.
        vocab_size: Text vocabulary size (ids ``0..vocab_size-1``; 0 is padding).
        sample_rate: Audio sample rate (Hz); ``>= 1``, and must exceed
            ``2 * (200 + 300 * (num_classes - 1))``, e.g. 5800 for 10 classes.
        num_samples: Audio samples per example. ``>= 1``.
        noise: Noise scale (Gaussian; standard deviation ``noise`` for images,
            ``0.5 * noise`` for audio).
        seed: Seed of the generated data (independent of ``train.seed``).
    """

    test_settings = {"num_classes": 3, "train_size": 48, "test_size": 24, "image_size": 8, "seq_len": 6,
                         "vocab_size": 20, "num_samples": 400}
    def __init__(
        self,
        *,
        modalities: tuple[str, ...] = MODALITIES,
        informative: tuple[str, ...] | None = None,
        num_classes: int = 10,
        train_size: int = 2048,
        test_size: int = 512,
        image_size: int = 28,
        seq_len: int = 32,
        vocab_size: int = 1000,
        sample_rate: int = 8000,
        num_samples: int = 8000,
        noise: float = 1.0,
        seed: int = 0,
    ):
        for key, names in (("modalities", modalities), ("informative", informative or ())):
            for m in names:
                if m not in MODALITIES:
                    raise ConfigError(f"unknown modality {m!r}; choose from {', '.join(MODALITIES)}",
                                      key=key)
        for key, value in (("train_size", train_size), ("test_size", test_size),
                           ("image_size", image_size), ("seq_len", seq_len),
                           ("num_samples", num_samples), ("sample_rate", sample_rate)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        if not 2 <= num_classes <= min(25, vocab_size - 2):
            raise ConfigError("must be in 2..25 (and below vocab_size - 1)", key="num_classes")
        if 200 + 300 * (num_classes - 1) >= sample_rate / 2:
            raise ConfigError(f"tones up to {200 + 300 * (num_classes - 1)} Hz need a sample_rate "
                              f"above {2 * (200 + 300 * (num_classes - 1))}", key="sample_rate")
        self.modalities_ = tuple(modalities)
        self.informative = tuple(modalities if informative is None else informative)
        self.num_classes = num_classes
        self.sizes = {"train": train_size, "test": test_size}
        self.image_size, self.seq_len, self.vocab_size = image_size, seq_len, vocab_size
        self.sample_rate, self.num_samples, self.noise, self.seed = (
            sample_rate, num_samples, noise, seed)
        spec = {
            "image": FieldSpec((image_size, image_size, 1), "float32"),
            "text": FieldSpec((seq_len,), "int32", {"vocab_size": vocab_size}),
            "audio": FieldSpec((num_samples,), "float32", {"sample_rate": sample_rate}),
        }
        self.spec = {m: spec[m] for m in self.modalities_} | {LABEL: FieldSpec((), "int32")}
        self._cache: dict[str, Batch] = {}

    def size(self, split: str) -> int:
        return self.sizes[self._check_split(split)]

    splits = ("train", "test")

    def _check_split(self, split: str) -> str:
        self.check_split(split)
        return split

    def arrays(self, split: str) -> Batch:
        """The whole split as arrays (generated on first use)."""
        if split not in self._cache:
            n = self.size(split)
            rng = np.random.default_rng([self.seed, list(self.sizes).index(split)])
            labels = rng.integers(0, self.num_classes, n).astype(np.int32)
            out = {LABEL: labels}
            for m in self.modalities_:
                carried = labels if m in self.informative else rng.integers(0, self.num_classes, n)
                out[m] = getattr(self, f"_{m}")(carried, rng)
            self._cache[split] = out
        return self._cache[split]

    def _image(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.image_size
        x = self.noise * rng.standard_normal((len(y), s, s, 1), dtype=np.float32)
        grid = math.ceil(math.sqrt(self.num_classes))
        cell, side = s // grid, max(1, s // (2 * grid))
        for i, label in enumerate(y):
            r, c = divmod(int(label), grid)
            x[i, r * cell:r * cell + side, c * cell:c * cell + side, 0] += 2.0
        return x

    def _text(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, t = len(y), self.seq_len
        ids = rng.integers(self.num_classes + 1, self.vocab_size, (n, t)).astype(np.int32)
        lengths = rng.integers(1, t + 1, n)
        ids[np.arange(t)[None, :] >= lengths[:, None]] = 0
        ids[np.arange(n), rng.integers(0, lengths)] = 1 + y
        return ids

    def _audio(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        t = np.arange(self.num_samples, dtype=np.float32) / self.sample_rate
        freq = (200.0 + 300.0 * y)[:, None]
        phase = rng.uniform(0, 2 * np.pi, (len(y), 1))
        tone = 0.5 * np.sin(2 * np.pi * freq * t[None, :] + phase)
        return (tone + 0.5 * self.noise * rng.standard_normal(tone.shape)).astype(np.float32)

    def source(self, split: str, *, seed: int) -> ArraySource:
        return ArraySource(self.arrays(split))
