"""``digit_qa``: a written digit, a spoken digit and a question about the two.

Each example is an MNIST image of digit ``a``, an FSDD recording of digit ``b``
(independent of ``a``) and an instruction, in varied wording, asking for their
sum, (absolute) difference, the larger or the smaller.  The label (``target``) is
the answer as a class, 0-18 (``"answer"``), the answer as a float32 number for
regression (``"value"``), the multi-hot float32 ``[10]`` vector of the two digits
shown and spoken, ``a`` and ``b``, for multi-label learning (``"digits"``; one bit
when they are equal), or the answer spelled out as a sentence of word tokens that
names both digits, the operation and the result (``"sentence"``, e.g. "seven plus
four is eleven"; :mod:`fusionjax.sequences`).  No single modality can answer: the
model must read the image, hear the recording and (except for ``"digits"``)
understand the question.
Train examples are re-drawn every epoch; the test examples are one fixed draw from
MNIST's test images and FSDD's test recordings.  The vocabulary is built from the
training instructions.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np

from fusionjax.data.audio import Align
from fusionjax.data.text import Vocabulary
from fusionjax.errors import ConfigError, DataError
from fusionjax.interfaces import LABEL, Batch, FieldSpec
from fusionjax.sequences import TargetVocabulary
from fusionjax_plugins.datasets.digits_base import DigitsBase

OPERATIONS = {
    "sum": (lambda a, b: a + b, [
        "what is {x} plus {y}", "add {x} and {y}", "what do {x} and {y} add up to",
        "give me the sum of {x} and {y}", "{x} plus {y} makes how much",
        "how much is {x} added to {y}"]),
    "difference": (lambda a, b: np.abs(a - b), [
        "what is the difference between {x} and {y}", "how far apart are {x} and {y}",
        "subtract the smaller of {x} and {y} from the larger",
        "what is the absolute difference of {x} and {y}", "by how much do {x} and {y} differ"]),
    "larger": (np.maximum, [
        "which is larger, {x} or {y}", "tell me the bigger of {x} and {y}",
        "what is the maximum of {x} and {y}", "which number is greater: {x} or {y}",
        "say the higher one of {x} and {y}"]),
    "smaller": (np.minimum, [
        "which is smaller, {x} or {y}", "tell me the lesser of {x} and {y}",
        "what is the minimum of {x} and {y}", "which number is lower: {x} or {y}",
        "say the lower one of {x} and {y}"]),
}
IMAGE_PHRASES = ["the written digit", "the handwritten digit", "the digit in the picture",
                 "the number in the image", "the drawn number"]
AUDIO_PHRASES = ["the spoken digit", "the digit you hear", "the number in the recording",
                 "the spoken number", "the word in the audio"]
VOCAB_FILE = "vocab.json"
# target = "sentence": the answer spelled out, written digit {a} first, spoken digit {b} second
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen")
SENTENCES = {"sum": "{a} plus {b} is {answer}",
             "difference": "the difference between {a} and {b} is {answer}",
             "larger": "the larger of {a} and {b} is {answer}",
             "smaller": "the smaller of {a} and {b} is {answer}"}
# every word a sentence can use, in a fixed order: the numbers, then the other words
SENTENCE_WORDS = NUMBER_WORDS + tuple(dict.fromkeys(
    w for t in SENTENCES.values() for w in t.split() if not w.startswith("{")))
SENTENCE_VOCABULARY = TargetVocabulary.of(SENTENCE_WORDS, " ")
SENTENCE_LENGTH = max(len(t.split()) for t in SENTENCES.values())  # 8 words


def sentence(operation: str, a: int, b: int) -> str:
    """The answer to ``operation`` of written digit ``a`` and spoken digit ``b`` as a sentence."""
    answer = int(OPERATIONS[operation][0](np.int64(a), np.int64(b)))
    return SENTENCES[operation].format(a=NUMBER_WORDS[a], b=NUMBER_WORDS[b],
                                       answer=NUMBER_WORDS[answer])


class DigitQA(DigitsBase):
    """Image + audio + text: each example is an MNIST image of a digit ``a`` (``image``), an
    FSDD recording of a digit ``b`` drawn independently of ``a`` (``audio``), and an
    instruction in varied wording asking for their sum, their (absolute) difference, the
    larger or the smaller (``text``, int32 ``[max_len]``).

    The label depends on ``target``: the answer as a class, 0-18 (19 classes, whatever
    ``operations`` holds); the answer as a float32 number, for the ``regression`` head;
    which digits are shown and spoken, a multi-hot float32 ``[10]`` vector with ones at
    ``a`` and ``b`` (a single one when they are equal), for the ``multilabel`` head (the
    text does not matter for it); or the answer as a sentence, for a sequence head (CTC or
    a decoder): int32 ``[8]`` word tokens of "seven plus four is eleven", "the difference
    between seven and four is three", "the larger of seven and four is seven" or "the
    smaller of seven and four is four" (the written digit first, the spoken one second,
    numbers as the words zero to eighteen; a fixed vocabulary of 28 words, carried by the
    label spec).  The sentence needs all three modalities: it names the written digit (seen
    in the image), the spoken digit (heard in the audio) and the operation (asked in the
    question), and its result needs all three.

    Splits: ``train`` and ``test``, drawn from the matching MNIST and FSDD splits as for
    ``avdigits``; train examples are re-drawn every epoch, the test examples are one fixed
    draw.  The vocabulary is built from training instructions (57 ids with all four
    operations) and saved in the run directory as ``vocab.json``.
    Details: [data.md](data.md#bundled-data-sets).  Provides ``vocab_size`` (text),
    ``sample_rate`` (audio) and ``num_classes`` (19; 10 with ``target = "digits"``; none
    with ``target = "value"`` or ``"sentence"``).

    Parameters:
        root: Folder holding ``mnist/`` and ``fsdd/`` (see above).
        operations: The questions asked, each equally likely; a non-empty list of these four
            names (``data.operations: unknown operation(s) ['product']; choose from sum,
            difference, larger, smaller``).
        max_len: Tokens per instruction (the longest instruction has 18 words). ``>= 4``.
        sample_rate: Recordings are resampled to this rate (Hz). ``>= 1``.
        num_samples: Samples per recording after crop/pad. ``>= 1``.
        align: Which part of a recording crop/pad keeps.
        train_size: Training examples per epoch (images and recordings are drawn with
            replacement, so this may exceed the number of images).
        test_size: Examples in ``test``.
        target: The label: ``"answer"``, the answer as a class id (int32, 19 classes);
            ``"value"``, the answer as a number (float32 ``()``, no classes; a
            ``regression`` head); ``"digits"``, the multi-hot float32 ``[10]`` of the
            written and the spoken digit (10 labels, named ``0``-``9``; a ``multilabel``
            head); ``"sentence"``, the answer as a sentence of word tokens, int32 ``[8]``
            (no classes; a sequence head), e.g. "seven plus four is eleven".
        seed: Seed of the draws and of the instructions the vocabulary is built from. The
            test draw depends on it alone; the train draw of each epoch also on
            ``train.seed``.
    """

    test_settings = {"train_size": 40, "test_size": 20, "num_samples": 2000}
    def __init__(
        self,
        *,
        root: str | None = None,
        operations: tuple[str, ...] = tuple(OPERATIONS),
        max_len: int = 24,
        sample_rate: int = 8000,
        num_samples: int = 6000,
        align: Align = "center",
        train_size: int = 60000,
        test_size: int = 10000,
        target: Literal["answer", "value", "digits", "sentence"] = "answer",
        seed: int = 0,
    ):
        super().__init__(root=root, sample_rate=sample_rate, num_samples=num_samples, align=align,
                         train_size=train_size, test_size=test_size, seed=seed)
        unknown = [op for op in operations if op not in OPERATIONS]
        if unknown or not operations:
            raise ConfigError(f"unknown operation(s) {unknown}; choose from {', '.join(OPERATIONS)}",
                              key="operations")
        if max_len < 4:
            raise ConfigError(f"must be >= 4, got {max_len}", key="max_len")
        self.operations, self.max_len, self.target = tuple(operations), max_len, target
        # the vocabulary of a large sample of training instructions (train split only)
        sample = self.instructions(np.random.default_rng([seed, 0, 2**31]), 5000)[0]
        self.vocab = Vocabulary.build(sample)
        # answer: 19 classes; value: a real number; digits: 10 labels, the digits 0-9;
        # sentence: a sequence of words
        if target not in ("answer", "value", "digits", "sentence"):
            raise ConfigError(f"must be 'answer', 'value', 'digits' or 'sentence', got {target!r}",
                              key="target")
        self.num_classes = {"answer": 19, "value": None, "digits": 10, "sentence": None}[target]
        self.label_names = (tuple(str(v) for v in range(self.num_classes))
                            if self.num_classes else None)
        self._spec_text()

    def _spec_text(self) -> None:
        label = {"answer": FieldSpec((), "int32"), "value": FieldSpec((), "float32"),
                 "digits": FieldSpec((10,), "float32"),
                 "sentence": SENTENCE_VOCABULARY.spec(SENTENCE_LENGTH)}[self.target]
        self.spec = {**self.spec,
                     "text": FieldSpec((self.max_len,), "int32", {"vocab_size": len(self.vocab)}),
                     LABEL: label}

    def instructions(self, rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
        """``n`` instructions and their operation ids (index into ``self.operations``)."""
        ops = rng.integers(0, len(self.operations), n)
        texts = []
        for op in ops:
            templates = OPERATIONS[self.operations[op]][1]
            x, y = rng.choice(IMAGE_PHRASES), rng.choice(AUDIO_PHRASES)
            if rng.random() < 0.5:
                x, y = y, x
            texts.append(templates[rng.integers(len(templates))].format(x=x, y=y))
        return texts, ops

    def draw(self, split, n, rng):
        _, image_labels = self.images(split)
        rec = self.recordings(split)
        image = rng.integers(0, len(image_labels), n)
        audio = rng.integers(0, len(rec.labels), n)
        texts, ops = self.instructions(rng, n)
        a, b = image_labels[image], rec.labels[audio]
        answer = np.empty(n, np.int32)
        for i, name in enumerate(self.operations):
            where = ops == i
            answer[where] = OPERATIONS[name][0](a[where], b[where])
        text = np.stack([self.vocab.encode(t, self.max_len) for t in texts])
        if self.target == "value":
            label = answer.astype(np.float32)
        elif self.target == "digits":
            label = np.zeros((n, 10), np.float32)
            label[np.arange(n), a] = 1.0
            label[np.arange(n), b] = 1.0
        elif self.target == "sentence":
            label = self.sentences[ops, a, b]
        else:
            label = answer
        return {"image": image, "audio": audio, "text": text, "operation": ops, LABEL: label}

    @functools.cached_property
    def sentences(self) -> np.ndarray:
        """int32 ``[operations, 10, 10, 8]``: the sentence of each operation id and digits."""
        return np.array([[[SENTENCE_VOCABULARY.encode(sentence(op, a, b), SENTENCE_LENGTH)
                           for b in range(10)] for a in range(10)] for op in self.operations],
                        np.int32)

    def materialise(self, split, draws, rows, rngs) -> Batch:
        batch = super().materialise(split, draws, rows, rngs)
        batch["text"] = draws["text"][rows]
        return batch

    def encode(self, modality: str, value: str) -> np.ndarray:
        if modality == "text":
            return self.vocab.encode(value, self.max_len)
        return super().encode(modality, value)

    def save(self, run_dir: Path) -> None:
        self.vocab.save(Path(run_dir) / VOCAB_FILE)

    def restore(self, run_dir: Path) -> None:
        vocab = Vocabulary.load(Path(run_dir) / VOCAB_FILE, run_dir=run_dir)
        if len(vocab) != len(self.vocab):
            raise DataError(f"{Path(run_dir) / VOCAB_FILE}: {len(vocab)} words, but the model "
                            f"was built for {len(self.vocab)}")
        self.vocab = vocab
