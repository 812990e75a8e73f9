"""CTC head: per-frame logits over one modality's token sequence, the CTC loss, and
greedy (evaluation) and prefix beam search (``predict``) decoding."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fusionjax import sequences
from fusionjax.answers import Alternative, TextAnswer
from fusionjax.errors import ConfigError, did_you_mean, shown
from fusionjax.interfaces import FieldSpec, Head, TokenSequence
from fusionjax.sequences import END, PAD, SEQUENCE_DATA, Scorer, TargetVocabulary
from fusionjax_plugins.layers.attention_blocks import Block, check_heads, sinusoids

# The logit of ``END`` at every frame: CTC never emits it (labels never hold it), and
# exp(-1e4) is exactly 0 in float32 and bfloat16, so it takes no probability.
END_LOGIT = -1e4


class CTCLosses(NamedTuple):
    """Per-example CTC terms of a batch."""

    nll: jax.Array  # [B] -log p(label | frames), not normalised; 0 where infeasible
    length: jax.Array  # [B] int32 label lengths
    feasible: jax.Array  # [B] bool: enough valid frames for the label


def frames_needed(labels: jax.Array) -> jax.Array:
    """int32 ``[B]``: the fewest frames that can emit each label [B, L] (read up to its
    first ``PAD``/``END``): one per token, plus a blank between each two equal neighbours."""
    ids, length = sequences.trimmed(labels.astype(jnp.int32))
    repeats = jnp.sum((ids[:, 1:] == ids[:, :-1]) & (ids[:, 1:] > END), axis=-1)
    return (length + repeats).astype(jnp.int32)


@jax.jit  # compiled once per shape, also when called eagerly: its scan is costly to retrace
def ctc_losses(logits: jax.Array, valid: jax.Array, labels: jax.Array) -> CTCLosses:
    """The CTC negative log-likelihood of each label [B, L] given the frames of ``logits``
    [B, T, V] where ``valid`` [B, T] (``PAD`` = 0 is the blank).  An example whose label
    needs more frames than it has is infeasible: its ``nll`` is 0 (computed for an empty
    label, so that nothing infinite reaches a value or a gradient)."""
    ids, length = sequences.trimmed(labels.astype(jnp.int32))
    feasible = jnp.sum(valid, axis=-1) >= frames_needed(ids)
    ids = jnp.where(feasible[:, None], ids, PAD)
    label_paddings = (jnp.arange(ids.shape[1]) >= jnp.where(feasible, length, 0)[:, None])
    nll = optax.ctc_loss(logits.astype(jnp.float32), (~valid).astype(jnp.float32), ids,
                         label_paddings.astype(jnp.float32), blank_id=PAD)
    return CTCLosses(jnp.where(feasible, nll, 0.0), length, feasible)


def greedy(predictions: Mapping[str, jax.Array]) -> jax.Array:
    """Best-path decoding of the head's predictions: the most probable id of each valid
    frame (never ``END``), repeats merged, blanks dropped; int32 ``[B, T]``, ``PAD`` after
    the labels."""
    logits = predictions["logits"]
    ids = jnp.arange(logits.shape[-1])
    best = jnp.argmax(jnp.where(ids == END, -jnp.inf, logits), axis=-1).astype(jnp.int32)
    return sequences.greedy_ctc(best, predictions["valid"])


def _add(grown: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], *,
         blank: float = -math.inf, token: float = -math.inf) -> None:
    p = grown.setdefault(prefix, [-math.inf, -math.inf])
    p[0], p[1] = np.logaddexp(p[0], blank), np.logaddexp(p[1], token)


def beam_search(logits: np.ndarray, valid: np.ndarray, width: int) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search (host side, NumPy) over one example's frames ``logits``
    [T, V] where ``valid`` [T]: each prefix keeps the log-probabilities of the frames so
    far ending in a blank and in its last token; after each frame the ``width`` most
    probable prefixes stay.  Returns ``(ids, log p(ids | frames))`` for those prefixes,
    most probable first.  ``END`` never extends a prefix.  With a width at least the
    number of possible prefixes the probabilities are exact."""
    logits = np.asarray(logits, np.float64)[np.asarray(valid, bool)]
    top = logits.max(axis=-1, keepdims=True)
    logits = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))  # log-softmax
    symbols = [c for c in range(logits.shape[-1]) if c not in (PAD, END)]
    lse = np.logaddexp
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # (blank, token)
    for lp in logits:
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (blank, token) in beams.items():
            total = lse(blank, token)
            _add(grown, prefix, blank=total + lp[PAD])
            last = prefix[-1] if prefix else None
            for c in symbols:
                if c == last:  # a repeat collapses into the prefix; after a blank it is a new token
                    _add(grown, prefix, token=token + lp[c])
                    _add(grown, (*prefix, c), token=blank + lp[c])
                else:
                    _add(grown, (*prefix, c), token=total + lp[c])
        ranked = sorted(grown.items(), key=lambda kv: (-lse(*kv[1]), kv[0]))
        beams = {prefix: (b, t) for prefix, (b, t) in ranked[:width]}
    found = [(prefix, float(lse(b, t))) for prefix, (b, t) in beams.items()]
    return sorted(found, key=lambda f: (-f[1], f[0]))


