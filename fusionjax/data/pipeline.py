"""The data pipeline: every data set's examples ordered, split over processes, augmented,
batched and prefetched onto the devices, by Grain, the same way for every data set.

A data set gives only random access to a split's examples (:meth:`Dataset.source
<fusionjax.interfaces.Dataset.source>`) and the order an epoch reads them in
(:meth:`Dataset.order <fusionjax.interfaces.Dataset.order>`).  Here, in Grain's terms:

* the *slots* of a run are ``grain.MapDataset.range``: slot ``i`` of process ``p`` is
  the position ``(i // b) * B + p * b + i % b`` of the run's example stream (``B`` the
  global batch, ``b = B / processes`` this process's rows of it), so each process reads
  only its own rows and together they read each global batch exactly once;
* a *map* step turns a position into an example: epoch ``e = position // (steps_per_epoch
  * B)`` reads ``dataset.source("train", seed=epoch_seed(seed, e))`` at
  ``dataset.order(...)[position % ...]`` (decoding its files, for a file-backed data
  set) and applies the configured augmentations with ``default_rng([seed, e, index])``;
* ``batch`` stacks ``b`` examples; ``mp_prefetch`` runs all of the above in
  ``data.workers`` processes (0: in a thread of this one); a last map places each batch
  on the devices, and a thread prefetches ``PREFETCH`` batches ahead of the step.

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
            ``mp_prefetch``); 0: a thread of the training process. On a 2-core machine
            0 is fastest for the bundled data sets (``benchmarks/README.md``); a worker
            pays off when decoding files costs more than a step's share of a core.
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

    def __call__(self, position: int) -> dict:
        epoch, at = divmod(int(position), self.per_epoch) if self.per_epoch else (0, int(position))
        source, order = self._epoch(epoch)
        index = int(order[at])
        example = source[index]
        if self.augment is not None:
            example = self.augment(example, np.random.default_rng([self.seed, epoch, index]))
        return example


class _Slots:
    """Slot ``i`` of process ``process`` of ``processes`` -> its position in the stream."""

    def __init__(self, batch_size: int, process: int, processes: int):
        self.global_batch, self.local = batch_size, batch_size // processes
        self.offset = process * self.local

    def __call__(self, slot: int) -> int:
        g, k = divmod(int(slot), self.local)
        return g * self.global_batch + self.offset + k


def one_pass(dataset: Dataset, split: str, batch_size: int, *, seed: int, shuffle: bool,
             drop_remainder: bool, augment: Augment | None = None) -> Iterator[Batch]:
    """One pass over ``split`` in this process, in ``dataset.order(split, seed=seed,
    shuffle=shuffle)``; ``augment`` (e.g. a corruption) is applied with
    ``default_rng([seed, 0, index])``."""
    n = dataset.size(split)
    if n == 0:
        return iter(())
    read = _Reader(dataset, split, seed, shuffle=shuffle, per_epoch=None, augment=augment)
    ds = grain.MapDataset.range(n).map(read).batch(batch_size, drop_remainder=drop_remainder)
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
        local = batch_size // processes
        read = _Reader(dataset, "train", seed, shuffle=True, per_epoch=per_epoch * batch_size,
                       augment=augment)
        ds = (grain.MapDataset.range(self.first * local, steps * local)
              .map(_Slots(batch_size, process, processes))
              .map(read)
              .batch(local, drop_remainder=True)
              .to_iter_dataset(_READ))
        if self.workers:
            _absl_flags_parsed()  # Grain's worker processes read absl flags (their defaults)
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


def _absl_flags_parsed() -> None:
    """Grain reads its settings from absl flags, which a program that is not an absl app
    never parses: take their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
