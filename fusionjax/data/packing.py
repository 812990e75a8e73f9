"""Packed data: a data set's examples, decoded once, in one ArrayRecord file per split.

:func:`pack` reads every example of each split of a data set -- in index order, as
``dataset.source(split, seed=0)`` gives them, decoding their files once -- and writes
them to ``OUT_DIR/<split>.array_record``, one record per example, with a description,
``OUT_DIR/packed.json``.  The ``packed`` data set (``fusionjax_plugins/datasets/packed.py``)
reads them back through :class:`PackedSource`: an epoch then costs a read and a copy per
example, not a decode, and holds nothing in memory but the batches in flight.

**A record** is one example, self-describing and decoded without pickle::

    b"FJXP"  uint32 (little-endian): n  n bytes: a JSON header  the arrays

The header lists ``[key, dtype, shape]`` for each array, in the order the arrays
follow; ``dtype`` is NumPy's ``dtype.str`` (``"<f4"``, ``"<i4"``, ``"|b1"``: bool and
numbers only, never objects).  Each array is its C-order little-endian bytes, starting
at the next multiple of :data:`ALIGN` bytes from the record's start (zero padding
before it), so that the arrays of a record read into an aligned buffer are aligned; the
record ends where its last array ends.  The header says where everything is, so a
record cut short or grown is found before any array is read.  Reading checks each
distinct header once against ``packed.json``'s spec (keys, dtypes, shapes), then
decodes with ``np.frombuffer``.

**packed.json** holds the format and its :data:`VERSION`, the fusionjax version that
wrote it, the spec of every key (shape, dtype, metadata), per split the example count,
its file and its size, ``num_classes`` and ``label_names``, the resolved config of the
data set it was packed from (its ``type`` and parameters: the packed data set rebuilds
it, only to read *new* inputs, ``encode``), the files that data set's ``save`` wrote
(e.g. a vocabulary), and the examples it skipped or found inputs absent in.

A data set that draws its examples anew each epoch (the digit sets' train split: a
new pairing of images and recordings every epoch) is packed as **one draw**, that of
seed 0: every epoch of a packed run reads that draw.  ``packed.json`` says so
(``"varies_with_seed": true`` for the split), and :func:`pack` logs it.

Writing goes to a hidden folder beside ``OUT_DIR`` (``.<name>.packing-<pid>``), renamed
to ``OUT_DIR`` only when every file is complete: an interrupted pack never leaves a
folder that looks packed.  An existing packed folder is replaced only with
``overwrite=True``; any other non-empty folder, never.
"""

from __future__ import annotations

import json
import math
import operator
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusionjax.errors import ConfigError, DataError, capped, shown
from fusionjax.interfaces import LABEL, Dataset, FieldSpec

FORMAT = "fusionjax.packed"
VERSION = 1
META = "packed.json"
SUFFIX = ".array_record"
MAGIC = b"FJXP"
ALIGN = 16
WRITER_OPTIONS = "group_size:1"  # one record per chunk: random access (zstd-compressed)
MAX_HEADER = 1 << 16  # bytes of one record's JSON header
MAX_META = 64 << 20  # bytes of packed.json
MAX_LISTED = 1000  # skipped examples / absent inputs kept in packed.json (the first ones)
SEED = 0  # the seed each split is read with
PROGRESS_SECONDS = 30.0
KINDS = "biufc"  # dtype kinds a record may hold: bool, signed, unsigned, float, complex
_PREFIX = struct.Struct("<4sI")


# ---- one record <-> one example ----------------------------------------------------------

