"""The data pipeline: every data set's examples ordered, split over processes, augmented,
batched and prefetched onto the devices, by Grain, the same way for every data set.

A data set gives only random access to a split's examples (:meth:`Dataset.source
<fusionjax.interfaces.Dataset.source>`) and the order an epoch reads them in
(:meth:`Dataset.order <fusionjax.interfaces.Dataset.order>`).  Here, in Grain's terms:

* the run's batches are ``grain.MapDataset.range(steps)``; a *map* step reads batch
  ``g``: this process's rows of it, the positions ``g * B + p * b + [0, b)`` of the
  run's example stream (``B`` the global batch, ``b = B / processes``), so each process
  reads only its own rows and together they read each global batch exactly once;
* a position is an example: epoch ``e = position // (steps_per_epoch * B)`` reads
  ``dataset.source("train", seed=epoch_seed(seed, e))`` at ``dataset.order(...)[position
  % ...]`` (decoding its files, for a file-backed data set; a whole batch in one call
  when the source has ``read_many``), and the configured augmentations are applied to
  each example with ``default_rng([seed, e, index])``;
* ``mp_prefetch`` runs all of the above in ``data.workers`` processes (0: in a thread of
  this one); a last map places each batch on the devices, and a thread prefetches
  ``PREFETCH`` batches ahead of the step.

Everything an example is depends only on (seed, epoch, index): the number of workers,
the number of processes and a resume change nothing.  The iterator's state (Grain's,
a few integers) is saved with every checkpoint, so a resumed run continues at the
batch it stopped at without reading, or skipping over, the batches before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grain
import numpy as np

from fusionjax.errors import ConfigError

if TYPE_CHECKING:
    from fusionjax.interfaces import Batch, Dataset

Augment = Callable[[dict, np.random.Generator], dict]
PREFETCH = 2  # batches placed on the devices ahead of the step
_READ = grain.ReadOptions(num_threads=1, prefetch_buffer_size=PREFETCH)
_IN_ORDER = grain.ReadOptions(num_threads=0)  # one pass: read as the caller asks, no thread


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded ``seed`` (its order, its draws)."""
    return seed * 1_000_003 + epoch


@dataclass(frozen=True)
class PipelineSettings:
    """How examples reach the train step (the ``data`` section's own keys, beside the data
    set's parameters).

    Parameters:
        workers: Processes that read, decode and augment training batches (Grain's
            ``mp_prefetch``); 0: a thread of the training process. A worker costs 4-5 s
            of start-up and pays off when reading a batch costs a good part of a step:
            decoding PNG + WAV files per read on 2 cores, 0 / 1 / 2 workers trained at
            2,031 / 2,967 / 3,289 examples/s (``benchmarks/README.md``). The in-memory
            bundled data sets read a batch in 0.1-1 ms and need none.
        augment: Modality → a list of augmentations, applied in order to training
            examples only: ``augment.image = [{type = "affine", max_shift = 2}]``
            ([data.md](data.md#augmentation)).
    """

    workers: int = 0
    augment: dict | None = None

    KEYS = ("workers", "augment")

    def __post_init__(self):
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"must be an integer >= 0, got {self.workers!r}", key="data.workers",
                              hint="0 reads in a thread of the training process")


