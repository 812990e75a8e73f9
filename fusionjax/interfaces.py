"""The five interfaces every component implements, and the batch convention.

A model is ``encoders -> fusion -> head``:

* an :class:`Encoder` maps one modality's batch to an embedding ``[B, out_features]``
  (and, optionally, to a token sequence ``[B, T, token_features]`` with a validity
  mask, for token-level fusions);
* a :class:`Fusion` maps ``{modality: embedding}`` plus per-modality presence masks
  to ``[B, out_features]``;
* a :class:`Head` maps fused features to predictions and owns its loss and metrics
  (a head with ``inputs = "embeddings"``, e.g. a contrastive objective, takes the
  per-modality embeddings instead, and one with ``inputs = "tokens"``, e.g. a CTC or
  an autoregressive decoder head, the per-modality token sequences; such a model has
  no fusion);
* a :class:`Dataset` (host side, NumPy, not a module) gives random access to each
  split's examples; :mod:`fusionjax.data.pipeline` (Grain) orders, shards, batches and
  prefetches them, the same way for every data set;
* an :class:`Augmentation` (host side, NumPy) alters one training example of one
  modality, with a generator seeded by the example and the epoch.

Batches are ``dict[str, array]``: one entry per modality name (``"image"``,
``"text"``, ...), ``"label"``, and optionally ``"mask/<modality>"`` (bool ``[B]``,
True where the example has that modality; absent means all present).  The model
zeroes an absent modality's input before encoding it, and every fusion must make
an absent modality contribute nothing: its data, whatever it holds (even NaN),
never changes an output or a gradient.

Widths flow explicitly, because NNX builds parameters eagerly: assembly gives each
component what it needs to size itself, never a user.  An encoder may take
``input_shape`` (the per-example shape of its modality); a fusion takes
``in_features`` (``{modality: width}``); a head takes ``in_features`` (an int) and,
when it has one, ``num_classes`` (defaulted from the data set).  Every constructor
takes ``rngs`` (:class:`flax.nnx.Rngs`) as a keyword.

Components describe themselves: each declares ``test_settings``, the smallest
constructor settings it is tested (and its speed compared) with, and encoders and
heads the example input or labels those settings take (``test_input``,
``test_labels``).  :mod:`fusionjax.testing` checks a component with them, and the
config reference lists them; a bundled component must declare them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol

import jax
import numpy as np
from flax import nnx

from fusionjax.errors import ConfigError, did_you_mean, shown

if TYPE_CHECKING:
    from fusionjax.answers import Answer

Array = jax.Array
Batch = dict[str, Any]

MASK_PREFIX = "mask/"
LABEL = "label"


def mask_key(modality: str) -> str:
    """The batch key of ``modality``'s presence mask: ``"mask/<modality>"``."""
    return MASK_PREFIX + modality


class TokenSequence(NamedTuple):
    """A modality as a sequence: ``values [B, T, D]`` and ``valid`` (bool ``[B, T]``)."""

    values: Array
    valid: Array


class Encoder(nnx.Module, abc.ABC):
    """One modality's batch -> embedding ``[B, out_features]``.

    Subclasses set ``self.out_features`` in ``__init__``.  Those that can also
    expose a token sequence set ``self.token_features`` and override
    :meth:`tokens`.

    Example::

        class MeanPixels(Encoder):
            def __init__(self, input_shape, *, features=16, rngs):
                self.proj = nnx.Linear(input_shape[-1], features, rngs=rngs)
                self.out_features = features

            def __call__(self, x):
                return self.proj(x.mean(axis=(1, 2)))
    """

    out_features: int
    token_features: int | None = None
    # Mixed precision (``train.precision``): the train step casts a floating input to the
    # compute dtype (e.g. bfloat16) unless the encoder sets this, to receive it in float32
    # (a front end that needs the precision, like an STFT).  Either way the parameters
    # arrive in the compute dtype: compute in their dtype (cast what you derive from the
    # input to it) rather than upcasting to float32, which would silently run in float32.
    full_precision_input: ClassVar[bool] = False
    # The smallest settings it is tested with, and the per-example input they take
    # (``fusionjax.testing`` draws a batch from it: see ``testing.example_batch``).
    test_settings: ClassVar[Mapping[str, Any] | None] = None
    test_input: ClassVar[FieldSpec | None] = None

    @abc.abstractmethod
    def __call__(self, x: Array) -> Array:
        """``x`` is the modality's batch; returns ``[B, out_features]``."""

    def tokens(self, x: Array) -> TokenSequence:
        """The modality as a token sequence, for token-level fusions."""
        raise NotImplementedError(f"{type(self).__name__} exposes no token sequence")