class RecordCodec:
    """Encodes an example of ``spec`` as one record, and decodes (and checks) records."""

    def __init__(self, spec: Mapping[str, FieldSpec]):
        self.spec = dict(spec)
        self._want = {k: (np.dtype(s.dtype), tuple(s.shape)) for k, s in self.spec.items()}
        self._layouts: dict[bytes, list[tuple[str, np.dtype, tuple[int, ...], int, int]]] = {}

    def encode(self, example: Mapping[str, Any], *, where: str) -> bytes:
        """``example`` as a record; a :class:`DataError` (naming ``where``) unless it holds
        exactly the spec's keys, each of the spec's shape and dtype."""
        if set(example) != set(self.spec):
            raise DataError(f"{where}: has keys {sorted(map(str, example))}; the data set's spec "
                            f"lists {sorted(self.spec)}")
        arrays, header = [], []
        for key, (dtype, shape) in self._want.items():
            x = np.asarray(example[key])
            if x.shape != shape or x.dtype != dtype:
                raise DataError(f"{where}: {key!r} is {x.dtype} {list(x.shape)}; the data set's "
                                f"spec says {dtype} {list(shape)}")
            x = x.astype(dtype.newbyteorder("<"), copy=False)
            arrays.append(x)
            header.append([key, x.dtype.str, list(shape)])
        head = json.dumps(header, separators=(",", ":")).encode()
        parts, at = [_PREFIX.pack(MAGIC, len(head)), head], _PREFIX.size + len(head)
        for x in arrays:
            pad = -at % ALIGN
            parts += [b"\0" * pad, x.tobytes()]
            at += pad + x.nbytes
        return b"".join(parts)

    def decode(self, record: bytes, *, where: str) -> dict[str, np.ndarray]:
        """The example in ``record`` (writable arrays of the spec's shapes and dtypes); a
        :class:`DataError` naming ``where`` for a record that is not one of this spec."""
        if len(record) < _PREFIX.size or record[:4] != MAGIC:
            raise DataError(f"{where}: not a fusionjax packed record (it begins "
                            f"{shown(bytes(record[:8]))})")
        (_, n) = _PREFIX.unpack_from(record)
        head = bytes(record[_PREFIX.size:_PREFIX.size + n])
        if n > MAX_HEADER or len(head) < n:
            raise DataError(f"{where}: cut short or damaged (a {n:,}-byte header in a "
                            f"{len(record):,}-byte record)")
        layout = self._layouts.get(head)
        if layout is None:
            layout = self._layout(head, _PREFIX.size + n, where)
            if len(self._layouts) >= 64:
                self._layouts.clear()
            self._layouts[head] = layout
        end = layout[-1][4] if layout else _PREFIX.size + n
        if len(record) != end:
            what = "cut short" if len(record) < end else "longer than its header says"
            raise DataError(f"{where}: {what} ({len(record):,} bytes; its header describes "
                            f"{end:,})")
        buffer = bytearray(record)  # one copy: the arrays are writable and aligned
        out = {}
        for key, dtype, shape, start, stop in layout:
            x = np.frombuffer(buffer, dtype, (stop - start) // dtype.itemsize, start).reshape(shape)
            out[key] = x if dtype.isnative else x.astype(dtype.newbyteorder("="))
        return out

    def _layout(self, head: bytes, at: int, where: str):
        """``head`` parsed and checked against the spec: ``(key, dtype, shape, start, stop)``."""
        try:
            entries = json.loads(head)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{where}: damaged (its header is not JSON: {e})") from None
        if not isinstance(entries, list) or not all(
                isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and isinstance(e[1], str)
                and isinstance(e[2], list) for e in entries):
            raise DataError(f"{where}: damaged (its header is {shown(entries)}, not "
                            f"[[key, dtype, shape], ...])")
        layout, seen = [], set()
        for key, name, shape in entries:
            dtype, want = _plain_dtype(name), self._want.get(key)
            if dtype is None:
                problem = f"holds {shown(key)} as {shown(name)}: not a bool or numeric dtype"
            elif want is None:
                problem = f"holds {shown(key)}, which packed.json's spec does not list"
            elif key in seen:
                problem = f"holds {shown(key)} twice"
            elif tuple(shape) != want[1] or dtype.newbyteorder("=") != want[0]:
                problem = (f"holds {shown(key)} as {dtype} {shown(shape)}; packed.json's spec says "
                           f"{want[0]} {list(want[1])}")
            else:
                problem = None
            if problem:
                raise DataError(f"{where}: {problem}")
            seen.add(key)
            at += -at % ALIGN
            stop = at + dtype.itemsize * math.prod(want[1])
            layout.append((key, dtype, want[1], at, stop))
            at = stop
        if seen != set(self._want):
            raise DataError(f"{where}: lacks {sorted(set(self._want) - seen)}, which packed.json's "
                            f"spec lists")
        return layout


def _plain_dtype(name: str) -> np.dtype | None:
    """The dtype ``name`` spells when it is a plain bool or numeric one, else None."""
    if len(name) > 16:
        return None
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError):
        return None
    return dtype if dtype.kind in KINDS and dtype.fields is None and dtype.shape == () else None


