"""A generated two-text data set: a title and a body about one of ``num_classes`` topics.

Word ``i`` of the vocabulary is token id ``i`` (id 0 is padding) and is written ``w<i>``
in raw text.  Topic ``t`` owns ``keywords`` of the ids (``1 + t * keywords`` up to
``(t + 1) * keywords``); the other ids are filler words every topic uses.  Each word of a
text is, with probability ``signal``, one of its topic's keywords, else a random filler
word, and a text has a random length of 1 up to its maximum (``title_len``,
``body_len``), padded with 0s.  A short title often holds no keyword, so the two texts
together say more than either alone.

With ``missing > 0`` that share of the examples lacks one of its two texts (which one is
random): its ids are all 0 and its mask (``mask/title``, ``mask/body``) is False.

Generation is lazy (``config check`` costs nothing), NumPy only, and deterministic in
``seed``; nothing is downloaded or shipped.
"""

from __future__ import annotations

import re

import numpy as np

from fusionjax.data.sources import ArraySource
from fusionjax.errors import ConfigError, DataError
from fusionjax.interfaces import LABEL, Batch, Dataset, FieldSpec, mask_key

TEXTS = ("title", "body")
_WORD = re.compile(r"^w(\d+)$")


class TopicsDataset(Dataset):
    """A title and a body (int32 token ids) per example, labelled with their topic.

    Parameters:
        num_classes: Number of topics; ``>= 2``.
        train_size: Examples in the train split; ``>= 1``.
        test_size: Examples in the test split; ``>= 1``.
        vocab_size: Number of token ids (id 0 is padding); at least
            ``num_classes * keywords + 2``, so that one filler word is left.
        keywords: Keyword ids per topic; ``>= 1``.
        title_len: The title's length in tokens (the longest title); ``>= 1``.
        body_len: The body's length in tokens; ``>= 1``.
        signal: Probability that a word is one of its topic's keywords; in ``[0, 1]``.
        missing: Share of the examples that lack one of their two texts; in ``[0, 1)``.
        seed: Seed of the generated examples.
    """

    splits = ("train", "test")
    # The smallest settings it is tested with (the masks are there, too).
    test_settings = {"train_size": 24, "test_size": 12, "vocab_size": 40, "title_len": 4,
                     "body_len": 8, "missing": 0.3}

    def __init__(self, *, num_classes: int = 4, train_size: int = 1024, test_size: int = 256,
                 vocab_size: int = 200, keywords: int = 5, title_len: int = 6, body_len: int = 12,
                 signal: float = 0.25, missing: float = 0.0, seed: int = 0):
        for key, value in (("train_size", train_size), ("test_size", test_size),
                           ("keywords", keywords), ("title_len", title_len), ("body_len", body_len)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        if num_classes < 2:
            raise ConfigError(f"must be >= 2, got {num_classes}", key="num_classes")
        if vocab_size < num_classes * keywords + 2:
            raise ConfigError(f"must be at least num_classes * keywords + 2 = "
                              f"{num_classes * keywords + 2} (padding, the keywords and one filler "
                              f"word), got {vocab_size}", key="vocab_size")
        if not 0.0 <= signal <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {signal}", key="signal")
        if not 0.0 <= missing < 1.0:
            raise ConfigError(f"must be in [0, 1), got {missing}", key="missing")
        self.num_classes = num_classes
        self.label_names = tuple(f"topic{t}" for t in range(num_classes))
        self.sizes = {"train": train_size, "test": test_size}
        self.vocab_size, self.keywords, self.signal, self.missing = vocab_size, keywords, signal, missing
        self.lengths = {"title": title_len, "body": body_len}
        self.seed = seed
        self.spec = {m: FieldSpec((n,), "int32", {"vocab_size": vocab_size})
                     for m, n in self.lengths.items()}
        self.spec[LABEL] = FieldSpec((), "int32")
        if missing > 0:
            self.spec.update({mask_key(m): FieldSpec((), "bool") for m in TEXTS})
        self._cache: dict[str, Batch] = {}

    def size(self, split: str) -> int:
        self.check_split(split)
        return self.sizes[split]

    def arrays(self, split: str) -> Batch:
        """The whole split as arrays (generated on first use)."""
        self.check_split(split)
        if split not in self._cache:
            self._cache[split] = self._generate(split)
        return self._cache[split]

    def _generate(self, split: str) -> Batch:
        n, k = self.sizes[split], self.keywords
        rng = np.random.default_rng([self.seed, self.splits.index(split)])
        labels = rng.integers(0, self.num_classes, n)
        out: Batch = {LABEL: labels.astype(np.int32)}
        first_filler = 1 + self.num_classes * k
        for m in TEXTS:
            t = self.lengths[m]
            keyword = 1 + labels[:, None] * k + rng.integers(0, k, (n, t))
            filler = rng.integers(first_filler, self.vocab_size, (n, t))
            ids = np.where(rng.random((n, t)) < self.signal, keyword, filler)
            length = rng.integers(1, t + 1, (n, 1))
            out[m] = np.where(np.arange(t) < length, ids, 0).astype(np.int32)
        if self.missing > 0:
            lacking = rng.random(n) < self.missing
            which = rng.integers(0, len(TEXTS), n)
            for i, m in enumerate(TEXTS):
                present = ~(lacking & (which == i))
                out[mask_key(m)] = present
                out[m] = np.where(present[:, None], out[m], 0).astype(np.int32)
        return out

    def source(self, split: str, *, seed: int) -> ArraySource:
        return ArraySource(self.arrays(split))

    def encode(self, modality: str, value: str) -> np.ndarray:
        """A raw text (words ``w<i>``, separated by spaces) as token ids ``[length]``; words
        that are not ``w1`` .. ``w<vocab_size - 1>`` are dropped."""
        if modality not in TEXTS:
            raise DataError(f"no modality {modality!r}; this data set has: {', '.join(TEXTS)}")
        ids = [int(w[1:]) for w in value.lower().split() if _WORD.match(w)]
        ids = [i for i in ids if 0 < i < self.vocab_size][: self.lengths[modality]]
        out = np.zeros(self.lengths[modality], np.int32)
        out[: len(ids)] = ids
        return out
