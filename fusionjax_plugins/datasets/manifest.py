"""Your own data: a CSV or JSONL manifest, one example per row.

Each modality is a column named like the modality; its *kind* says what the
column holds: ``image`` / ``audio`` / ``text_file`` (a path to an image, a WAV
file, a UTF-8 text file; relative paths are relative to the manifest's folder)
or ``text`` (the text itself).  The label column holds the class name.

What happens when (see ``docs/data.md``):

* **Constructor** (and so ``fusionjax config check``): reads the manifest, checks
  that every referenced file exists, reads every text (inline and text files),
  splits the rows and builds the vocabulary from the train split only.
* **Reading examples** depends on ``decode``: with ``"once"`` the first use of a split
  decodes all its images and audio with a small thread pool and keeps them in memory
  (``rows x H x W x C`` and ``rows x num_samples`` float32); with ``"per_read"`` nothing
  is kept: each example's files are decoded when the pipeline reads it (in a worker
  process, with ``data.workers``), for data bigger than memory; ``"auto"`` (the
  default) is ``"once"`` for a split whose decoded arrays take at most
  :data:`KEEP_DECODED_BYTES`.  ``fusionjax pack`` writes the decoded examples to a
  file once, for epochs that neither decode nor hold them.

Every problem with a row is a :class:`~fusionjax.errors.DataError` naming the
manifest, the row's line, the column and the file; with ``on_error = "skip"`` the
row is dropped instead and described in :attr:`ManifestDataset.problems`.

With ``on_error = "absent"`` a problem with one *input* makes that modality absent
for that example instead: its array is zeros and its mask ``mask/<modality>`` is
False (every batch then carries a mask for every modality).  An input is absent
when its cell is empty (or JSON ``null``), its file is missing or unreadable, or
its text holds no word at all (empty, or only spaces and punctuation: nothing the
tokenizer keeps).  A text of words the vocabulary does not know is *present* (its
words are the unknown id): whether a word is known depends on the train split, and
a new input with new words is still an input.  Problems that are not about one
input (the label, the split, a malformed line) and rows left with no input at all
are skipped as with ``"skip"``.  This is one ``on_error`` rather than a second
parameter because the three values are one ladder of tolerance (stop at a bad row,
drop the row, keep the row without its bad inputs); a second switch would only add
mixes such as "absent inputs, but stop at a bad label", which fixing the row serves.
The absent inputs are listed, per modality, in :attr:`ManifestDataset.absent_inputs`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from fusionjax.data.audio import load_audio
from fusionjax.data.image import normalize, read_image
from fusionjax.data.locate import shipped_root
from fusionjax.data.sources import ArraySource, LazySource
from fusionjax.data.splits import split_indices
from fusionjax.data.text import Vocabulary, words
from fusionjax.errors import ConfigError, DataError, capped, did_you_mean, shown
from fusionjax.interfaces import LABEL, MASK_PREFIX, Batch, Dataset, FieldSpec, mask_key

KINDS = ("image", "audio", "text", "text_file")
FILE_KINDS = ("image", "audio", "text_file")  # the column holds a path
DECODED = ("image", "audio")  # decoded on first use of a split
TEXT_KINDS = ("text", "text_file")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
VOCAB_FILE = "vocab.json"
MAX_LISTED = 5  # problems quoted in one error message
KEEP_DECODED_BYTES = 1 << 30  # decode = "auto": a split decoded once if it fits in 1 GiB


@dataclass
class _Row:
    line: int  # 1-based line of the manifest where the row starts
    label: str
    split: str | None
    paths: dict[str, str] = field(default_factory=dict)  # file modalities
    texts: dict[str, str] = field(default_factory=dict)  # text modalities (inline or read)
    absent: dict[str, str] = field(default_factory=dict)  # modality -> why (on_error = "absent")


class _Rows:
    """The manifest's checked rows, stored column by column: a few Python objects per
    column rather than a :class:`_Row` (with two dicts) per row, which cost ~1.6 KB a row
    -- 330 MB for 200,000 rows -- and a garbage collector walking every one.  Indexing
    gives a :class:`_Row`; a row's absent inputs are stored only for rows that have any."""

    def __init__(self, kinds: dict[str, str]):
        self.lines = array("l")
        self.labels: list[str] = []
        self.splits: list[str | None] = []
        self.paths = {m: [] for m, k in kinds.items() if k in FILE_KINDS}  # str or None
        self.texts = {m: [] for m, k in kinds.items() if k in TEXT_KINDS}  # str or None
        self.absent: dict[int, dict[str, str]] = {}  # row -> {modality: why}
        self._same: dict[str, str] = {}  # one string object per distinct label / split

    def append(self, row: _Row) -> None:
        if row.absent:
            self.absent[len(self.lines)] = dict(row.absent)
        self.lines.append(row.line)
        self.labels.append(self._same.setdefault(row.label, row.label))
        self.splits.append(None if row.split is None else self._same.setdefault(row.split, row.split))
        for m, column in self.paths.items():
            column.append(row.paths.get(m))
        for m, column in self.texts.items():
            column.append(row.texts.get(m))

    def add_absent(self, i: int, inputs: dict[str, str]) -> None:
        self.absent.setdefault(i, {}).update(inputs)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> _Row:
        i = int(i)
        return _Row(self.lines[i], self.labels[i], self.splits[i],
                    {m: c[i] for m, c in self.paths.items() if c[i] is not None},
                    {m: c[i] for m, c in self.texts.items() if c[i] is not None},
                    dict(self.absent.get(i, {})))