# ---- reading a packed folder -------------------------------------------------------------

class PackedSource:
    """One packed split: ``source[i]`` decodes record ``i`` of ``file``
    (:class:`grain.sources.ArrayRecordDataSource`, which opens the file again, lazily,
    in each process it is pickled into)."""

    def __init__(self, file: Path, codec: RecordCodec, examples: int):
        import grain

        self.file, self.codec = file, codec
        try:
            self._records = grain.sources.ArrayRecordDataSource(str(file))
        except RuntimeError as e:
            what = ("not found" if not file.exists() else
                    f"not a readable ArrayRecord file ({capped(str(e), 300)})")
            raise DataError(f"{file}: {what}\n  hint: pack the data again (`fusionjax pack CONFIG "
                            f"{file.parent} --overwrite`)") from None
        if len(self._records) != examples:
            raise DataError(f"{file}: holds {len(self._records):,} records, but {META} says "
                            f"{examples:,}: the file is not the one packed with it\n  hint: pack "
                            f"the data again (`fusionjax pack CONFIG {file.parent} --overwrite`)")
        self._n = examples

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = operator.index(index)
        if not 0 <= index < self._n:
            raise IndexError(f"record {index} of {self._n} ({self.file})")
        where = f"{self.file}, record {index}"
        try:
            record = self._records[index]
        except RuntimeError as e:
            raise DataError(f"{where}: cannot be read ({capped(str(e), 300)})") from None
        return self.codec.decode(record, where=where)


