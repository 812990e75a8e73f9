"""Text augmentations: one example, int token ids ``[length]`` (0 = padding, 1 = the
unknown word, every other id a word of the data set's vocabulary).

They act on ids, not on characters: the vocabulary is fixed when the data set is read, so
a misspelt word -- one the vocabulary has never seen -- *is* the unknown id.  Padding stays
padding, and only words (ids other than 0) are ever dropped or replaced.
"""

from __future__ import annotations

import numpy as np

from fusionjax.interfaces import Augmentation
from fusionjax_plugins.augmentations.settings import probability

PAD, UNKNOWN = 0, 1


class WordDropout(Augmentation):
    """Each word dropped with probability ``p``; the words kept move left, in their order,
    and padding (0) fills the end.  A text never loses every word: where the draw would
    drop them all, one of them, drawn uniformly, is kept.

    Corruption of severity ``s``: ``p = 0.6 * s``.

    Parameters:
        p: The probability that a word is dropped. In ``[0, 1]``.
    """

    applies_to = ("text",)
    test_settings = {"p": 0.3}

    def __init__(self, *, p: float = 0.1):
        self.p = probability(p, "p")

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"p": 0.6 * severity}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        words = x[x != PAD]
        keep = rng.random(len(words)) >= self.p
        if len(words) and not keep.any():
            keep[rng.integers(len(words))] = True
        out = np.zeros_like(x)
        kept = words[keep]
        out[:len(kept)] = kept
        return out


class Typos(Augmentation):
    """Each word replaced by the unknown id (1) with probability ``p``: what a typo does to
    a model of a fixed vocabulary, to which a misspelt word is a word it has never seen.
    Padding and the text's length are unchanged.

    Corruption of severity ``s``: ``p = 0.6 * s``.

    Parameters:
        p: The probability that a word becomes the unknown id. In ``[0, 1]``.
    """

    applies_to = ("text",)
    test_settings = {"p": 0.3}

    def __init__(self, *, p: float = 0.1):
        self.p = probability(p, "p")

    @classmethod
    def corruption(cls, severity: float) -> dict:
        return {"p": 0.6 * severity}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        hit = rng.random(x.shape) < self.p
        return np.where(hit & (x != PAD), np.asarray(UNKNOWN, x.dtype), x)