class ManifestDataset(Dataset):
    """Examples listed in a CSV (with a header row) or JSONL manifest.

    Your own data, one example per row; each modality is a column, whose *kind*
    (``image``, ``audio``, ``text``, ``text_file``) says what it holds.  Class names come
    from a label column; splits from a split column or a seeded stratified train/test
    split.  Text modalities share one vocabulary, built from the train split and saved in
    the run directory as ``vocab.json``.  Provides ``vocab_size`` (text), ``sample_rate``
    (audio) and ``num_classes`` (the number of labels).  The format and the handling of
    bad rows are in [data.md](data.md#your-own-data-manifest).

    ``on_error`` says what a bad row does: ``"raise"`` stops with a data error naming the
    manifest, line, column and file; ``"skip"`` drops the row and lists it in the data
    set's ``problems`` (and ``run.json``'s ``skipped_examples``); ``"absent"`` keeps the
    row and marks only the bad input absent for that example (zeros,
    ``mask/<modality> = false``; an empty cell, a missing or unreadable file, a text with
    no word), skipping rows with no usable input or a bad label.  With ``"absent"`` every
    batch carries a mask for every modality, and ``config check`` reports the absent
    inputs per modality ([data.md](data.md#absent-inputs)).

    Parameters:
        path: The manifest, ``.csv`` or ``.jsonl``/``.ndjson`` (relative to the working
            directory).
        modalities: Modality (= column) name → kind: ``image``, ``audio``, ``text``,
            ``text_file``. ``label`` and ``mask/...`` are reserved.
        label_column: The column holding the class name.
        labels: The label set in class-id order; none: the train split's labels, sorted
            (numerically when every label is an integer). At least two, distinct.
        split_column: A column naming each row's split (a ``train`` split is required);
            none: a seeded stratified train/test split.
        test_fraction: Share of each class in ``test`` (without ``split_column``); strictly
            between 0 and 1.
        seed: Seed of the split (independent of ``train.seed``).
        image_size: ``[height, width]`` every image is resized to.
        image_channels: 1 (greyscale) or 3 (RGB).
        image_mean: Images are ``(pixel / 255 - image_mean) / image_std``.
        image_std: See ``image_mean``; ``> 0``.
        sample_rate: Audio is resampled to this rate (Hz); the audio encoder's
            ``sample_rate`` default.
        num_samples: Audio length after crop/pad.
        align: Which part of a recording crop/pad keeps ([data.md](data.md#audio)).
        max_len: Tokens per text (truncated / padded with 0).
        max_vocab: At most this many ids in the vocabulary, padding and unknown included
            (``>= 3``); none: every word.
        min_count: Words seen fewer times in the train split map to unknown.
        on_error: What a bad row or input does: ``"raise"``, ``"skip"`` or ``"absent"``
            (see above).
        decode: When images and audio are decoded: ``"once"`` (a split's first use, kept
            in memory), ``"per_read"`` (each time an example is read, nothing kept: data
            bigger than memory) or ``"auto"`` (``"once"`` if the split's decoded arrays
            fit in 1 GiB). With ``"per_read"``, a file found unreadable mid-epoch stops
            the run (``"raise"``), is absent for that example (``"absent"``), or its row
            is replaced by the split's next readable row (``"skip"``), so batches stay
            full ([data.md](data.md#data-bigger-than-memory)).
    """

    # the shipped sample manifest: 36 spoken digits (FSDD) with a text each, three classes
    test_settings = {"path": str(shipped_root() / "samples" / "spoken_digits.csv"),
                         "modalities": {"audio": "audio", "text": "text"}, "sample_rate": 8000,
                         "num_samples": 2000, "max_len": 8, "test_fraction": 0.25}

    def __init__(
        self,
        *,
        path: str,
        modalities: dict,
        label_column: str = "label",
        labels: tuple[str, ...] | None = None,
        split_column: str | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        image_size: tuple[int, int] = (28, 28),
        image_channels: int = 1,
        image_mean: float = 0.0,
        image_std: float = 1.0,
        sample_rate: int = 16000,
        num_samples: int = 16000,
        align: Literal["center", "start"] = "center",
        max_len: int = 64,
        max_vocab: int | None = None,
        min_count: int = 1,
        on_error: Literal["raise", "skip", "absent"] = "raise",
        decode: Literal["auto", "once", "per_read"] = "auto",
    ):
        self._check_settings(locals())
        self.path = Path(path).expanduser()
        self.kinds: dict[str, str] = dict(modalities)
        self.label_column, self.split_column = label_column, split_column
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.image_channels, self.image_mean, self.image_std = image_channels, image_mean, image_std
        self.sample_rate, self.num_samples, self.align = sample_rate, num_samples, align
        self.max_len, self.on_error, self.decode = max_len, on_error, decode
        self.problems: list[str] = []
        self.absent_inputs: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._decoded: dict[str, dict[str, np.ndarray]] = {}  # split -> image/audio arrays
        self._encoded: dict[str, dict[str, np.ndarray]] = {}  # split -> text ids and labels

        # 1. the manifest's rows, each checked cheaply (files exist, texts read)
        rows = _Rows(self.kinds)
        bad: list[str] = []
        for line, record in self._records():
            row = self._row(line, record)
            (bad.append if isinstance(row, str) else rows.append)(row)
        self._reject(bad)
        if not len(rows):
            raise DataError(f"{self.path}: no usable rows")

        # 2. the splits
        if split_column is None:
            parts = split_indices(len(rows), {"train": 1.0 - test_fraction, "test": test_fraction},
                                  seed=seed, stratify=np.array(rows.labels))
        else:
            names = sorted(set(rows.splits), key=lambda s: (s != "train", s != "test", s))
            parts = {s: np.array([i for i, r in enumerate(rows.splits) if r == s], np.int64)
                     for s in names}
            if "train" not in parts:
                found = ", ".join(map(shown, names[:10])) + (", ..." if len(names) > 10 else "")
                raise DataError(f"{self.path}: no row has {split_column!r} = 'train' (found: "
                                f"{found}); the train split is required")
        train_labels = {rows.labels[i] for i in parts["train"]}

        # 3. the label set: given, or the train split's
        if labels is None:
            ordered = _sorted_labels(train_labels)
            if len(ordered) < 2:
                raise DataError(f"{self.path}: the train split holds only the label "
                                f"{shown(ordered[0])}; a classifier needs at least two classes "
                                f"(set `labels` to name the whole label set)")
            labels = tuple(ordered)
        self.label_names = tuple(labels)
        self.num_classes = len(self.label_names)
        self._label_ids = {name: i for i, name in enumerate(self.label_names)}
        known = ", ".join(map(shown, self.label_names[:10])) + (", ..." if len(labels) > 10 else "")
        outside = {i for i, label in enumerate(rows.labels) if label not in self._label_ids}
        self._reject([self._where(rows.lines[i], label_column,
                                  f"label {shown(rows.labels[i])} is not in the label set ({known})")
                      for i in sorted(outside)])
        self._rows = rows
        self._splits = {s: np.array([i for i in idx if i not in outside], np.int64)
                        for s, idx in parts.items()}
        for i, absent in rows.absent.items():
            if i not in outside:
                self._note_absent(rows.lines[i], absent)
        if len(self._splits["train"]) == 0:
            raise DataError(f"{self.path}: the train split has no usable rows")

        # 4. the vocabulary, from the train split only
        self.text_modalities = tuple(m for m, k in self.kinds.items() if k in TEXT_KINDS)
        self.vocab: Vocabulary | None = None
        if self.text_modalities:
            self.vocab = Vocabulary.build(
                (rows.texts[m][i] or "" for i in self._splits["train"]
                 for m in self.text_modalities),
                max_size=max_vocab, min_count=min_count)

        spec = {}
        for m, kind in self.kinds.items():
            if kind == "image":
                spec[m] = FieldSpec((*self.image_size, image_channels), "float32")
            elif kind == "audio":
                spec[m] = FieldSpec((num_samples,), "float32", {"sample_rate": sample_rate})
            else:
                spec[m] = FieldSpec((max_len,), "int32", {"vocab_size": len(self.vocab)})
        if on_error == "absent":  # every batch says which inputs each example has
            spec |= {mask_key(m): FieldSpec((), "bool") for m in self.kinds}
        self.spec = spec | {LABEL: FieldSpec((), "int32")}

    # -- configuration --------------------------------------------------------------------

    @staticmethod
    def _check_settings(s: dict) -> None:
        path = Path(s["path"]).expanduser()
        if path.suffix.lower() not in FORMATS:
            raise ConfigError(f"{s['path']!r} is neither a .csv nor a .jsonl file", key="path",
                              hint="a CSV file with a header row, or JSON Lines (.jsonl)")
        if not path.is_file():
            raise ConfigError(f"manifest {s['path']!r} not found (relative to {os.getcwd()})",
                              key="path")
        mods = s["modalities"]
        if not isinstance(mods, dict) or not mods:
            raise ConfigError("must name at least one modality and its kind, e.g. "
                              "{image = \"image\", caption = \"text\"}", key="modalities")
        for name, kind in mods.items():
            if not isinstance(name, str) or not name or name == LABEL or name.startswith(MASK_PREFIX):
                raise ConfigError(f"{name!r} cannot name a modality ('{LABEL}' and "
                                  f"'{MASK_PREFIX}...' are reserved)", key="modalities")
            if kind not in KINDS:
                raise ConfigError(
                    f"modality {name!r} has kind {kind!r}{did_you_mean(str(kind), KINDS)}",
                    key=f"modalities.{name}", hint=f"kinds: {', '.join(KINDS)}")
        if s["label_column"] in mods:
            raise ConfigError(f"{s['label_column']!r} is also a modality", key="label_column")
        if s["split_column"] is not None and s["split_column"] in (*mods, s["label_column"]):
            raise ConfigError(f"{s['split_column']!r} is also the label or a modality column",
                              key="split_column")
        labels = s["labels"]
        if labels is not None:
            if (not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)
                    or len(labels) < 2):
                raise ConfigError(f"must be two or more distinct non-empty strings, got {labels!r}",
                                  key="labels")
        if s["split_column"] is None and not 0.0 < s["test_fraction"] < 1.0:
            raise ConfigError(f"must be between 0 and 1 (exclusive), got {s['test_fraction']}",
                              key="test_fraction")
        size = tuple(s["image_size"])
        if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
            raise ConfigError(f"must be [height, width], both >= 1, got {s['image_size']!r}",
                              key="image_size")
        if s["image_channels"] not in (1, 3):
            raise ConfigError(f"must be 1 (greyscale) or 3 (RGB), got {s['image_channels']!r}",
                              key="image_channels")
        if not s["image_std"] > 0:
            raise ConfigError(f"must be > 0, got {s['image_std']}", key="image_std")
        for key in ("sample_rate", "num_samples", "max_len", "min_count"):
            if not isinstance(s[key], int) or s[key] < 1:
                raise ConfigError(f"must be an int >= 1, got {s[key]!r}", key=key)
        if s["max_vocab"] is not None and s["max_vocab"] < 3:
            raise ConfigError(f"must be >= 3 (padding, unknown and one word), got {s['max_vocab']}",
                              key="max_vocab")
        # align and on_error are Literal[...] parameters: the config binding checks them

    # -- reading the manifest -------------------------------------------------------------

    def _where(self, line: int, column: str | None, message: str) -> str:
        at = f"{self.path}, line {line}" + (f": column {column!r}" if column else "")
        return f"{at}: {message}"

    def _reject(self, problems: list[str]) -> None:
        """Bad rows: an error (``on_error = "raise"``) or recorded in ``problems``."""
        if not problems:
            return
        if self.on_error != "raise":
            self.problems.extend(problems)
            return
        more = len(problems) - MAX_LISTED
        text = "\n".join(problems[:MAX_LISTED]) + (f"\n(and {more} more bad rows)" if more > 0 else "")
        raise DataError(f"{text}\n  hint: fix the row, or set on_error = \"skip\" to drop bad rows "
                        f"(each is then listed in the data set's problems), or on_error = \"absent\" "
                        f"to keep the row without its bad inputs")

    def _note_absent(self, line: int, absent: dict[str, str], *, forget: bool = False) -> None:
        """Record (or, with ``forget``, unrecord) a row's absent inputs."""
        for m, why in absent.items():
            entry = self._where(line, m, why)
            if forget:
                self.absent_inputs[m].remove(entry)
            else:
                self.absent_inputs.setdefault(m, []).append(entry)

    def _text(self) -> str:
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise DataError(f"{self.path}: cannot be read ({e})") from None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise DataError(f"{self.path}, line {line}: not UTF-8 (byte 0x{data[e.start]:02x}); "
                            "save the manifest as UTF-8") from None

    def _records(self) -> Iterator[tuple[int, dict | str]]:
        """``(line, record)`` per row; a string record is what is wrong with that row."""
        text = self._text()
        if FORMATS[self.path.suffix.lower()] == "jsonl":
            for line, raw in enumerate(text.split("\n"), 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as e:
                    yield line, self._where(line, None, f"not valid JSON ({e.msg}, column {e.colno})")
                    continue
                if not isinstance(record, dict):
                    yield line, self._where(line, None, "not a JSON object ({...})")
                    continue
                yield line, record
            return
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{self.path}: empty; the first line must name the columns") from None
        except csv.Error as e:
            raise DataError(f"{self.path}, line 1: not CSV ({e})") from None
        needed = [*self.kinds, self.label_column] + ([self.split_column] if self.split_column else [])
        for column in needed:
            if column not in header:
                raise DataError(
                    f"{self.path}: no column {column!r}{did_you_mean(column, header)}; "
                    f"the header (line 1) has: {', '.join(map(shown, header[:20]))}"
                    + (f", ... ({len(header)} columns)" if len(header) > 20 else ""))
        previous = reader.line_num
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(self._where(previous + 1, None, f"not CSV ({e})")) from None
            line, previous = previous + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue  # a blank line
            if len(fields) != len(header):
                yield line, self._where(line, None, f"has {len(fields)} fields, the header has "
                                                    f"{len(header)}")
                continue
            yield line, dict(zip(header, fields))

    def _row(self, line: int, record: dict | str) -> _Row | str:
        """One record checked: a :class:`_Row`, or what is wrong with it."""
        if isinstance(record, str):
            return record
        errors: list[tuple[str, str]] = []

        def scalar(column: str) -> str | None:
            value = record.get(column)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return json.dumps(value)
            empty = value is None or (isinstance(value, str) and not value.strip())
            errors.append((column, "no value" if empty else
                           f"expected a string or number, got {shown(value)}"))
            return None

        label = scalar(self.label_column)
        split = scalar(self.split_column) if self.split_column else None
        row = _Row(line, label or "", split)
        absent = self.on_error == "absent"
        inputs = errors if not absent else []  # problems with one input: absent, or errors
        for m, kind in self.kinds.items():
            value = record.get(m)
            if kind == "text":
                if isinstance(value, str):
                    row.texts[m] = value
                else:
                    inputs.append((m, "no text" if value is None else f"expected text, got {shown(value)}"))
            elif not isinstance(value, str) or not value.strip():
                inputs.append((m, "no file name" if value in (None, "") else
                               f"expected a file name, got {shown(value)}"))
            else:
                path = Path(value.strip()).expanduser()
                path = path if path.is_absolute() else self.path.parent / path
                try:
                    found = path.is_file()
                except OSError as e:  # e.g. a name too long for the file system
                    inputs.append((m, f"{capped(str(path), 500)}: not a usable file name ({e.strerror})"))
                    continue
                if not found:
                    inputs.append((m, f"{capped(str(path), 500)}: file not found"))
                    continue
                row.paths[m] = str(path)
                if kind == "text_file":
                    try:
                        row.texts[m] = _read_text_file(path)
                    except DataError as e:
                        inputs.append((m, str(e)))
            if absent and m in row.texts and not words(row.texts[m]):
                inputs.append((m, "no words in the text"))
        if absent:
            row.absent = dict(inputs)
            if len(row.absent) == len(self.kinds):
                errors.append((None, "no usable input (" + "; ".join(
                    f"column {c!r}: {msg}" for c, msg in inputs) + ")"))
        if not errors:
            return row
        at = f"{self.path}, line {line}"
        return f"{at}: " + "; ".join(msg if c is None else f"column {c!r}: {msg}" for c, msg in errors)

    # -- reading the files ----------------------------------------------------------------

    def _load(self, kind: str, path: str | Path) -> np.ndarray:
        """One image or audio file, preprocessed (shared by batches and encode)."""
        if kind == "image":
            x = read_image(path, size=self.image_size, channels=self.image_channels)
            return normalize(x, self.image_mean, self.image_std)
        return load_audio(path, sample_rate=self.sample_rate, num_samples=self.num_samples,
                          align=self.align).astype(np.float32)

    def _decode(self, split: str) -> None:
        """All images and audio of ``split``, read once (threads) and kept in memory."""
        rows = [self._rows[i] for i in self._splits[split]]
        decoded = [m for m, k in self.kinds.items() if k in DECODED]
        out = {m: np.zeros((len(rows), *self.spec[m].shape), np.float32) for m in decoded}
        failed: dict[int, list[str]] = {}
        unreadable: dict[int, dict[str, str]] = {}  # on_error = "absent": row -> {modality: why}

        def load(i: int) -> None:
            for m in decoded:
                if m not in rows[i].paths:
                    continue  # absent: stays zeros
                try:
                    out[m][i] = self._load(self.kinds[m], rows[i].paths[m])
                except DataError as e:
                    if self.on_error == "absent":
                        unreadable.setdefault(i, {})[m] = str(e)
                    else:
                        failed.setdefault(i, []).append(f"column {m!r}: {e}")

        if decoded and rows:
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1), "fusionjax-manifest") as pool:
                list(pool.map(load, range(len(rows))))
        for i in sorted(unreadable):
            row = rows[i]
            if len(row.absent) + len(unreadable[i]) == len(self.kinds):  # nothing left: skip the row
                self._note_absent(row.line, row.absent, forget=True)
                failed[i] = ["no usable input (" + "; ".join(
                    f"column {m!r}: {why}" for m, why in (row.absent | unreadable[i]).items()) + ")"]
            else:
                self._rows.add_absent(self._splits[split][i], unreadable[i])
                self._note_absent(row.line, unreadable[i])
        if failed:
            self._reject([f"{self.path}, line {rows[i].line}: " + "; ".join(failed[i])
                          for i in sorted(failed)])
            keep = np.array([i not in failed for i in range(len(rows))])
            self._splits[split] = self._splits[split][keep]
            out = {m: a[keep] for m, a in out.items()}
        self._decoded[split] = out

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def _decodes_once(self, split: str) -> bool:
        if self.decode != "auto":
            return self.decode == "once"
        per_row = sum(int(np.prod(self.spec[m].shape)) * 4 for m, k in self.kinds.items() if k in DECODED)
        return per_row * len(self._splits[split]) <= KEEP_DECODED_BYTES

    def _read(self, split: str, i: int) -> dict[str, np.ndarray]:
        """Example ``i`` of ``split``, its files decoded now (``decode = "per_read"``); with
        ``on_error = "skip"``, an unreadable row is replaced by the split's next readable one."""
        rows = self._splits[split]
        for tries in range(len(rows)):
            example, problem = self._decode_row(self._rows[rows[(i + tries) % len(rows)]])
            if problem is None:
                return example
            if self.on_error == "raise":
                raise DataError(problem + "\n  hint: fix the file, or set on_error = \"skip\" or "
                                "\"absent\" (data.md#errors-raise-skip-or-absent)")
            with self._lock:
                if problem not in self.problems:
                    self.problems.append(problem)
        raise DataError(f"{self.path}: no row of split {split!r} can be read; e.g. {problem}")

    def _decode_row(self, row: _Row) -> tuple[dict[str, np.ndarray], str | None]:
        """One row as an example, and what makes it unusable (None: nothing)."""
        out: dict[str, np.ndarray] = {}
        absent = dict(row.absent)
        failed = []
        for m, kind in self.kinds.items():
            if kind not in DECODED:
                continue
            if m in absent or m not in row.paths:
                out[m] = np.zeros(self.spec[m].shape, np.float32)
                continue
            try:
                out[m] = self._load(kind, row.paths[m])
            except DataError as e:
                if self.on_error == "absent":
                    absent[m] = str(e)
                    out[m] = np.zeros(self.spec[m].shape, np.float32)
                else:
                    failed.append(f"column {m!r}: {e}")
        if self.on_error == "absent" and len(absent) == len(self.kinds):
            failed.append("no usable input (" + "; ".join(
                f"column {m!r}: {why}" for m, why in absent.items()) + ")")
        if failed:
            return out, f"{self.path}, line {row.line}: " + "; ".join(failed)
        for m in self.text_modalities:
            out[m] = self._ids(row, m) if m not in absent else np.zeros(self.max_len, np.int32)
        out[LABEL] = np.int32(self._label_ids[row.label])
        if self.on_error == "absent":
            out |= {mask_key(m): np.bool_(m not in absent) for m in self.kinds}
        return {m: out[m] for m in self.spec}, None

    def __getstate__(self):  # what a worker process needs: no lock, no decoded arrays
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_decoded", "_encoded")}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock(), _decoded={}, _encoded={})

    def _check_split(self, split: str) -> str:
        self.check_split(split)
        return split

    def arrays(self, split: str) -> Batch:
        """The whole split as arrays (images and audio decoded on first use)."""
        self._check_split(split)
        with self._lock:
            if split not in self._decoded:
                self._decode(split)
            if split not in self._encoded:
                rows = [self._rows[i] for i in self._splits[split]]
                enc = {m: np.array([self._ids(r, m) for r in rows], np.int32)
                       .reshape(len(rows), self.max_len) for m in self.text_modalities}
                enc[LABEL] = np.array([self._label_ids[r.label] for r in rows], np.int32)
                if self.on_error == "absent":
                    enc |= {mask_key(m): np.array([m not in r.absent for r in rows], bool)
                            for m in self.kinds}
                self._encoded[split] = enc
        data = self._decoded[split] | self._encoded[split]
        return {m: data[m] for m in self.spec}

    def _ids(self, row: _Row, modality: str) -> np.ndarray:
        if modality in row.absent:
            return np.zeros(self.max_len, np.int32)
        return self.vocab.encode(row.texts[modality], self.max_len)

    # -- the Dataset interface ------------------------------------------------------------

    def resolved_settings(self) -> dict:
        return {"path": str(self.path.resolve())}

    def size(self, split: str) -> int:
        """Rows of ``split`` (decoding a split drops rows it finds unreadable, when skipping)."""
        return len(self._splits[self._check_split(split)])

    def source(self, split: str, *, seed: int) -> ArraySource | LazySource:
        self._check_split(split)
        if self._decodes_once(split):
            return ArraySource(self.arrays(split))
        return LazySource(self.size(split), partial(self._read, split))

    def lines(self, split: str) -> list[int]:
        """The manifest lines of ``split``'s rows, in the order of :meth:`arrays`."""
        return [self._rows.lines[i] for i in self._splits[self._check_split(split)]]

    def encode(self, modality: str, value: str) -> np.ndarray:
        """A path (image, audio, text_file; relative to the working directory) or the
        text itself, as one example's array."""
        kind = self.kinds.get(modality)
        if kind is None:
            raise DataError(f"no modality {modality!r}{did_you_mean(modality, self.kinds)}; "
                            f"this data set has: {', '.join(self.kinds)}")
        if kind in DECODED:
            return self._load(kind, value)
        text = _read_text_file(Path(value)) if kind == "text_file" else value
        return self.vocab.encode(text, self.max_len)

    def save(self, run_dir: Path) -> None:
        if self.vocab is not None:
            self.vocab.save(Path(run_dir) / VOCAB_FILE)

    def restore(self, run_dir: Path) -> None:
        if self.vocab is not None:
            self.vocab = _restore_vocab(Path(run_dir) / VOCAB_FILE,
                                        self.spec[self.text_modalities[0]].metadata["vocab_size"],
                                        run_dir=Path(run_dir))
            self._encoded.clear()


def _sorted_labels(labels: set[str]) -> list[str]:
    """Sorted; numerically when every label is an integer (so "10" follows "9")."""
    if all(_is_int(s) for s in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _read_text_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: text file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def _restore_vocab(path: Path, expected: int, *, run_dir: Path) -> Vocabulary:
    if not path.is_file():
        raise DataError(f"{path}: not found; the run directory holds no vocabulary")
    vocab = Vocabulary.load(path, run_dir=run_dir)
    if len(vocab) != expected:
        raise DataError(f"{path}: the saved vocabulary has {len(vocab)} ids, but this data set's "
                        f"vocab_size is {expected}; the run was trained on other data or settings")
    return vocab