def read_meta(folder: Path) -> dict[str, Any]:
    """``folder/packed.json``, checked: a :class:`ConfigError` (at ``path``) when ``folder``
    is not a packed folder, a :class:`DataError` naming the file when its description is
    unreadable, of another format version, or malformed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{shown(str(folder))} " + ("does not exist" if not folder.exists() else
                          "is not a folder"), key="path",
                          hint="the folder `fusionjax pack CONFIG OUT_DIR` wrote")
    file = folder / META
    if not file.is_file():
        raise ConfigError(f"{shown(str(folder))} holds no {META}: it is not packed data (or its "
                          f"packing did not finish)", key="path",
                          hint="pack a data set into it: `fusionjax pack CONFIG OUT_DIR`")
    try:
        with file.open("rb") as f:
            raw = f.read(MAX_META + 1)
        if len(raw) > MAX_META:
            raise DataError(f"{file}: larger than {MAX_META >> 20} MiB; not a packed data description")
        meta = json.loads(raw)
    except OSError as e:
        raise DataError(f"{file}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{file}: not JSON ({capped(str(e), 300)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{file}: not a description of packed data (it has no "
                        f"\"format\": {json.dumps(FORMAT)})")
    if meta.get("version") != VERSION:
        from fusionjax import __version__

        raise DataError(f"{file}: packed data of format version {shown(meta.get('version'))} "
                        f"(written by fusionjax {shown(meta.get('fusionjax'))}); fusionjax "
                        f"{__version__} reads version {VERSION}\n  hint: pack the data again with "
                        f"this fusionjax (`fusionjax pack CONFIG {folder} --overwrite`)")
    _check_meta(meta, file)
    return meta


def _check_meta(meta: dict, file: Path) -> None:
    def bad(what: str, value: Any) -> DataError:
        return DataError(f"{file}: {what} is {shown(value)}; the file is damaged\n  hint: pack the "
                         f"data again (`fusionjax pack CONFIG {file.parent} --overwrite`)")

    spec = meta.get("spec")
    if not isinstance(spec, dict) or LABEL not in spec:
        raise bad("\"spec\"", spec)
    for key, s in spec.items():
        if not (isinstance(s, dict) and isinstance(s.get("shape"), list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in s["shape"])
                and isinstance(s.get("dtype"), str) and _plain_dtype(s["dtype"]) is not None
                and isinstance(s.get("metadata", {}), dict)):
            raise bad(f"the spec of {shown(key)}", s)
    splits = meta.get("splits")
    if not isinstance(splits, dict) or "train" not in splits:
        raise bad("\"splits\"", splits)
    for name, s in splits.items():
        if not (isinstance(s, dict) and isinstance(s.get("examples"), int) and s["examples"] >= 0
                and _plain_name(s.get("file"))):
            raise bad(f"split {shown(name)}", s)
    n = meta.get("num_classes")
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise bad("\"num_classes\"", n)
    names = meta.get("label_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(x, str) for x in names)):
        raise bad("\"label_names\"", names)
    saved = meta.get("saved", [])
    if not (isinstance(saved, list) and all(_plain_name(x) for x in saved)):
        raise bad("\"saved\"", saved)
    if meta.get("data") is not None and not (isinstance(meta["data"], dict)
                                             and isinstance(meta["data"].get("type"), str)):
        raise bad("\"data\"", meta["data"])


def _plain_name(name: Any) -> bool:
    """A file name inside the packed folder (no folder part, not hidden, not ``..``)."""
    return isinstance(name, str) and bool(name) and name == Path(name).name and not name.startswith(".")


def spec_from_meta(meta: Mapping[str, Any]) -> dict[str, FieldSpec]:
    """``packed.json``'s spec as :class:`FieldSpec` s (lists in metadata back to tuples)."""
    return {k: FieldSpec(tuple(s["shape"]), s["dtype"], _tuples(s.get("metadata", {})))
            for k, s in meta["spec"].items()}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


# ---- building the data set of a config ---------------------------------------------------

def build_dataset(section: Any, *, key: str = "data") -> tuple[Dataset, dict[str, Any]]:
    """The data set a config's ``[data]`` section describes, and its resolved config
    (:func:`fusionjax.assembly.assemble_dataset`)."""
    from fusionjax.assembly import assemble_dataset

    return assemble_dataset(section, key=key)


# ---- writing -----------------------------------------------------------------------------