class Fusion(nnx.Module, abc.ABC):
    """``{modality: [B, D_m]}`` + presence masks -> ``[B, out_features]``.

    Constructed with ``in_features={modality: D_m}``.  ``masks[m]`` is bool ``[B]``;
    an absent modality must contribute nothing to the output.  A fusion that sets
    ``uses_tokens = True`` also receives each encoder's :class:`TokenSequence`.
    """

    out_features: int
    uses_tokens: bool = False
    # The smallest settings it is tested with; ``in_features`` (and ``token_features``)
    # are supplied by the test, for modalities named "a", "b" and "c".
    test_settings: ClassVar[Mapping[str, Any] | None] = None
    # Its settings in a full-size comparison (benchmarks/fusion_zoo.py): the defaults,
    # except a choice it needs made for it (e.g. a common width).
    benchmark_settings: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    @abc.abstractmethod
    def __call__(
        self,
        embeddings: Mapping[str, Array],
        masks: Mapping[str, Array],
        tokens: Mapping[str, TokenSequence] | None = None,
    ) -> Array: ...


class Head(nnx.Module, abc.ABC):
    """Fused features ``[B, in_features]`` -> predictions; owns loss and metrics.

    Metrics are computed in two stages so that they aggregate exactly over
    batches and devices: :meth:`metric_stats` returns *additive* statistics
    (sums, counts) inside the compiled step; :meth:`finalize_metrics` turns their
    totals into metric values on the host.

    A head that compares modalities rather than reading their fusion (e.g. a
    CLIP-style contrastive objective) sets ``inputs = "embeddings"``: it is built
    with ``in_features={modality: width}`` like a fusion, called as
    ``head(embeddings, masks)``, and the config has no ``[model.fusion]``.  A head that
    reads sequences (a CTC head, a decoder that cross-attends to every modality) sets
    ``inputs = "tokens"``: built with ``in_features={modality: token_features}`` and
    called as ``head(tokens, masks)`` with each encoder's :class:`TokenSequence`; it
    must make an absent modality contribute nothing, as a fusion does.

    A head whose metrics need a search (decoding) returns cheaper statistics for the
    training batches from :meth:`train_stats`; ``finalize_metrics`` takes either kind.
    """

    inputs: ClassVar[Literal["fused", "embeddings", "tokens"]] = "fused"
    # The smallest settings it is tested with (``in_features`` and ``label_shape`` are
    # supplied by the test) and the per-example labels it then learns from.
    test_settings: ClassVar[Mapping[str, Any] | None] = None
    test_labels: ClassVar[FieldSpec | None] = None
    # True when its metrics compare the examples of a batch with each other (in-batch
    # retrieval): they add up over whole batches, not over the halves of one.
    metrics_within_batch: ClassVar[bool] = False
    # False when its answer needs more than its outputs (a decoder's search runs its own
    # parameters again): ``fusionjax export``, which writes the forward pass only, refuses it.
    answer_from_outputs: ClassVar[bool] = True

    @abc.abstractmethod
    def __call__(self, features: Array, *args: Any) -> Array: ...

    def check_labels(self, spec: FieldSpec) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~fusionjax.errors.ConfigError` when the data set's labels
        (``spec``: per-example shape and dtype) are not what this head learns from."""

    @abc.abstractmethod
    def loss(self, predictions: Array, labels: Array) -> Array:
        """Mean loss over the batch (a scalar)."""

    @abc.abstractmethod
    def metric_stats(self, predictions: Array, labels: Array, weights: Array) -> dict[str, Array]:
        """Additive statistics; ``weights`` ([B], 0 or 1) drops padding examples."""

    def train_stats(self, predictions: Array, labels: Array, weights: Array) -> dict[str, Array]:
        """The additive statistics logged for a training batch (default: :meth:`metric_stats`).
        A head whose metrics need a search over outputs (e.g. decoding a sequence) returns
        cheaper ones here, so that the train step does not run the search."""
        return self.metric_stats(predictions, labels, weights)

    @staticmethod
    @abc.abstractmethod
    def finalize_metrics(stats: Mapping[str, float]) -> dict[str, float]:
        """Metric values from the summed statistics (of :meth:`metric_stats` or
        :meth:`train_stats`)."""

    def answer(self, predictions: Any, *, label_names: Sequence[str] | None = None,
               top: int = 3) -> list[Answer]:
        """One :class:`~fusionjax.answers.Answer` per example of ``predictions`` (this
        head's output on a batch, as NumPy arrays on the host).  ``label_names``: what
        each class id means (the data set's); ``top``: how many ranked classes to keep.
        A head that has no answer for a single example (e.g. a contrastive objective,
        which scores examples against each other) keeps this default."""
        raise ConfigError(f"head {type(self).__name__} declares no answer for a single example",
                          hint="its metrics are what it gives: use `fusionjax evaluate`")


class Source(Protocol):
    """Random access to one split's examples (:meth:`Dataset.source`).  A source may also
    have ``read_many(indices) -> {key: [len(indices), ...]}``, the same examples stacked,
    read in one call (e.g. one fancy index into in-memory arrays): the pipeline reads a
    batch with it when it is there."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, np.ndarray]: ...


class Augmentation(abc.ABC):
    """One modality's training example -> a randomly altered one (host side, NumPy).

    Configured per modality (``data.augment.<modality> = [{type = "...", ...}]``) and
    applied, in that order, by the data pipeline to training examples only, after they
    are read and before they are batched, with a generator seeded by the train seed, the
    epoch and the example's index: a run's augmented data is reproducible, a resumed run
    sees what the uninterrupted one saw, and the number of worker processes changes
    nothing.  An absent input (mask false) is never augmented.

    ``applies_to`` names the inputs it understands: ``"image"`` (float ``[H, W, C]``),
    ``"audio"`` (float ``[samples]``, its spec has a ``sample_rate``) or ``"text"`` (int
    token ids ``[length]``, its spec has a ``vocab_size``, 0 = padding, 1 = unknown).  A
    constructor parameter named like a key of the modality's spec metadata (e.g.
    ``sample_rate``, ``vocab_size``) is defaulted from it.

    :meth:`corruption` makes it a test-time corruption too: ``fusionjax evaluate RUN
    --corrupt audio=noise:0.5`` evaluates with the settings it gives for severity 0.5.
    """

    applies_to: ClassVar[tuple[str, ...]] = ()
    # The smallest settings it is tested with (``fusionjax.testing``).
    test_settings: ClassVar[Mapping[str, Any] | None] = None

    @abc.abstractmethod
    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``x``: one example of the modality (no batch axis); returns the same shape and
        dtype.  Draw every random number from ``rng``."""

    @classmethod
    def corruption(cls, severity: float) -> dict[str, Any]:
        """Constructor settings for a corruption of strength ``severity`` in ``(0, 1]``
        (1: the strongest it is meant to test), applied to every test example."""
        raise ConfigError(f"augmentation {cls.__name__} defines no corruption severity",
                          hint="choose one that does: `fusionjax components list --kind augmentation`")


@dataclass(frozen=True)
class FieldSpec:
    """Per-example shape and dtype of one batch entry, plus facts encoders may use
    (``metadata``, e.g. ``{"sample_rate": 8000}`` or ``{"vocab_size": 5000}``)."""

    shape: tuple[int, ...]
    dtype: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def batched(self, batch_size: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((batch_size, *self.shape), np.dtype(self.dtype))


class Dataset(abc.ABC):
    """A host-side source of NumPy batches (not a module; no JAX needed).

    ``spec`` maps each modality (and ``"label"``) to its :class:`FieldSpec`;
    ``num_classes`` is the label set's size (None for non-classification data).  A data
    set whose examples may lack a modality also lists ``"mask/<modality>"`` (shape
    ``()``, ``"bool"``) for each modality and puts those masks in every batch.
    """

    spec: Mapping[str, FieldSpec]
    # the splits it has, e.g. ("train", "test"); a class attribute or a property
    splits: tuple[str, ...]
    num_classes: int | None = None
    label_names: tuple[str, ...] | None = None  # what each class id means, for `predict`
    # examples skipped as unreadable (``on_error = "skip"``): one line each, file and row
    problems: Sequence[str] = ()
    # inputs marked absent instead (``on_error = "absent"``): modality -> one line per
    # example, naming the file and row and why
    absent_inputs: Mapping[str, Sequence[str]] = MappingProxyType({})
    # The smallest constructor settings it is tested with (data it ships or generates).
    test_settings: ClassVar[Mapping[str, Any] | None] = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(k for k in self.spec if k != LABEL and not k.startswith(MASK_PREFIX))

    def check_split(self, split: str, *, key: str | None = None, name: str | None = None) -> None:
        """A :class:`~fusionjax.errors.ConfigError` (with a did-you-mean, at ``key``)
        unless ``split`` is one of :attr:`splits`; ``name``: the data set's, as the user
        wrote it (default: its class name)."""
        splits = tuple(self.splits)
        if split not in splits:
            raise ConfigError(f"data set {name or type(self).__name__!r} has no split {shown(split)}"
                              f"{did_you_mean(split, splits)}", key=key,
                              hint=f"its splits are: {', '.join(splits)}")

    @abc.abstractmethod
    def size(self, split: str) -> int:
        """Number of examples in ``split`` (``"train"``, ``"test"``, ...)."""

    @abc.abstractmethod
    def source(self, split: str, *, seed: int) -> Source:
        """Random access to ``split``'s examples: ``source[i]`` is example ``i`` (``0 <= i <
        size(split)``) as ``{key: array}`` with the shapes of :attr:`spec`, no batch axis.

        ``seed`` is the epoch's (the training loop passes a new one each epoch): a data set
        that draws its examples anew every epoch (the digit sets' train split) draws them
        from it; a fixed one ignores it.  Reading an example should cost what decoding it
        costs, not the split's: a file-backed data set decodes ``source[i]``'s files when it
        is read (the pipeline may read it in a worker process, so a source must pickle)."""

    def order(self, split: str, *, seed: int, shuffle: bool) -> np.ndarray:
        """The order one pass reads ``split`` in: a seeded permutation when ``shuffle``."""
        n = self.size(split)
        return np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)

    def batches(
        self, split: str, batch_size: int, *, seed: int, shuffle: bool, drop_remainder: bool
    ) -> Iterator[Batch]:
        """One pass over ``split`` (through the Grain pipeline, in this process); the last
        batch may be short unless ``drop_remainder``."""
        from fusionjax.data.pipeline import one_pass

        return one_pass(self, split, batch_size, seed=seed, shuffle=shuffle,
                        drop_remainder=drop_remainder)

    def resolved_settings(self) -> dict[str, Any]:
        """Parameters to record in the run's config as actually used (e.g. the data
        folder a ``root = None`` resolved to), so that reloading a run reads the same data."""
        return {}

    def save(self, run_dir: Path) -> None:  # noqa: B027 - optional hook, nothing to save by default
        """Write what reading new inputs needs (e.g. a vocabulary) into ``run_dir``."""

    def restore(self, run_dir: Path) -> None:  # noqa: B027 - optional hook
        """Read back what :meth:`save` wrote; ``evaluate`` and ``predict`` call it."""

    def input_kind(self, modality: str) -> Literal["file", "text"]:
        """What :meth:`encode` takes for ``modality``: a file path (``"file"``) or the text
        itself (``"text"``).  Default: text for a modality of token ids (its spec has a
        ``vocab_size``), a file otherwise."""
        return "text" if "vocab_size" in self.spec[modality].metadata else "file"

    def review(self, modality: str, x: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        """A last look at one new input, as :meth:`encode` gave it: the array to use (or
        None: treat the modality as absent) and a note for the answer (or None), so that
        an answer says when its input was not what the model learned from.  Default: a
        text of token ids with no known word (only padding and the unknown id, 0 and 1)
        is absent; anything else is used as it is."""
        if self.input_kind(modality) == "text" and not np.any(np.asarray(x) > 1):
            return None, f"{modality}: no word of it is in the model's vocabulary, so it counts as absent"
        return x, None

    def encode(self, modality: str, value: str) -> np.ndarray:
        """One raw input -- a file path, or the text itself -- as one example's array
        (shape ``spec[modality].shape``), preprocessed exactly as in :meth:`batches`."""
        raise NotImplementedError(f"{type(self).__name__} cannot read new inputs")