@functools.partial(jax.jit, static_argnums=(0, 1))  # as ctc_losses; the edit distances scan too
def _metric_stats(vocabulary: tuple[str, ...], separator: str, logits: jax.Array, valid: jax.Array,
                  labels: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
    terms = ctc_losses(logits, valid, labels)
    used = weights > 0
    per_token = terms.nll / jnp.maximum(terms.length, 1)
    count = lambda keep: jnp.sum(jnp.where(used & keep, 1.0, 0.0))  # noqa: E731
    hypotheses = greedy({"logits": logits, "valid": valid})
    stats = sequences.scorer(vocabulary, separator).stats(hypotheses, labels, weights)
    return {**stats, "loss_sum": jnp.sum(jnp.where(used & terms.feasible, per_token, 0.0)),
            "feasible": count(terms.feasible), "impossible": count(~terms.feasible)}


class CTCHead(Head):
    """Connectionist temporal classification (Graves et al., 2006) over one modality's
    token sequence: a transcript (``digit_speech``) or a caption (``digit_strips``) read
    frame by frame, without an alignment.

    Each valid frame of the modality's tokens is projected linearly to ``features``;
    with ``layers = 0`` a ReLU follows, otherwise sinusoidal positions are added and
    ``layers`` pre-LayerNorm transformer self-attention blocks run over the valid
    frames, then a LayerNorm.  A dense layer gives ``len(vocabulary)`` logits per frame:
    id 0 (``<pad>``) is the blank, and id 1 (``<end>``), which labels never hold, has
    its logit fixed at -1e4 (no probability).  Predictions: ``{"logits": [B, T, V],
    "valid": [B, T]}``, valid where the frame is valid and the example has the modality.
    Invalid frames and absent examples are zeroed before anything is computed from them.
    Only ``modality`` is read: the model's other modalities are ignored.

    Loss: the CTC negative log-likelihood of the label (``optax.ctc_loss``) divided by
    its length (at least 1), averaged over the batch's feasible examples.  A label needs
    a frame per token plus a blank between each two equal neighbours (``"aa"`` needs 3);
    an example with fewer valid frames (an absent modality has none) cannot be aligned:
    it is left out of the loss (never inf or NaN) and counted by the ``impossible``
    metric.  Give the head enough frames: ``spectrogram_audio`` with
    ``pool_size = [1, 2]`` (pooling frequency only: one token per spectrogram frame),
    ``cnn_image`` with ``tokens = "columns"`` (one token per column of the feature map,
    left to right; ``pool_size = [2, 1]`` keeps every column).

    Decoding: greedy (best path: the most probable id of each frame, repeats merged,
    blanks dropped) in the compiled evaluation and training steps; prefix beam search of
    width ``beam`` in ``predict``, whose answer is the most probable text with its
    log-probability and the beam's other texts as alternatives.  Metrics: ``loss``,
    ``cer``, ``wer``, ``token_error_rate``, ``sequence_accuracy`` (of the greedy
    transcripts, see ``fusionjax.sequences.Scorer``) and ``impossible``, the share of
    examples whose label could not be aligned.

    The labels must be token ids ``[max_length]`` with a target vocabulary in their
    metadata (the bundled sequence data sets: ``digit_speech``, ``digit_strips``,
    ``digit_qa`` with ``target = "sentence"``).

    Parameters:
        in_features: Token width of each modality's encoder.
        vocabulary: The target vocabulary, id -> token, starting ``"<pad>"``, ``"<end>"``.
            Taken from the data set's labels; required.
        separator: What joins tokens into text: ``""`` (tokens are characters) or ``" "``
            (words). Taken from the data set's labels.
        label_shape: The per-example shape of the data set's labels, ``[max_length]``.
        modality: The modality whose token sequence is read. None: the model's only
            modality; with several it is a config error listing them. An unknown name is an
            error with a did-you-mean suggestion.
        features: Width of the frames after the projection. ``>= 1``; with ``layers > 0``
            a multiple of ``heads``.
        layers: Transformer self-attention blocks over the frames. ``>= 0``.
        heads: Attention heads of each block (used when ``layers > 0``). ``>= 1``.
        beam: Width of the prefix beam search in ``predict``. ``>= 1``.
    """

    inputs: ClassVar[Literal["fused", "embeddings", "tokens"]] = "tokens"
    test_settings = {"modality": "a", "features": 8, "layers": 1, "heads": 2, "beam": 3}
    test_labels = TargetVocabulary.of("abcd").spec(3)

    def __init__(self, in_features: Mapping[str, int], *, vocabulary: tuple[str, ...] | None = None,
                 separator: str = "", label_shape: tuple[int, ...] = (), modality: str | None = None,
                 features: int = 128, layers: int = 0, heads: int = 4, beam: int = 4, rngs: nnx.Rngs):
        if vocabulary is None:
            raise ConfigError("the ctc head needs a target vocabulary, and the data set's labels "
                              "declare none", key="vocabulary", hint=f"use {SEQUENCE_DATA}")
        vocabulary = tuple(vocabulary)
        sequences.check_vocabulary(vocabulary, separator)
        available = list(in_features)
        if modality is None:
            if len(available) != 1:
                raise ConfigError(f"the model has {len(available)} modalities ({', '.join(available)}); "
                                  "say whose token sequence the ctc head reads", key="modality",
                                  hint=f'e.g. modality = "{available[0]}"' if available else None)
            modality = available[0]
        if modality not in in_features:
            raise ConfigError(f"the model has no modality {shown(modality)}"
                              f"{did_you_mean(modality, available)}", key="modality",
                              hint=f"its modalities are: {', '.join(available)}")
        if len(label_shape) > 1:
            raise ConfigError(f"sequence labels are 1-D ([max_length]), got shape {tuple(label_shape)}",
                              key="label_shape", hint=f"use {SEQUENCE_DATA}")
        if features < 1:
            raise ConfigError(f"must be >= 1, got {features}", key="features")
        if layers < 0:
            raise ConfigError(f"must be >= 0, got {layers}", key="layers")
        if layers:
            check_heads(features, heads)
        if beam < 1:
            raise ConfigError(f"must be >= 1, got {beam}", key="beam", hint="4 to 16 is common")
        self.vocabulary, self.separator, self.modality, self.beam = vocabulary, separator, modality, beam
        self.proj = nnx.Linear(in_features[modality], features, rngs=rngs)
        self.blocks = nnx.List([Block(features, heads, rngs=rngs) for _ in range(layers)])
        self.ln = nnx.LayerNorm(features, rngs=rngs) if layers else None
        self.out = nnx.Linear(features, len(vocabulary), rngs=rngs)
        sequences.scorer(vocabulary, separator)  # built once, here

    def __call__(self, tokens: Mapping[str, TokenSequence], masks: Mapping[str, jax.Array]
                 ) -> dict[str, jax.Array]:
        seq = tokens[self.modality]
        valid = seq.valid.astype(bool) & masks[self.modality].astype(bool)[:, None]
        x = self.proj(jnp.where(valid[..., None], seq.values, 0.0))
        if self.ln is None:
            x = jax.nn.relu(x)
        else:
            x = x + sinusoids(x.shape[1], x.shape[-1]).astype(x.dtype)
            x = jnp.where(valid[..., None], x, 0.0)
            for block in self.blocks:
                x = block(x, None, valid)
            x = self.ln(x)
        logits = self.out(x).astype(jnp.float32)
        logits = jnp.where(jnp.arange(logits.shape[-1]) == END, END_LOGIT, logits)
        return {"logits": logits, "valid": valid}

    def check_labels(self, spec: FieldSpec) -> None:
        sequences.check_sequence_labels(spec, self.vocabulary, "ctc")

    def losses(self, predictions: Mapping[str, jax.Array], labels: jax.Array) -> CTCLosses:
        """Per-example CTC terms (:func:`ctc_losses`) of the predictions."""
        return ctc_losses(predictions["logits"], predictions["valid"], labels)

    def loss(self, predictions, labels):
        terms = self.losses(predictions, labels)
        per_token = terms.nll / jnp.maximum(terms.length, 1)
        return jnp.sum(jnp.where(terms.feasible, per_token, 0.0)) / jnp.maximum(jnp.sum(terms.feasible), 1)

    def metric_stats(self, predictions, labels, weights):
        return _metric_stats(self.vocabulary, self.separator, predictions["logits"], predictions["valid"],
                             labels, weights)

    @staticmethod
    def finalize_metrics(stats: Mapping[str, float]) -> dict[str, float]:
        feasible, impossible = float(stats["feasible"]), float(stats["impossible"])
        return {"loss": float(stats["loss_sum"]) / max(feasible, 1.0), **Scorer.metrics(stats),
                "impossible": impossible / max(feasible + impossible, 1.0)}

    def answer(self, predictions, *, label_names=None, top=3) -> list[TextAnswer]:
        logits, valid = np.asarray(predictions["logits"]), np.asarray(predictions["valid"])
        answers = []
        for row, row_valid in zip(logits, valid):
            found = beam_search(row, row_valid, self.beam)[: max(top, 1)]
            kept = tuple(Alternative(sequences.render(ids, self.vocabulary, self.separator), score)
                         for ids, score in found)
            answers.append(TextAnswer(kept[0].text, kept[0].score, kept))
        return answers
