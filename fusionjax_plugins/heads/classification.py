"""Softmax classification head."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fusionjax.answers import ClassAnswer, ranked
from fusionjax.errors import ConfigError
from fusionjax.interfaces import FieldSpec, Head
from fusionjax_plugins.layers.mlp import apply_hidden, hidden_layers


class ClassificationHead(Head):
    """``hidden`` dense + ReLU layers, then a dense layer to ``num_classes`` logits.

    Loss: softmax cross-entropy on integer labels; with ``label_smoothing`` = a > 0
    the training loss uses smoothed targets, ``(1 - a) * one_hot + a / num_classes``
    (``optax.smooth_labels``).  Metrics: ``loss`` (always the plain cross-entropy
    against the true class, so runs with and without smoothing compare), ``accuracy``,
    ``macro_f1`` (unweighted mean of the per-class F1) and, with two classes, ``f1``
    of class 1 (the positive class, e.g. "spam").  ``num_classes`` defaults to the
    data set's.

    A class that does not occur among the labels evaluated does not count in
    ``macro_f1``.  ``probabilities()`` turns the logits into softmax class probabilities
    ``[B, num_classes]``; [``fusionjax predict``](#command-line) uses it.  The labels
    must be one integer class id per example (shape ``()``); others are a config error at
    ``model.head`` whose hint names the head that fits (``multilabel`` for 0/1 vectors,
    ``regression`` for real values).  A data set without classes (``digit_qa`` with
    ``target = "value"``) leaves ``num_classes`` unset: the error at
    ``model.head.num_classes`` says so and suggests ``regression``.

    Parameters:
        in_features: The fusion's output width.
        num_classes: Number of classes. Required; taken from the data set's class count
            (``synthetic``: ``data.num_classes``), and must equal it if set. ``>= 2``.
        hidden: Widths of the hidden dense + ReLU layers, each ``>= 1``.
        label_smoothing: Share of the target mass spread evenly over all classes in the
            training loss; in ``[0, 1)`` (``model.head.label_smoothing: must be in [0, 1), got
            1.0``).
    """

    test_settings = {"num_classes": 5, "hidden": [8], "label_smoothing": 0.1}
    test_labels = FieldSpec((), "int32", {"num_classes": 5})

    def __init__(self, in_features: int, *, num_classes: int, hidden: tuple[int, ...] = (),
                 label_smoothing: float = 0.0, rngs: nnx.Rngs):
        if num_classes < 2:
            raise ConfigError(f"must be >= 2, got {num_classes}", key="num_classes")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"must be in [0, 1), got {label_smoothing}", key="label_smoothing",
                              hint="0 for hard targets; 0.1 is a common choice")
        self.hidden, width = hidden_layers(in_features, tuple(hidden), rngs=rngs)
        self.out = nnx.Linear(width, num_classes, rngs=rngs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def __call__(self, features: jax.Array) -> jax.Array:
        features = apply_hidden(self.hidden, features)
        return self.out(features)

    def check_labels(self, spec: FieldSpec) -> None:
        dtype = np.dtype(spec.dtype)
        if tuple(spec.shape) == () and np.issubdtype(dtype, np.integer):
            return
        if "vocabulary" in (spec.metadata or {}):
            hint = ('labels that are token sequences (a transcript, a caption) need a sequence head: '
                    'type = "ctc" or "decoder", without a [model.fusion]')
        elif len(spec.shape) == 1 and spec.shape[0] > 1:
            hint = ('labels that are vectors of 0/1 per class (multi-hot) need type = "multilabel"; '
                    'real-valued vectors need type = "regression"')
        elif np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.bool_):
            hint = 'real-valued labels need type = "regression"'
        else:
            hint = 'use a head that fits the labels, e.g. type = "regression" or "multilabel"'
        raise ConfigError(f"the classification head needs one integer class id per example, "
                          f"got labels of shape {tuple(spec.shape)} ({dtype})", hint=hint)

    def loss(self, predictions, labels):
        if not self.label_smoothing:
            return optax.softmax_cross_entropy_with_integer_labels(predictions, labels).mean()
        targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes, dtype=predictions.dtype),
                                      self.label_smoothing)
        return optax.softmax_cross_entropy(predictions, targets).mean()

    def probabilities(self, predictions: jax.Array) -> jax.Array:
        """``[B, num_classes]`` class probabilities."""
        return jax.nn.softmax(predictions, axis=-1)

    def answer(self, predictions, *, label_names=None, top=3) -> list[ClassAnswer]:
        probs = np.asarray(self.probabilities(jnp.asarray(predictions)))
        return [ClassAnswer(ranked(p, label_names, top)) for p in probs]

    def metric_stats(self, predictions, labels, weights):
        losses = optax.softmax_cross_entropy_with_integer_labels(predictions, labels)
        guess = jnp.argmax(predictions, axis=-1)
        correct = (guess == labels).astype(jnp.float32)
        classes = jnp.arange(self.num_classes)
        predicted = (guess[:, None] == classes) * weights[:, None]  # [B, C]
        actual = (labels[:, None] == classes) * weights[:, None]
        return {"loss_sum": jnp.sum(losses * weights), "correct": jnp.sum(correct * weights),
                "count": jnp.sum(weights), "true_pos": jnp.sum(predicted * actual, axis=0),
                "pred_pos": jnp.sum(predicted, axis=0), "actual_pos": jnp.sum(actual, axis=0)}

    @staticmethod
    def finalize_metrics(stats: Mapping[str, float]) -> dict[str, float]:
        n = max(float(stats["count"]), 1.0)
        tp, pred, actual = (np.asarray(stats[k], np.float64)
                            for k in ("true_pos", "pred_pos", "actual_pos"))
        f1 = np.where(pred + actual > 0, 2 * tp / np.maximum(pred + actual, 1e-12), 0.0)
        present = actual > 0  # classes absent from the labels do not count in macro F1
        out = {"loss": float(stats["loss_sum"]) / n, "accuracy": float(stats["correct"]) / n,
               "macro_f1": float(f1[present].mean()) if present.any() else 0.0}
        if len(f1) == 2:
            out["f1"] = float(f1[1])
        return out
