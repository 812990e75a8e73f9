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

from fusionjax.errors import CorruptRunError, DataError, FusionJaxError, capped, shown

PAD, UNK = 0, 1
RESERVED = ("<pad>", "<unk>")  # the tokens of ids PAD and UNK, never saved
_WORD = re.compile(r"(?:[^\W_]|')+")  # letters, digits, apostrophes


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> id, with ``PAD = 0`` and ``UNK = 1``."""

    def __init__(self, tokens: Iterable[str]):
        self.itos = [*RESERVED, *tokens]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            seen: set[str] = set()
            twice = next(w for w in self.itos if w in seen or seen.add(w))
            raise DataError(f"vocabulary has duplicate words, e.g. {shown(twice)}")

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
    def load(cls, path: str | Path, *, run_dir: str | Path | None = None) -> Vocabulary:
        """A vocabulary :meth:`save` wrote: ``{"tokens": [...]}``, the words after ``<pad>``
        and ``<unk>``, each a distinct word of the tokenizer.  A file that is not one is a
        :class:`DataError`, or, with ``run_dir`` (the file is that run's saved vocabulary),
        a :class:`~fusionjax.errors.CorruptRunError` of that run directory."""

        def bad(what: str) -> FusionJaxError:
            if run_dir is None:
                return DataError(f"{path}: not a fusionjax vocabulary ({what})")
            return CorruptRunError(
                f"{Path(path).name} is not a fusionjax vocabulary ({what})", path=run_dir,
                hint="it was not written by fusionjax, or was damaged: restore it from a copy "
                     "of the run (the run's model cannot be used without the vocabulary it was "
                     "trained with)")

        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise bad("file not found") from None
        except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise bad(f"{type(e).__name__}: {capped(str(e), 200)}") from None
        except RecursionError:
            raise bad("JSON nested too deeply") from None
        if not isinstance(data, dict) or "tokens" not in data:
            got = f"a JSON object without 'tokens' (keys {shown(sorted(data)[:5])})" if isinstance(
                data, dict) else f"a JSON {type(data).__name__}"
            raise bad(f'expected {{"tokens": ["word", ...]}}, found {got}')
        tokens = data["tokens"]
        if not isinstance(tokens, list):
            raise bad(f"'tokens' must be a list of words, not {shown(tokens)}")
        seen: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                raise bad(f"tokens[{i}] is {shown(token)}, not a string")
            if token in RESERVED:
                raise bad(f"tokens[{i}] is {token!r}, which is implicit (ids {PAD} and {UNK} are "
                          f"{RESERVED[0]!r} and {RESERVED[1]!r}; the file lists the words after them)")
            if words(token) != [token]:
                raise bad(f"tokens[{i}] = {shown(token)} is not a word of the tokenizer (lower-case "
                          "letters, digits and apostrophes), so it could never be looked up")
            if token in seen:
                raise bad(f"tokens[{i}] = {shown(token)} repeats tokens[{seen[token]}]")
            seen[token] = i
        return cls(tokens)