def pack(dataset: Dataset, out_dir: str | Path, *, splits: Sequence[str] | None = None,
         config: Mapping[str, Any] | None = None, overwrite: bool = False, workers: int = 0,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``dataset``'s ``splits`` (default: all; ``"train"`` always) to ``out_dir``.

    ``config``: the data set's resolved config (``type`` and parameters, e.g. the second
    value of :func:`build_dataset`), recorded so that the packed data can rebuild it to
    read new inputs; without it, the packed data reads no new inputs.  ``workers``:
    processes that read (decode) the examples (Grain's ``mp_prefetch``, order kept); 0:
    this one.  ``log`` receives a line per split (examples, bytes, seconds), a progress
    line every 30 s, and a note for a split that varies with the seed (one draw packed).

    Returns the description written to ``packed.json``, each split's entry with the
    ``seconds`` it took added.  Refuses (:class:`ConfigError`) an ``out_dir`` that holds
    packed data unless ``overwrite``, and any other non-empty folder."""
    out = Path(os.path.abspath(Path(out_dir).expanduser()))
    chosen = _splits(dataset, splits, config.get("type") if config else None)
    check_out_dir(out, overwrite)
    from fusionjax import __version__

    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "fusionjax": __version__,
        "data": _jsonable(dict(config), "the data config") if config is not None else None,
        "seed": SEED,
        "note": ("each split as the data set's source(split, seed=0) reads it, in index order; "
                 "a split that varies_with_seed (drawn anew each epoch) is one draw"),
        "spec": {k: {"shape": list(s.shape), "dtype": str(np.dtype(s.dtype)),
                     "metadata": _jsonable(dict(s.metadata or {}), f"the metadata of {k!r}")}
                 for k, s in dataset.spec.items()},
        "num_classes": dataset.num_classes,
        "label_names": list(dataset.label_names) if dataset.label_names is not None else None,
        "splits": {},
    }
    codec = RecordCodec(dataset.spec)
    log(f"packing {meta['data']['type'] if config is not None else type(dataset).__name__} "
        f"({', '.join(chosen)}) into {out}")
    tmp = out.parent / f".{out.name}.packing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    timing: dict[str, float] = {}
    try:
        tmp.mkdir(parents=True)
        problems: dict[str, None] = {}
        for split in chosen:
            start = time.perf_counter()
            entry, found = _write_split(dataset, split, tmp / f"{split}{SUFFIX}", codec, workers, log)
            problems.update(dict.fromkeys(found))
            meta["splits"][split] = entry
            timing[split] = time.perf_counter() - start
            log(f"{split}: {entry['examples']:,} examples, {entry['bytes']:,} bytes, "
                f"{timing[split]:.1f} s")
            if entry["varies_with_seed"]:
                log(f"note: {split} is drawn anew each epoch by this data set; the packed data "
                    f"holds one draw (seed {SEED}), which every epoch will read")
        problems.update(dict.fromkeys(dataset.problems))
        absent = {m: [capped(str(x), 500) for x in v] for m, v in dataset.absent_inputs.items() if v}
        meta["problems"] = [capped(str(p), 500) for p in list(problems)[:MAX_LISTED]]
        meta["problem_count"] = len(problems)
        meta["absent_inputs"] = {m: v[:MAX_LISTED] for m, v in absent.items()}
        meta["absent_counts"] = {m: len(v) for m, v in absent.items()}
        written = {p.name for p in tmp.iterdir()}
        dataset.save(tmp)  # what reading new inputs needs (a vocabulary), copied into runs
        meta["saved"] = sorted(p.name for p in tmp.iterdir() if p.name not in written)
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**meta, "splits": {s: {**e, "seconds": timing[s]} for s, e in meta["splits"].items()}}


def _splits(dataset: Dataset, splits: Sequence[str] | None, name: str | None) -> list[str]:
    """The splits to pack, in the data set's order: those asked for, and always "train"
    (every data set has one; packed data without it could not be trained from)."""
    if splits is not None:
        for split in splits:
            dataset.check_split(split, key="splits", name=name)
    chosen = [s for s in dataset.splits if splits is None or s in splits or s == "train"]
    for split in chosen:
        if not _plain_name(f"{split}{SUFFIX}"):
            raise DataError(f"data set {name or type(dataset).__name__} has a split named "
                            f"{shown(split)}, which cannot name its file in the packed folder")
    return chosen


def check_out_dir(out: str | Path, overwrite: bool = False) -> None:
    """A :class:`ConfigError` when ``out`` must not be packed into: a file, a folder that
    holds anything but packed data, or packed data unless ``overwrite`` (checked by
    :func:`pack`, and by the command line before the data set is built)."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    if not out.name:
        raise ConfigError(f"cannot pack into {shown(str(out))}", hint="give a new folder to pack into")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{shown(str(out))} is a file, not a folder",
                          hint="give a new folder (or an empty one) to pack into")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / META).is_file():
        raise ConfigError(f"{shown(str(out))} is a folder that holds other files, not packed "
                          f"data: it is never overwritten", hint="give a new or an empty folder")
    if not overwrite:
        raise ConfigError(f"{shown(str(out))} already holds packed data",
                          hint="give a new folder, or replace it: --overwrite (overwrite=True)")


