"""Sigmoid multi-label head: any subset of ``num_classes`` labels per example."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fusionjax.answers import LabelsAnswer, ranked
from fusionjax.errors import ConfigError
from fusionjax.interfaces import FieldSpec, Head
from fusionjax_plugins.layers.mlp import apply_hidden, hidden_layers

# Score bins of the per-class precision-recall histograms behind ``mAP``.
PR_BINS = 1000


class MultiLabelHead(Head):
    """``hidden`` dense + ReLU layers, then a dense layer to ``num_classes`` logits,
    one independent yes/no decision per class.

    Labels: multi-hot ``[B, num_classes]`` (bool, int or float; cast to float, and a
    value ``>= 0.5`` counts as positive in the metrics).  Loss: sigmoid binary
    cross-entropy, averaged over examples and classes.  Metrics, with a class predicted
    positive when its probability is ``>= threshold``:

    * ``loss``: the same cross-entropy;
    * ``micro_f1``: F1 over all (example, class) decisions pooled;
    * ``macro_f1``: unweighted mean of the per-class F1 over the classes that occur
      among the labels evaluated;
    * ``exact_match``: the share of examples whose whole predicted label set is right
      (subset accuracy);
    * ``mAP``: the mean over classes with at least one positive of the average
      precision.  It is computed from additive statistics (per class, histograms of the
      positives' and negatives' probabilities over ``PR_BINS`` = 1000 equal-width bins),
      so it aggregates exactly over batches and devices: AP is evaluated at those 1000
      thresholds, as Keras' ``AUC(curve="PR")`` does at its own, with scikit-learn's
      step-wise sum ``sum_k (R_k - R_{k+1}) P_k``.  It equals scikit-learn's
      ``average_precision_score`` on probabilities rounded down to multiples of 1/1000,
      typically within 1e-3 of the exact value.

    Example data: ``digit_qa`` with ``target = "digits"``.  ``probabilities()`` gives the
    per-label sigmoid probabilities ``[B, num_classes]``; ``predict`` lists the labels at
    or above ``threshold`` and the most probable ones.

    Parameters:
        in_features: The fusion's output width.
        num_classes: Number of labels: the length of each label vector. Required; taken from
            the data set's class count (``digit_qa`` with ``target = "digits"``: 10), and must
            equal it if set. ``>= 1``. The labels must have shape ``(num_classes,)``; one
            class id per example is a config error at ``model.head`` with the hint
            ``use type = "classification"``.
        hidden: Widths of the hidden dense + ReLU layers, each ``>= 1``.
        threshold: Probability at which a label counts as predicted (F1, exact match,
            ``predict``); strictly between 0 and 1.
    """

    def __init__(self, in_features: int, *, num_classes: int, hidden: tuple[int, ...] = (),
                 threshold: float = 0.5, rngs: nnx.Rngs):
        if num_classes < 1:
            raise ConfigError(f"must be >= 1, got {num_classes}", key="num_classes")
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"must be strictly between 0 and 1, got {threshold}", key="threshold",
                              hint="the probability at which a label counts as predicted, e.g. 0.5")
        self.hidden, width = hidden_layers(in_features, tuple(hidden), rngs=rngs)
        self.out = nnx.Linear(width, num_classes, rngs=rngs)
        self.num_classes = num_classes
        self.threshold = threshold

    def __call__(self, features: jax.Array) -> jax.Array:
        features = apply_hidden(self.hidden, features)
        return self.out(features)

    def check_labels(self, spec: FieldSpec) -> None:
        if tuple(spec.shape) == (self.num_classes,):
            return
        if tuple(spec.shape) == () and np.issubdtype(np.dtype(spec.dtype), np.integer):
            hint = 'one class id per example is single-label data: use type = "classification"'
        elif len(spec.shape) == 1:
            hint = f"remove num_classes to take the label width ({spec.shape[0]}) from the data set"
        else:
            hint = "the multilabel head needs one 0/1 (multi-hot) vector per example"
        raise ConfigError(f"the multilabel head needs multi-hot labels of shape ({self.num_classes},),"
                          f" got {tuple(spec.shape)}", hint=hint)

    def loss(self, predictions, labels):
        return optax.sigmoid_binary_cross_entropy(predictions, labels.astype(predictions.dtype)).mean()

    test_settings = {"num_classes": 4, "hidden": [8]}
    test_labels = FieldSpec((4,), "float32", {"binary": True})

    def answer(self, predictions, *, label_names=None, top=3) -> list[LabelsAnswer]:
        out = []
        for p in np.asarray(self.probabilities(jnp.asarray(predictions))):
            everything = ranked(p, label_names, len(p))
            chosen = tuple(s for s in everything if s.probability >= self.threshold)
            out.append(LabelsAnswer(chosen, self.threshold, everything[: max(1, top)]))
        return out

    def probabilities(self, predictions: jax.Array) -> jax.Array:
        """``[B, num_classes]`` per-class probabilities (independent sigmoids)."""
        return jax.nn.sigmoid(predictions)

    def metric_stats(self, predictions, labels, weights):
        labels = labels.astype(jnp.float32)
        losses = optax.sigmoid_binary_cross_entropy(predictions, labels).mean(axis=-1)
        probs = jax.nn.sigmoid(predictions)
        w = weights[:, None]
        actual = (labels >= 0.5).astype(jnp.float32)
        predicted = (probs >= self.threshold).astype(jnp.float32)
        exact = jnp.all(actual == predicted, axis=-1).astype(jnp.float32)
        # per-class histograms of the probabilities of positives and of negatives
        bins = jnp.clip(jnp.floor(probs * PR_BINS).astype(jnp.int32), 0, PR_BINS - 1)
        classes = jnp.broadcast_to(jnp.arange(self.num_classes), bins.shape)
        empty = jnp.zeros((self.num_classes, PR_BINS), jnp.float32)
        pos_hist = empty.at[classes, bins].add(actual * w)
        neg_hist = empty.at[classes, bins].add((1.0 - actual) * w)
        return {"loss_sum": jnp.sum(losses * weights), "count": jnp.sum(weights),
                "exact": jnp.sum(exact * weights),
                "true_pos": jnp.sum(predicted * actual * w, axis=0),
                "pred_pos": jnp.sum(predicted * w, axis=0), "actual_pos": jnp.sum(actual * w, axis=0),
                "pos_hist": pos_hist, "neg_hist": neg_hist}

    @staticmethod
    def finalize_metrics(stats: Mapping[str, float]) -> dict[str, float]:
        n = max(float(stats["count"]), 1.0)
        tp, pred, actual = (np.asarray(stats[k], np.float64)
                            for k in ("true_pos", "pred_pos", "actual_pos"))
        f1 = np.where(pred + actual > 0, 2 * tp / np.maximum(pred + actual, 1e-12), 0.0)
        present = actual > 0  # classes without positives do not count in macro F1 and mAP
        micro = 2 * tp.sum() / max(pred.sum() + actual.sum(), 1e-12)
        ap = average_precision(np.asarray(stats["pos_hist"]), np.asarray(stats["neg_hist"]))
        return {"loss": float(stats["loss_sum"]) / n, "micro_f1": float(micro),
                "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
                "exact_match": float(stats["exact"]) / n,
                "mAP": float(ap[present].mean()) if present.any() else 0.0}


def average_precision(pos_hist: np.ndarray, neg_hist: np.ndarray) -> np.ndarray:
    """Per-class AP from score histograms ``[C, bins]`` (bin k holds scores in
    ``[k / bins, (k + 1) / bins)``): at threshold ``k / bins`` everything in bins
    ``>= k`` is predicted positive; ``AP = sum_k (R_k - R_{k+1}) P_k``.  Classes
    without positives get 0."""
    pos_hist, neg_hist = np.asarray(pos_hist, np.float64), np.asarray(neg_hist, np.float64)
    tp = np.cumsum(pos_hist[:, ::-1], axis=1)  # column j: threshold at bin (bins - 1 - j)
    fp = np.cumsum(neg_hist[:, ::-1], axis=1)
    positives = tp[:, -1:]
    recall = tp / np.maximum(positives, 1e-12)
    precision = tp / np.maximum(tp + fp, 1e-12)
    gain = np.diff(recall, axis=1, prepend=0.0)
    return np.sum(gain * precision, axis=1)