class _Reader:
    """Position -> example: the map step (pickled into each worker process)."""

    def __init__(self, dataset: Dataset, split: str, seed: int, *, shuffle: bool,
                 per_epoch: int | None, augment: Augment | None):
        self.dataset, self.split, self.seed, self.shuffle = dataset, split, seed, shuffle
        self.per_epoch, self.augment = per_epoch, augment  # per_epoch None: one pass, seed as given
        self._epochs: dict[int, tuple[Any, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_epochs", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state, _epochs={}, _lock=threading.Lock())

    def _epoch(self, epoch: int):
        with self._lock:
            if epoch not in self._epochs:
                seed = self.seed if self.per_epoch is None else epoch_seed(self.seed, epoch)
                source = self.dataset.source(self.split, seed=seed)
                order = self.dataset.order(self.split, seed=seed, shuffle=self.shuffle)
                while len(self._epochs) >= 2:  # the epoch being read and the next one
                    del self._epochs[min(self._epochs)]
                self._epochs[epoch] = (source, order)
            return self._epochs[epoch]

    def __call__(self, positions: np.ndarray) -> Batch:
        """The examples at ``positions`` of the stream (all of one epoch), as a batch."""
        epoch = int(positions[0]) // self.per_epoch if self.per_epoch else 0
        source, order = self._epoch(epoch)
        indices = order[positions - epoch * self.per_epoch if self.per_epoch else positions]
        batch = read_many(source, indices)
        if self.augment is not None:
            batch = {k: np.array(v) for k, v in batch.items()}
            for row, index in enumerate(indices):
                example = self.augment({k: v[row] for k, v in batch.items()},
                                       np.random.default_rng([self.seed, epoch, int(index)]))
                for k, v in example.items():
                    batch[k][row] = v
        return batch


def read_many(source, indices: np.ndarray) -> Batch:
    """``source``'s examples at ``indices``, stacked: with its ``read_many`` when it has one
    (a whole batch in one call), else one example at a time."""
    many = getattr(source, "read_many", None)
    if many is not None:
        return many(indices)
    examples = [source[int(i)] for i in indices]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class _LocalBatch:
    """Batch ``g`` of the stream -> the positions of this process's rows of it (``B`` the
    global batch, ``b = B / processes`` rows each): ``g * B + process * b + [0, b)``."""

    def __init__(self, read: _Reader, batch_size: int, process: int, processes: int):
        self.read, self.global_batch = read, batch_size
        self.local = batch_size // processes
        self.offset = process * self.local

    def __call__(self, g: int) -> Batch:
        start = int(g) * self.global_batch + self.offset
        return self.read(np.arange(start, start + self.local))


class _PassBatch:
    """Batch ``j`` of one pass over ``n`` examples: positions ``[j * b, (j + 1) * b)``."""

    def __init__(self, read: _Reader, batch_size: int, n: int):
        self.read, self.batch_size, self.n = read, batch_size, n

    def __call__(self, j: int) -> Batch:
        return self.read(np.arange(int(j) * self.batch_size, min((int(j) + 1) * self.batch_size, self.n)))


def one_pass(dataset: Dataset, split: str, batch_size: int, *, seed: int, shuffle: bool,
             drop_remainder: bool, augment: Augment | None = None) -> Iterator[Batch]:
    """One pass over ``split`` in this process, in ``dataset.order(split, seed=seed,
    shuffle=shuffle)``; ``augment`` (e.g. a corruption) is applied with
    ``default_rng([seed, 0, index])``."""
    n = dataset.size(split)
    batches = n // batch_size if drop_remainder else -(-n // batch_size)
    if batches == 0:
        return iter(())
    read = _Reader(dataset, split, seed, shuffle=shuffle, per_epoch=None, augment=augment)
    ds = grain.MapDataset.range(batches).map(_PassBatch(read, batch_size, n))
    return iter(ds.to_iter_dataset(_IN_ORDER))


class TrainBatches:
    """The train split's batches for steps ``1..steps``, this process's rows of each,
    placed on the devices by ``place``.

    Epochs hold ``size // batch_size`` full batches; epoch ``e`` is read in the order of
    seed :func:`epoch_seed` ``(seed, e)``.  ``resume``: what :meth:`state` returned at the
    checkpoint a run resumes from, and ``start`` the batches consumed by then: Grain's
    iterator state continues the pipeline where it was when the worker count is the one
    it was saved with; with another, the pipeline starts afresh at batch ``start`` (the
    same batches either way: they depend only on their position)."""

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, steps: int,
                 place: Callable[[Batch], Any] = lambda b: b, process: int = 0,
                 processes: int = 1, settings: PipelineSettings = PipelineSettings(),
                 augment: Augment | None = None, start: int = 0, resume: dict | None = None):
        self.workers = settings.workers
        same = resume is not None and resume.get("workers") == self.workers
        self.first = resume["first"] if same else start  # the batch the pipeline starts at
        per_epoch = dataset.size("train") // batch_size
        read = _Reader(dataset, "train", seed, shuffle=True, per_epoch=per_epoch * batch_size,
                       augment=augment)
        ds = (grain.MapDataset.range(self.first, steps)
              .map(_LocalBatch(read, batch_size, process, processes))
              .to_iter_dataset(_READ))
        if self.workers:
            absl_flags_parsed()  # Grain's worker processes read absl flags (their defaults)
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                             per_worker_buffer_size=PREFETCH))
        ds = grain.experimental.ThreadPrefetchIterDataset(ds.map(place), prefetch_buffer_size=PREFETCH)
        self._it = iter(ds)
        if same:
            self._it.set_state(resume["grain"])

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def state(self) -> dict:
        """Where the pipeline is, as JSON: Grain's iterator state (the batches handed out
        so far, not those prefetched), the batch it started at and the worker count."""
        return {"first": self.first, "workers": self.workers, "grain": self._it.get_state()}

    def close(self) -> None:
        """Stop the prefetch thread and the worker processes."""
        self._it.close()


def absl_flags_parsed() -> None:
    """Grain reads its settings from absl flags, which a program that is not an absl app
    never parses: take their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
