"""The ``packed`` data set: what ``fusionjax pack`` wrote, read back without decoding.

Training reads only the packed folder: ``packed.json`` (the spec, the splits, the label
set) and one ArrayRecord file per split, each example one record
(:mod:`fusionjax.data.packing`).  Neither the original files nor the data set that read
them are needed, nor is anything decoded.  Reading *new* inputs (``predict``, ``serve``:
``encode``, ``input_kind``, ``review``) is still the original data set's job: it is
rebuilt from the config recorded in ``packed.json`` the first time one of those is
called, and restored from the files its ``save`` wrote when packing (e.g. the
vocabulary), so that a new input is read exactly as the packed examples were.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Literal

import numpy as np

from fusionjax.data.locate import shipped_root
from fusionjax.data.packing import (
    META,
    PackedSource,
    RecordCodec,
    build_dataset,
    read_meta,
    spec_from_meta,
)
from fusionjax.errors import ComponentError, ConfigError, DataError, capped
from fusionjax.interfaces import Dataset


class PackedDataset(Dataset):
    """A data set packed by ``fusionjax pack``: every example decoded once, in one
    ArrayRecord file per split, read back with random access (no decoding, nothing held
    in memory). Its spec, splits, sizes and label set are those of the data set it was
    packed from, recorded in ``packed.json``, and so is that data set's config: it is
    rebuilt, lazily, only to read new inputs (``predict``, ``serve``), which therefore
    need the original files where they were when packed; training and evaluation do
    not. A data set that draws its train split anew each epoch (the digit sets) was
    packed as one draw, which every epoch reads. See
    [data.md](data.md#data-bigger-than-memory).

    Parameters:
        path: The folder ``fusionjax pack`` wrote (relative to the working directory).
    """

    # packed from `synthetic`, {modalities = ["image", "text"], num_classes = 3, train_size = 12,
    # test_size = 6, image_size = 4, seq_len = 4, vocab_size = 10}: no file to find
    test_settings = {"path": str(shipped_root() / "samples" / "synthetic.packed")}

    def __init__(self, *, path: str):
        self.path = Path(path).expanduser()
        self.meta = read_meta(self.path)
        self.spec = spec_from_meta(self.meta)
        self.num_classes = self.meta.get("num_classes")
        names = self.meta.get("label_names")
        self.label_names = tuple(names) if names is not None else None
        self.problems = list(self.meta.get("problems", []))
        self.absent_inputs = {m: list(v) for m, v in self.meta.get("absent_inputs", {}).items()}
        self._codec = RecordCodec(self.spec)
        self._sources: dict[str, PackedSource] = {}
        for split in self.splits:  # every file there, of the size packed.json says
            self._source(split)
        self._original: Dataset | None = None  # the data set it was packed from, when needed
        self._restore_from = self.path  # where its saved files are: here, or a run's
        self._lock = threading.Lock()

    def __getstate__(self):  # a worker process needs the sources, not the original data set
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_original")}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock(), _original=None)

    # -- the packed examples --------------------------------------------------------------

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.meta["splits"])

    def size(self, split: str) -> int:
        self.check_split(split, name=str(self.path))
        return self.meta["splits"][split]["examples"]

    def source(self, split: str, *, seed: int) -> PackedSource:
        """The split's records; ``seed`` changes nothing (what was packed is one draw)."""
        self.check_split(split, name=str(self.path))
        return self._source(split)

    def _source(self, split: str) -> PackedSource:
        if split not in self._sources:
            entry = self.meta["splits"][split]
            self._sources[split] = PackedSource(self.path / entry["file"], self._codec,
                                                entry["examples"])
        return self._sources[split]

    def resolved_settings(self) -> dict:
        return {"path": str(self.path.resolve())}

    def save(self, run_dir: Path) -> None:
        """Copies the files the original data set saved when packing (no need to rebuild it)."""
        for name in self.meta.get("saved", []):
            src, dst = self.path / name, Path(run_dir) / name
            try:
                if src.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, dst)
            except OSError as e:
                raise DataError(f"{src}: cannot be copied into {run_dir} ({e.strerror or e}); "
                                f"{self.path / META} lists it among the files the packed data "
                                f"set saved") from None

    def restore(self, run_dir: Path) -> None:
        with self._lock:
            self._restore_from = Path(run_dir)
            if self._original is not None:
                self._original.restore(self._restore_from)

    # -- new inputs: the original data set's ----------------------------------------------

    def input_kind(self, modality: str) -> Literal["file", "text"]:
        return self.original().input_kind(modality)

    def review(self, modality: str, x: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        return self.original().review(modality, x)

    def encode(self, modality: str, value: str) -> np.ndarray:
        return self.original().encode(modality, value)

    def original(self) -> Dataset:
        """The data set it was packed from, rebuilt from ``packed.json`` on first use and
        restored from the files it saved; a :class:`DataError` when it cannot be."""
        with self._lock:
            if self._original is None:
                self._original = self._rebuild()
            return self._original

    def _rebuild(self) -> Dataset:
        config = self.meta.get("data")
        file = self.path / META
        if config is None:
            raise NotImplementedError(f"{file} records no data config: the packed data reads "
                                      f"no new inputs")
        try:
            original, _ = build_dataset(dict(config))
            original.restore(self._restore_from)
        except (ConfigError, ComponentError, DataError) as e:
            raise DataError(f"{file}: the data set it was packed from ({config['type']}) reads new "
                            f"inputs, and it cannot be rebuilt from the config recorded there: "
                            f"{capped(str(e), 1500)}\n  hint: its files must be where they were "
                            f"when it was packed") from None
        changed = [f"{k}: {original.spec.get(k)} when rebuilt, {s} when packed"
                   for k, s in self.spec.items()
                   if k in original.spec and (original.spec[k].shape, np.dtype(original.spec[k].dtype))
                   != (s.shape, np.dtype(s.dtype))]
        if changed or set(original.modalities) != set(self.modalities):
            raise DataError(f"{file}: the data set it was packed from ({config['type']}) no longer "
                            f"gives the packed spec ({'; '.join(changed) or 'other modalities'}): "
                            f"new inputs would not be read as the packed examples were")
        return original
