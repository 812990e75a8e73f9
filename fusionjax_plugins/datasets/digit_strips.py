"""``digit_strips``: a few MNIST digits side by side, captioned with the digit string.

Each example is one strip image of ``min_digits..max_digits`` MNIST digits left to
right, with small random gaps and a random left offset; the label is the caption,
e.g. ``"4071"``, as a sequence of character tokens (:mod:`fusionjax.sequences`).
Train strips are made of MNIST's training images only, test strips of its test images.
"""

from __future__ import annotations

import numpy as np

from fusionjax.data.image import read_image
from fusionjax.data.locate import data_dir
from fusionjax.errors import ConfigError, DataError
from fusionjax.interfaces import LABEL, Batch, FieldSpec
from fusionjax.sequences import PAD
from fusionjax_plugins.datasets import digit_sources as sources
from fusionjax_plugins.datasets.digit_speech import DIGIT_IDS, DIGITS
from fusionjax_plugins.datasets.digits_base import DrawnDigits

SIDE = 28  # an MNIST digit is SIDE x SIDE


class DigitStrips(DrawnDigits):
    """Image -> text: each example (``image``, float32 ``[28, width, 1]``, normalised with
    MNIST's mean and standard deviation) is a strip of ``min_digits..max_digits`` random
    MNIST digits side by side, left to right, ``0..max_gap`` pixels apart, from a random left
    offset, on MNIST's black background; ``width = 28 * max_digits + max_gap * (max_digits -
    1)`` (188 by default) holds the longest strip.  The label is the caption, the digit string
    (e.g. ``"4071"``), as int32 ``[max_digits]`` token ids of the vocabulary ``0``-``9``
    (character tokens, ids 2-11; id 0 pads, id 1 is reserved for the end of a sequence); the
    label spec carries the vocabulary, for a sequence head (CTC or a decoder).  No classes.
    An encoder that reads the strip left to right: ``cnn_image`` with ``tokens = "columns"``.

    Splits: ``train`` strips are made of MNIST's training images only and re-drawn every
    epoch, ``test`` strips of its test images only, one fixed draw.  New inputs
    (``predict``): an image file, greyscale, resized to ``28 x width``; a dark strip on
    light paper is inverted, and the answer says so.

    Parameters:
        root: Folder holding ``mnist/``; none: ``$FUSIONJAX_DATA``, else ``examples/data``.
        min_digits: Fewest digits per strip. ``>= 1``.
        max_digits: Most digits per strip, and the label's length. ``>= min_digits``.
        max_gap: Widest gap between two digits (pixels; each gap is ``0..max_gap``). ``>= 0``.
        train_size: Training strips per epoch (digits are drawn with replacement). ``>= 1``.
        test_size: Strips in ``test``. ``>= 1``.
        seed: Seed of the strips. The test draw depends on it alone; the train draw of each
            epoch also on ``train.seed``.
    """

    test_settings = {"train_size": 24, "test_size": 12}
    label_names = None
    num_classes = None

    def __init__(
        self,
        *,
        root: str | None = None,
        min_digits: int = 4,
        max_digits: int = 6,
        max_gap: int = 4,
        train_size: int = 10000,
        test_size: int = 2000,
        seed: int = 0,
    ):
        for key, value in (("min_digits", min_digits), ("train_size", train_size),
                           ("test_size", test_size)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        if max_digits < min_digits:
            raise ConfigError(f"must be >= min_digits ({min_digits}), got {max_digits}",
                              key="max_digits")
        if max_gap < 0:
            raise ConfigError(f"must be >= 0, got {max_gap}", key="max_gap")
        self.mnist_dir = data_dir(root, "mnist")
        self.root = str(self.mnist_dir.parent)
        self.min_digits, self.max_digits, self.max_gap = min_digits, max_digits, max_gap
        self.width = SIDE * max_digits + max_gap * (max_digits - 1)
        self.requested = {"train": train_size, "test": test_size}
        self.seed = seed
        self.spec = {"image": FieldSpec((SIDE, self.width, 1), "float32"),
                     LABEL: DIGITS.spec(max_digits)}

    def images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return sources.mnist(self.mnist_dir, split)

    def size(self, split: str) -> int:
        self.check_split(split)
        return self.requested[split]

    def resolved_settings(self) -> dict:
        return {"root": self.root}

    # -- examples ------------------------------------------------------------------------------
    def draw(self, split: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``{"image": [n, max_digits] (MNIST indices, -1 after the last digit),
        "column": [n, max_digits] (each digit's left column), "label"}``."""
        _, labels = self.images(split)
        k = self.max_digits
        count = rng.integers(self.min_digits, k + 1, n)
        used = np.arange(k) < count[:, None]
        image = rng.integers(0, len(labels), (n, k))
        gap = np.where(used[:, 1:], rng.integers(0, self.max_gap + 1, (n, k - 1)), 0)
        slack = self.width - SIDE * count - gap.sum(axis=1)
        first = rng.integers(0, slack + 1)
        column = np.cumsum(np.concatenate([first[:, None], SIDE + gap], axis=1), axis=1)
        return {"image": np.where(used, image, -1), "column": np.where(used, column, 0),
                LABEL: np.where(used, DIGIT_IDS[labels[image]], PAD).astype(np.int32)}

    def materialise(self, split: str, draws: dict[str, np.ndarray], rows: np.ndarray,
                    rngs: list[np.random.Generator]) -> Batch:
        images, _ = self.images(split)
        strips = np.zeros((len(rows), SIDE, self.width), np.uint8)  # MNIST's background is 0
        for i, r in enumerate(rows):
            for index, at in zip(draws["image"][r], draws["column"][r]):
                if index < 0:
                    break
                strips[i, :, at:at + SIDE] = images[index]
        return {"image": sources.mnist_float(strips), LABEL: draws[LABEL][rows]}

    # -- new inputs ----------------------------------------------------------------------------
    def encode(self, modality: str, value: str) -> np.ndarray:
        if modality != "image":
            raise DataError(f"{type(self).__name__} has no modality {modality!r}; it has 'image'")
        x = read_image(value, size=(SIDE, self.width), channels=1)
        return ((x - sources.MNIST_MEAN) / sources.MNIST_STD).astype(np.float32)

    def review(self, modality: str, x: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        """Polarity, as for ``avdigits``: a strip whose border is brighter than its middle
        rows (dark digits on light paper) is inverted, and the answer says so."""
        if modality != "image":
            return super().review(modality, x)
        raw = x * sources.MNIST_STD + sources.MNIST_MEAN  # back to [0, 1]
        border = np.concatenate([raw[:3].ravel(), raw[-3:].ravel(), raw[:, :3].ravel(),
                                 raw[:, -3:].ravel()])
        if border.mean() > 0.5 and border.mean() > raw[7:21, 3:-3].mean():
            inverted = ((1.0 - raw) - sources.MNIST_MEAN) / sources.MNIST_STD
            return inverted.astype(np.float32), ("image: dark digits on a light background; it "
                                                 "was inverted, as the training digits are light "
                                                 "on dark")
        return x, None
