"""The SMS Spam Collection v.1 (Almeida and Gómez Hidalgo, UCI dataset 228).

``<root>/sms_spam/SMSSpamCollection``: one message per line, ``label<TAB>text``,
UTF-8, label ``ham`` or ``spam``; 5,574 messages, 13.4 % spam.  There is no
official split: a seeded split stratified by label gives train and test.  The
modality ``text`` is int32 ``[max_len]`` token ids from a vocabulary built from
the train split only (saved with each run as ``vocab.json``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionjax.data.locate import data_dir
from fusionjax.data.sources import ArraySource
from fusionjax.data.splits import split_indices
from fusionjax.data.text import Vocabulary
from fusionjax.errors import ConfigError, DataError, shown
from fusionjax.interfaces import LABEL, Batch, Dataset, FieldSpec

FILE = "SMSSpamCollection"
LABELS = ("ham", "spam")
VOCAB_FILE = "vocab.json"


def read_collection(path: Path) -> tuple[list[str], np.ndarray]:
    """``(texts, labels)`` from a ``label<TAB>text`` file; labels are 0 (ham) / 1 (spam).
    Blank lines are ignored; any other malformed line is a :class:`DataError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    texts, labels = [], []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}, line {number}: not UTF-8 (byte 0x{raw[e.start]:02x})") from None
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{path}, line {number}: expected `label<TAB>text`, found no tab")
        if label not in LABELS:
            raise DataError(f"{path}, line {number}: label {shown(label)} is neither 'ham' nor 'spam'")
        texts.append(text)
        labels.append(LABELS.index(label))
    if not texts:
        raise DataError(f"{path}: holds no messages")
    return texts, np.array(labels, np.int32)


class SmsSpamDataset(Dataset):
    """Text messages labelled ham (0) or spam (1).

    Text only: the SMS Spam Collection (5,574 messages, 13.4 % spam), file
    ``<root>/sms_spam/SMSSpamCollection``.  Modality ``text`` (int32 ``[max_len]``, from a
    vocabulary built from the train split and saved in the run directory as
    ``vocab.json``); labels ``ham`` = 0, ``spam`` = 1, so the head also reports ``f1`` of
    ``spam``.  Splits: a seeded split stratified by label, ``train`` (4,460) and ``test``
    (1,114) with the defaults.  Provides ``vocab_size`` (text) and ``num_classes`` (2).
    Details: [data.md](data.md#bundled-data-sets).

    Parameters:
        root: Folder holding ``sms_spam/`` (see above).
        test_fraction: Share of each class in ``test``; strictly between 0 and 1.
        seed: Seed of the split (independent of ``train.seed``).
        max_len: Tokens per message (truncated / padded with 0). ``>= 1``.
        max_vocab: At most this many ids in the vocabulary, padding and unknown included
            (none: every word). ``>= 3``.
        min_count: Words seen fewer times in the train split map to unknown. ``>= 1``.
    """

    test_settings = {"max_len": 16, "max_vocab": 200}

    label_names = LABELS
    num_classes = 2

    def __init__(
        self,
        *,
        root: str | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        max_len: int = 48,
        max_vocab: int | None = 20000,
        min_count: int = 1,
    ):
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"must be between 0 and 1 (exclusive), got {test_fraction}",
                              key="test_fraction")
        for key, value in (("max_len", max_len), ("min_count", min_count)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        if max_vocab is not None and max_vocab < 3:
            raise ConfigError(f"must be >= 3 (padding, unknown and one word), got {max_vocab}",
                              key="max_vocab")
        self.path = data_dir(root, "sms_spam") / FILE
        self.max_len = max_len
        self.texts, self.labels = read_collection(self.path)
        self.rows = split_indices(len(self.texts), {"train": 1.0 - test_fraction,
                                                      "test": test_fraction},
                                    seed=seed, stratify=self.labels)
        self.vocab = Vocabulary.build((self.texts[i] for i in self.rows["train"]),
                                      max_size=max_vocab, min_count=min_count)
        self.spec = {"text": FieldSpec((max_len,), "int32", {"vocab_size": len(self.vocab)}),
                     LABEL: FieldSpec((), "int32")}
        self._cache: dict[str, Batch] = {}

    splits = ("train", "test")

    def _check_split(self, split: str) -> str:
        self.check_split(split)
        return split

    def resolved_settings(self) -> dict:
        return {"root": str(self.path.parent.parent)}

    def size(self, split: str) -> int:
        return len(self.rows[self._check_split(split)])

    def arrays(self, split: str) -> Batch:
        """The whole split as arrays (encoded on first use)."""
        if split not in self._cache:
            idx = self.rows[self._check_split(split)]
            ids = np.array([self.vocab.encode(self.texts[i], self.max_len) for i in idx], np.int32)
            self._cache[split] = {"text": ids.reshape(len(idx), self.max_len),
                                  LABEL: self.labels[idx]}
        return self._cache[split]

    def source(self, split: str, *, seed: int) -> ArraySource:
        return ArraySource(self.arrays(split))

    def encode(self, modality: str, value: str) -> np.ndarray:
        """A message's text as token ids ``[max_len]``."""
        if modality != "text":
            raise DataError(f"no modality {modality!r}; this data set has: text")
        return self.vocab.encode(value, self.max_len)

    def save(self, run_dir: Path) -> None:
        self.vocab.save(Path(run_dir) / VOCAB_FILE)

    def restore(self, run_dir: Path) -> None:
        path = Path(run_dir) / VOCAB_FILE
        if not path.is_file():
            raise DataError(f"{path}: not found; the run directory holds no vocabulary")
        vocab = Vocabulary.load(path, run_dir=run_dir)
        expected = self.spec["text"].metadata["vocab_size"]
        if len(vocab) != expected:
            raise DataError(f"{path}: the saved vocabulary has {len(vocab)} ids, but this data set's "
                            f"vocab_size is {expected}; the run was trained on other data or settings")
        self.vocab = vocab
        self._cache.clear()