def _swap(tmp: Path, out: Path) -> None:
    """``tmp`` renamed to ``out``; an ``out`` there (empty, or packed data) is replaced."""
    if out.is_dir():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _write_split(dataset: Dataset, split: str, file: Path, codec: RecordCodec, workers: int,
                 log: Callable[[str], None]) -> tuple[dict[str, Any], list[str]]:
    """Every example of ``split`` written to ``file``: its ``packed.json`` entry, and the
    problems the data set found while reading them."""
    from array_record.python.array_record_module import ArrayRecordWriter

    source = dataset.source(split, seed=SEED)
    n = len(source)
    varies = _varies_with_seed(dataset, split, source)
    writer = ArrayRecordWriter(str(file), WRITER_OPTIONS)
    found: list[str] = []
    count, last = 0, time.perf_counter()
    try:
        for i, (example, problems) in enumerate(_examples(dataset, split, source, n, workers)):
            record = codec.encode(example, where=f"{split} example {i} of {type(dataset).__name__}")
            try:
                writer.write(record)
            except RuntimeError as e:  # e.g. no space left on the device
                raise DataError(f"{file}: cannot be written ({capped(str(e), 300)})") from None
            found += problems
            count += 1
            if time.perf_counter() - last > PROGRESS_SECONDS:
                last = time.perf_counter()
                log(f"{split}: {count:,} / {n:,} examples ({100 * count // max(n, 1)}%)")
        try:
            writer.close()  # writes the index: the file is complete only now
        except RuntimeError as e:
            raise DataError(f"{file}: cannot be written ({capped(str(e), 300)})") from None
    finally:
        if writer.is_open():
            try:
                writer.close()
            except RuntimeError:
                pass  # already failing: the folder is removed
    return {"examples": count, "file": file.name, "bytes": file.stat().st_size,
            "varies_with_seed": varies}, found


def _varies_with_seed(dataset: Dataset, split: str, source: Any) -> bool:
    """Whether the split's first examples differ under another seed (drawn each epoch)."""
    n = min(len(source), 3)
    if n == 0:
        return False
    other = dataset.source(split, seed=SEED + 1)
    return len(other) != len(source) or any(
        not all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
        for a, b in ((source[i], other[i]) for i in range(n)))


class _Read:
    """Index -> (example, the problems the data set noted reading it): the map step of
    :func:`_examples`, pickled into each worker process (which opens its own source)."""

    def __init__(self, dataset: Dataset, split: str, source: Any = None):
        self.dataset, self.split, self.source = dataset, split, source

    def __getstate__(self):
        return {"dataset": self.dataset, "split": self.split, "source": None}

    def __call__(self, index: int) -> tuple[dict[str, Any], list[str]]:
        if self.source is None:
            self.source = self.dataset.source(self.split, seed=SEED)
        before = len(self.dataset.problems)
        example = self.source[int(index)]
        return example, [str(p) for p in self.dataset.problems[before:]]


def _examples(dataset: Dataset, split: str, source: Any, n: int, workers: int
              ) -> Iterator[tuple[dict[str, Any], list[str]]]:
    read = _Read(dataset, split, source)
    if workers <= 0:
        yield from map(read, range(n))
        return
    import grain

    from fusionjax.data.pipeline import absl_flags_parsed

    absl_flags_parsed()
    ds = grain.MapDataset.range(n).map(read).to_iter_dataset(grain.ReadOptions(num_threads=0))
    it = iter(ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers)))
    try:
        yield from it
    finally:
        it.close()  # the worker processes


def _jsonable(value: Any, what: str) -> Any:
    """``value`` as JSON holds it (tuples as lists, NumPy scalars as numbers); a
    :class:`DataError` for anything JSON cannot hold."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, what) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, what) for k, v in value.items()}
    raise DataError(f"{what} holds {shown(value)}, which packed.json (JSON) cannot hold")
