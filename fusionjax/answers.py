"""What a model answers for one example: the typed result of :meth:`Head.answer`.

Every head that can answer a question declares its answer through
:meth:`fusionjax.Head.answer`, so ``fusionjax predict``, the Python API and any server
print and serialise answers without knowing which head produced them:

* :class:`ClassAnswer`: one class, with the ranked top classes (classification);
* :class:`LabelsAnswer`: every label at or above a threshold (multi-label);
* :class:`ValuesAnswer`: real values, a number or an array of the label's shape (regression);
* :class:`TextAnswer`: a text, for heads that answer in words (sequence heads).

Each has :meth:`Answer.to_json` (a JSON-ready dict whose ``"kind"`` names the type) and
:meth:`Answer.lines` (what a terminal shows).  ``absent`` names the modalities the
example did not have.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Scored:
    """One class and its probability."""

    label: str
    class_id: int
    probability: float

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "class_id": self.class_id, "probability": self.probability}


@dataclass(frozen=True)
class Answer(abc.ABC):
    """One example's answer.  Subclasses are frozen dataclasses with a ``kind``."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The answer as JSON-ready data; ``"kind"`` says which type it is."""

    @abc.abstractmethod
    def lines(self) -> list[str]:
        """The answer as a person reads it, one line each."""

    absent: tuple[str, ...] = field(default=(), kw_only=True)
    # what the data set noticed about the inputs (e.g. an image it inverted, a text it
    # could not read a word of)
    notes: tuple[str, ...] = field(default=(), kw_only=True)

    def with_absent(self, absent: Sequence[str], notes: Sequence[str] = ()) -> Answer:
        return replace(self, absent=tuple(absent), notes=tuple(notes))

    def _absent_lines(self) -> list[str]:
        lines = [f"  (absent modalities: {', '.join(self.absent)})"] if self.absent else []
        return lines + [f"  (note: {n})" for n in self.notes]


@dataclass(frozen=True)
class ClassAnswer(Answer):
    """The most probable class, and the ``top`` ranked classes (it first)."""

    kind: ClassVar[str] = "class"
    top: tuple[Scored, ...]

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def probability(self) -> float:
        return self.top[0].probability

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "answer": self.label, "probability": self.probability,
                "top": [s.to_json() for s in self.top], "absent": list(self.absent),
                **({"notes": list(self.notes)} if self.notes else {})}

    def lines(self) -> list[str]:
        return ([f"answer: {self.label}  (probability {self.probability:.3f})"]
                + [f"  then: {s.label}  ({s.probability:.3f})" for s in self.top[1:]]
                + self._absent_lines())


@dataclass(frozen=True)
class LabelsAnswer(Answer):
    """Every label whose probability is at least ``threshold`` (``chosen``), and the
    ``top`` ranked labels whatever their probability."""

    kind: ClassVar[str] = "labels"
    chosen: tuple[Scored, ...]
    threshold: float
    top: tuple[Scored, ...]

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.chosen]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "labels": self.labels, "threshold": self.threshold,
                "predicted": [s.to_json() for s in self.chosen],
                "top": [s.to_json() for s in self.top], "absent": list(self.absent),
                **({"notes": list(self.notes)} if self.notes else {})}

    def lines(self) -> list[str]:
        return ([f"labels: {', '.join(self.labels) or '(none)'}  (probability >= {self.threshold:g})"]
                + [f"  {s.label}: {s.probability:.3f}" for s in self.top] + self._absent_lines())


@dataclass(frozen=True)
class ValuesAnswer(Answer):
    """Predicted real values: a number, or nested lists of the label's shape."""

    kind: ClassVar[str] = "values"
    value: float | list

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "absent": list(self.absent),
                **({"notes": list(self.notes)} if self.notes else {})}

    def lines(self) -> list[str]:
        text = f"value: {self.value:.6g}" if isinstance(self.value, float) else f"values: {self.value}"
        return [text] + self._absent_lines()


@dataclass(frozen=True)
class Alternative:
    """One text a search found, and its score (e.g. a log-probability)."""

    text: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "score": self.score}


@dataclass(frozen=True)
class TextAnswer(Answer):
    """A text (a transcript, a caption, an answer in words) and, where the head has
    one, its score (e.g. a log-probability); ``alternatives``: the texts a search (a
    beam) kept, best first (the answer's own text among them)."""

    kind: ClassVar[str] = "text"
    text: str
    score: float | None = None
    alternatives: tuple[Alternative, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "score": self.score,
                "alternatives": [a.to_json() for a in self.alternatives], "absent": list(self.absent),
                **({"notes": list(self.notes)} if self.notes else {})}

    def lines(self) -> list[str]:
        score = "" if self.score is None else f"  (score {self.score:.3f})"
        return ([f"text: {self.text}{score}"]
                + [f"  then: {a.text}  ({a.score:.3f})" for a in self.alternatives[1:]]
                + self._absent_lines())


def ranked(probabilities: np.ndarray, label_names: Sequence[str] | None, top: int) -> tuple[Scored, ...]:
    """The ``top`` most probable classes of one example's ``[C]`` probabilities."""
    names = label_names or tuple(str(i) for i in range(len(probabilities)))
    order = np.argsort(-probabilities, kind="stable")[: max(1, top)]
    return tuple(Scored(names[i], int(i), float(probabilities[i])) for i in order)
