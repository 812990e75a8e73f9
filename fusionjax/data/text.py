"""A word-level tokenizer whose vocabulary is built from the training split only.

Text is lower-cased and split into words (runs of letters, digits and
apostrophes).  Id 0 is padding, id 1 the unknown word; known words follow by
decreasing frequency (ties alphabetically), so the same texts always give the
same vocabulary.  A vocabulary is saved with each run (``vocab.json``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fusionjax.errors import DataError

PAD, UNK = 0, 1
_WORD = re.compile(r"(?:[^\W_]|')+")  # letters, digits, apostrophes


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> id, with ``PAD = 0`` and ``UNK = 1``."""

    def __init__(self, tokens: Iterable[str]):
        self.itos = ["<pad>", "<unk>", *tokens]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError("vocabulary has duplicate words")

    @classmethod
    def build(cls, texts: Iterable[str], *, max_size: int | None = None,
              min_count: int = 1) -> Vocabulary:
        """From training texts: words seen at least ``min_count`` times, the most
        frequent first, at most ``max_size`` ids in all (including pad and unk)."""
        counts = Counter(w for t in texts for w in words(t))
        ranked = sorted((w for w, c in counts.items() if c >= min_count),
                        key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - 2)]
        return cls(ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int) -> np.ndarray:
        """int32 ``[max_len]``: the first ``max_len`` words' ids, then padding."""
        ids = [self.stoi.get(w, UNK) for w in words(text)][:max_len]
        out = np.zeros(max_len, np.int32)
        out[: len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.itos[i] for i in ids if i != PAD)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"tokens": self.itos[2:]}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            return cls(json.loads(Path(path).read_text(encoding="utf-8"))["tokens"])
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{path}: not a fusionjax vocabulary ({e})") from None
