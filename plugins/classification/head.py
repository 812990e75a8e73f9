"""Softmax classification head."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Head


class ClassificationHead(Head):
    """``hidden`` dense + ReLU layers, then a dense layer to ``num_classes`` logits.

    Loss: softmax cross-entropy on integer labels.  Metrics: ``loss``, ``accuracy``.
    ``num_classes`` defaults to the data set's.
    """

    def __init__(self, in_features: int, *, num_classes: int, hidden: tuple[int, ...] = (),
                 rngs: nnx.Rngs):
        if num_classes < 2:
            raise ConfigError(f"must be >= 2, got {num_classes}", key="num_classes")
        if any(h < 1 for h in hidden):
            raise ConfigError(f"widths must be >= 1, got {list(hidden)}", key="hidden")
        widths = (in_features, *hidden)
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])
        self.out = nnx.Linear(widths[-1], num_classes, rngs=rngs)
        self.num_classes = num_classes

    def __call__(self, features: jax.Array) -> jax.Array:
        for layer in self.hidden:
            features = jax.nn.relu(layer(features))
        return self.out(features)

    def loss(self, predictions, labels):
        return optax.softmax_cross_entropy_with_integer_labels(predictions, labels).mean()

    def metric_stats(self, predictions, labels, weights):
        losses = optax.softmax_cross_entropy_with_integer_labels(predictions, labels)
        correct = (jnp.argmax(predictions, axis=-1) == labels).astype(jnp.float32)
        return {"loss_sum": jnp.sum(losses * weights), "correct": jnp.sum(correct * weights),
                "count": jnp.sum(weights)}

    @staticmethod
    def finalize_metrics(stats: Mapping[str, float]) -> dict[str, float]:
        n = max(float(stats["count"]), 1.0)
        return {"loss": float(stats["loss_sum"]) / n, "accuracy": float(stats["correct"]) / n}
