"""CLIP-style contrastive head: two modalities' embeddings, matched within a batch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax.errors import ConfigError, did_you_mean
from fusionjax.interfaces import FieldSpec, Head

MAX_SCALE = 100.0  # CLIP clips the learned logit scale (1 / temperature) at 100
_MASKED = -1e9  # logit of a candidate that is not one (finite: no NaN when none is left)


class Similarities(NamedTuple):
    """The contrastive head's predictions for a batch."""

    logits: jax.Array  # [B, B]: scale * cos(a_i, b_j), rows the first modality, columns the second
    valid: jax.Array  # bool [B]: both modalities present, so the pair (i, i) takes part


class ContrastiveHead(Head):
    """Matches two modalities of the same example against the rest of the batch
    (CLIP's objective, symmetric InfoNCE).

    Each modality's embedding is projected linearly to ``features`` and L2-normalised;
    the logits are ``scale * a @ b.T`` with ``scale = exp(log_scale)``, ``log_scale``
    learned from ``log(1 / temperature)`` (``learn_temperature = false`` keeps it
    fixed) and clipped so that the scale never exceeds 100, as in CLIP.  The positive
    of row ``i`` is column ``i``; every other column of the batch is a negative, so the
    data set's labels are ignored.  Only rows where both modalities are present take
    part, as queries and as candidates; a batch without any such row has loss 0.

    Loss: the mean of the cross-entropies image->audio (rows over columns) and
    audio->image (columns over rows), over the valid rows.  Metrics: ``loss`` and, for
    each k in ``recall_at`` and each direction, ``recall@k_<a>_to_<b>``: the share of
    queries whose partner ranks among the k most similar candidates (ties resolved in
    the query's favour), and ``recall@k``, the mean of both directions.  Retrieval is
    *in-batch*: the candidates are the valid examples of the same batch, so the
    figures depend on the batch size (at evaluation, ``train.eval_batch_size``; the
    padded rows of a short last batch are never candidates), and in-batch chance is
    about k / batch size.

    It reads the encoders' embeddings directly, so **the config has no
    ``[model.fusion]``** (one is an error at ``model.fusion``).  When several examples
    share a class (as in ``avdigits``, where an image is paired with a random recording
    of its digit), those are indistinguishable partners and bound ``recall@1`` well below
    1.  ``predict`` has no single answer for this head (a config error); use
    ``fusionjax evaluate``.

    Parameters:
        in_features: Encoder output width per modality.
        modalities: The two modalities to match, in the order that names the directions.
            None: the model's two modalities, in config order; with more than two it is a
            config error at ``model.head.modalities`` listing them. An unknown name is an
            error with a did-you-mean suggestion.
        features: Width of the shared embedding space. ``>= 1``.
        temperature: Initial (or, with ``learn_temperature = false``, fixed) softmax
            temperature. ``>= 0.01`` (the scale is clipped at 100).
        learn_temperature: Train the temperature (a parameter) or keep it fixed.
        recall_at: The ``k``s of the ``recall@k`` metrics, each ``>= 1``.
    """

    inputs: ClassVar[Literal["fused", "embeddings"]] = "embeddings"
    test_settings = {"features": 8}
    metrics_within_batch = True  # retrieval is among the batch's examples
    test_labels = FieldSpec((), "int32", {"num_classes": 10})

    def answer(self, predictions, *, label_names=None, top=3):
        raise ConfigError("a contrastive head has no answer for a single example: it scores how "
                          "well modalities match one another within a batch",
                          hint="use `fusionjax evaluate RUN_DIR` for its retrieval metrics")

    def __init__(self, in_features: Mapping[str, int], *, modalities: tuple[str, str] | None = None,
                 features: int = 128, temperature: float = 0.07, learn_temperature: bool = True,
                 recall_at: tuple[int, ...] = (1, 5), rngs: nnx.Rngs):
        available = list(in_features)
        if modalities is None:
            if len(available) != 2:
                raise ConfigError(f"the model has {len(available)} modalities "
                                  f"({', '.join(available)}); say which two to match",
                                  key="modalities",
                                  hint=f"e.g. modalities = {available[:2]!r}".replace("'", '"'))
            modalities = tuple(available)
        if len(modalities) != 2 or modalities[0] == modalities[1]:
            raise ConfigError(f"needs two different modalities, got {list(modalities)}", key="modalities")
        for m in modalities:
            if m not in in_features:
                raise ConfigError(f"the model has no modality {m!r}{did_you_mean(m, available)}",
                                  key="modalities", hint=f"its modalities are: {', '.join(available)}")
        if features < 1:
            raise ConfigError(f"must be >= 1, got {features}", key="features")
        if not 1.0 / MAX_SCALE <= temperature:
            raise ConfigError(f"must be >= {1 / MAX_SCALE} (the scale 1 / temperature is clipped at "
                              f"{MAX_SCALE:g}), got {temperature}", key="temperature")
        if not recall_at or any(k < 1 for k in recall_at):
            raise ConfigError(f"needs at least one k, each >= 1, got {list(recall_at)}", key="recall_at")
        self.modalities = tuple(modalities)
        self.proj = nnx.Dict({m: nnx.Linear(in_features[m], features, rngs=rngs) for m in modalities})
        init = jnp.asarray(math.log(1.0 / temperature), jnp.float32)
        self.log_scale = nnx.Param(init) if learn_temperature else nnx.Variable(init)
        self.recall_at = tuple(sorted(set(recall_at)))
        self.features = features

    def _embed(self, m: str, x: jax.Array) -> jax.Array:
        z = self.proj[m](x)
        return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))

    def scale(self) -> jax.Array:
        """The logit scale, ``1 / temperature``, at most 100."""
        return jnp.exp(jnp.minimum(self.log_scale[...], math.log(MAX_SCALE)))

    def __call__(self, embeddings: Mapping[str, jax.Array], masks: Mapping[str, jax.Array]) -> Similarities:
        a, b = self.modalities
        za, zb = self._embed(a, embeddings[a]), self._embed(b, embeddings[b])
        return Similarities(self.scale() * za @ zb.T, masks[a] & masks[b])

    def _losses(self, predictions: Similarities, keep: jax.Array) -> jax.Array:
        """Per-row symmetric InfoNCE ``[B]`` among the ``keep`` rows/columns (0 elsewhere)."""
        logits = predictions.logits
        diagonal = jnp.diagonal(logits)
        rows = jnp.where(keep[None, :], logits, _MASKED)  # a -> b: candidates are columns
        cols = jnp.where(keep[:, None], logits, _MASKED)  # b -> a: candidates are rows
        a_to_b = jax.nn.logsumexp(rows, axis=1) - diagonal
        b_to_a = jax.nn.logsumexp(cols, axis=0) - diagonal
        return jnp.where(keep, 0.5 * (a_to_b + b_to_a), 0.0)

    def loss(self, predictions: Similarities, labels=None) -> jax.Array:
        keep = predictions.valid
        return jnp.sum(self._losses(predictions, keep)) / jnp.maximum(jnp.sum(keep), 1)

    def metric_stats(self, predictions: Similarities, labels, weights):
        keep = predictions.valid & (weights > 0)
        logits = predictions.logits
        diagonal = jnp.diagonal(logits)
        # how many candidates beat each query's partner, per direction
        beat_a = jnp.sum((logits > diagonal[:, None]) & keep[None, :], axis=1)
        beat_b = jnp.sum((logits > diagonal[None, :]) & keep[:, None], axis=0)
        w = jnp.where(keep, weights, 0.0)
        a, b = self.modalities
        stats = {"loss_sum": jnp.sum(self._losses(predictions, keep) * w), "count": jnp.sum(w)}
        for k in self.recall_at:
            stats[f"hits@{k}_{a}_to_{b}"] = jnp.sum((beat_a < k) * w)
            stats[f"hits@{k}_{b}_to_{a}"] = jnp.sum((beat_b < k) * w)
        return stats

    @staticmethod
    def finalize_metrics(stats: Mapping[str, float]) -> dict[str, float]:
        n = max(float(stats["count"]), 1.0)
        out = {"loss": float(stats["loss_sum"]) / n}
        by_k: dict[str, list[float]] = {}
        for key, value in stats.items():
            if key.startswith("hits@"):
                k, direction = key[len("hits@"):].split("_", 1)
                out[f"recall@{k}_{direction}"] = float(value) / n
                by_k.setdefault(k, []).append(float(value) / n)
        for k, values in sorted(by_k.items(), key=lambda kv: int(kv[0])):
            out[f"recall@{k}"] = float(np.mean(values))
        return out
