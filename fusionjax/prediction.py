"""Prediction: raw inputs (a file path per modality, or the text itself) -> one batch ->
the head's typed answer (:mod:`fusionjax.answers`).

The data set reads each input exactly as it read its training examples
(:meth:`Dataset.encode`); a modality left out is absent (its mask is False and the
model zeroes it).  Nothing here depends on which head the run has: every head declares
its answer (:meth:`Head.answer`).

Reading and answering are separate steps, so that a caller (the CLI, a server) checks
every input before any compute, and answers many examples in one compiled call:
:meth:`Predictor.read` turns one example's raw inputs into arrays (raising the data
set's own errors), :meth:`Predictor.answer_many` answers a list of read examples.
Batches are padded up to a fixed set of sizes (``buckets``: 1, 2, 4, ... up to
``max_batch``), so after :meth:`Predictor.warm_up` nothing ever compiles again.

::

    predictor = fj.load_run("runs/digit_qa").predictor()
    predictor({"image": "seven.png", "audio": "three.wav", "text": "what is the sum"}).to_json()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jax
import numpy as np
from flax import nnx

from fusionjax.errors import ConfigError, did_you_mean, shown
from fusionjax.interfaces import Batch, mask_key

if TYPE_CHECKING:
    from fusionjax.answers import Answer
    from fusionjax.assembly import Assembly
    from fusionjax.rundir import Run


@dataclass(frozen=True)
class Example:
    """One example, read: an array per modality (zeros where absent) and which are present."""

    arrays: Mapping[str, np.ndarray]
    present: tuple[str, ...]
    notes: tuple[str, ...] = ()  # what the data set's review said of the inputs

    def absent(self, modalities: Sequence[str]) -> list[str]:
        return [m for m in modalities if m not in self.present]


def read_example(assembly: Assembly, inputs: Mapping[str, str]) -> Example:
    """One example from raw inputs (``{modality: path or text}``), checked and encoded by
    the run's data set; a :class:`ConfigError` for an unknown modality, the data set's
    :class:`~fusionjax.errors.DataError` for an input it cannot read.  Needs only the
    assembly (no parameters), so inputs are checked before a model loads."""
    modalities = tuple(sorted(assembly.encoders))
    for name in inputs:
        if name not in modalities:
            raise ConfigError(f"input {shown(name)}: the model has no modality {shown(name)}"
                              f"{did_you_mean(name, modalities)}",
                              hint=f"its modalities are: {', '.join(modalities)}")
    if not inputs:
        raise ConfigError("no input given", hint=f"give one or more of: {', '.join(modalities)}")
    dataset, arrays, present, notes = assembly.dataset, {}, [], []
    for m in modalities:
        field = dataset.spec[m]
        x = None
        if m in inputs:
            try:
                x = np.asarray(dataset.encode(m, inputs[m]), field.dtype)
            except NotImplementedError as e:
                raise ConfigError(f"predict: {e}") from None
            x, note = dataset.review(m, x)  # e.g. a text with no known word: absent
            notes += [note] if note else []
        if x is None:
            arrays[m] = np.zeros(field.shape, field.dtype)
        else:
            arrays[m] = np.asarray(x, field.dtype)
            present.append(m)
    if not present:
        raise ConfigError("none of the inputs can be used: " + "; ".join(notes),
                          hint=f"give one or more of: {', '.join(modalities)}")
    return Example(arrays, tuple(present), tuple(notes))


def answer_kind(assembly: Assembly, model=None) -> str:
    """The kind of :class:`~fusionjax.answers.Answer` the run's head gives, from one
    abstract forward pass (no parameters needed: ``model`` defaults to the abstract
    model); a :class:`ConfigError` for a head without a single-example answer.  The
    answer itself is probed with real parameters (without ``model``, the head's random
    initialisation): a head's answer may run them again, e.g. a decoder's beam search."""
    head = model.head if model is not None else assembly.head.build(0)
    model = model if model is not None else assembly.abstract_model()
    graphdef, state = nnx.split(model)
    spec = assembly.dataset.spec
    batch: Batch = {}
    for m in model.modalities:
        batch[m] = jax.ShapeDtypeStruct((1, *spec[m].shape), np.dtype(spec[m].dtype))
        batch[mask_key(m)] = jax.ShapeDtypeStruct((1,), np.dtype(bool))
    shapes = jax.eval_shape(lambda s, b: nnx.merge(graphdef, s)(b), state, batch)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return head.answer(zeros, label_names=assembly.dataset.label_names)[0].kind


class Predictor:
    """A loaded run's compiled forward pass, answering examples one or many at a time."""

    def __init__(self, run: Run, *, max_batch: int = 32, kind: str | None = None):
        """``kind``: the run's :func:`answer_kind`, when the caller has already checked it."""
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"must be an int >= 1, got {shown(max_batch)}", key="max_batch")
        self.run = run
        self.modalities = run.model.modalities
        self.buckets = tuple(sorted({min(2 ** i, max_batch) for i in range(max_batch.bit_length() + 1)}))
        graphdef, state = nnx.split(run.model)
        self._state = state
        self._forward = jax.jit(lambda s, b: nnx.merge(graphdef, s)(b))
        # "class", "labels", "values" or "text"; a head without an answer says so now
        self.answer_kind = kind or answer_kind(run.assembly, run.model)
        dataset = run.assembly.dataset
        self.input_kinds = {m: dataset.input_kind(m) for m in self.modalities}

    @property
    def label_names(self) -> tuple[str, ...] | None:
        return self.run.assembly.dataset.label_names

    def read(self, inputs: Mapping[str, str]) -> Example:
        """One example from raw inputs (``{modality: path or text}``): see :func:`read_example`."""
        return read_example(self.run.assembly, inputs)

    def answer_many(self, examples: Sequence[Example], *, top: int = 3) -> list[Answer]:
        """The answers for read examples, in one compiled call per ``max_batch`` of them."""
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ConfigError(f"must be an int >= 1, got {shown(top)}", key="top")
        answers: list[Answer] = []
        for start in range(0, len(examples), self.buckets[-1]):
            chunk = list(examples[start:start + self.buckets[-1]])
            size = next(b for b in self.buckets if b >= len(chunk))
            outputs = jax.device_get(self._forward(self._state, self._batch(chunk, size)))
            # the head answers the whole padded bucket (its own eager steps, e.g. a softmax,
            # then only see bucket sizes, compiled by warm_up); the padding rows are dropped
            head = self.run.model.head
            for example, answer in zip(chunk, head.answer(outputs, label_names=self.label_names, top=top)):
                answers.append(answer.with_absent(example.absent(self.modalities), example.notes))
        return answers

    def __call__(self, inputs: Mapping[str, str], *, top: int = 3) -> Answer:
        """The answer for one example given as raw inputs."""
        return self.answer_many([self.read(inputs)], top=top)[0]

    def warm_up(self) -> None:
        """Compile the forward pass and the head's answer step for every bucket size (a
        server does this at start): afterwards nothing compiles, whatever the batch."""
        for size in self.buckets:
            self.answer_many([self._empty()] * size)

    def compilations(self) -> int:
        """How many batch shapes the forward pass has been compiled for."""
        return self._forward._cache_size()

    def _empty(self) -> Example:
        spec = self.run.assembly.dataset.spec
        return Example({m: np.zeros(spec[m].shape, spec[m].dtype) for m in self.modalities},
                       (self.modalities[0],))

    def _batch(self, examples: Sequence[Example], size: int) -> Batch:
        """``examples`` stacked and padded to ``size`` rows (copies of the last one)."""
        rows = list(examples) + [examples[-1]] * (size - len(examples))
        batch: Batch = {}
        for m in self.modalities:
            batch[m] = np.stack([e.arrays[m] for e in rows])
            batch[mask_key(m)] = np.array([m in e.present for e in rows])
        return batch
