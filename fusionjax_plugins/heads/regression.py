"""Regression head: real-valued targets of any per-example shape."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fusionjax.answers import ValuesAnswer
from fusionjax.errors import ConfigError
from fusionjax.interfaces import FieldSpec, Head
from fusionjax_plugins.layers.mlp import apply_hidden, hidden_layers


class RegressionHead(Head):
    """``hidden`` dense + ReLU layers, then a dense layer to ``prod(label_shape)``
    values, reshaped to ``[B, *label_shape]`` (``label_shape`` is the data set's
    per-example label shape; ``()`` gives predictions ``[B]``).

    Loss (``loss``): ``"mse"`` (squared error), ``"mae"`` (absolute error) or
    ``"huber"`` (``optax.huber_loss`` with ``huber_delta``), averaged over examples
    and outputs.  Metrics, all from additive sums over the evaluated examples:
    ``loss``, ``mse``, ``mae``, ``rmse`` (the square root of ``mse``) and ``r2``, the
    coefficient of determination ``1 - SSE / SST`` of each output (``SST`` from the
    sums of ``y`` and ``y^2``), averaged over outputs; an output whose targets are all
    equal scores 1 if predicted exactly, else 0 (as scikit-learn's ``r2_score``).  The
    sums are float32: ``r2`` loses precision for targets whose mean is large next to
    their spread (standardise such targets).

    Labels must be floating point (e.g. ``digit_qa`` with ``target = "value"``); integer
    labels are a config error at ``model.head`` with the hint to use ``classification``.
    ``values()`` returns the predictions; ``predict`` prints them.

    Parameters:
        in_features: The fusion's output width.
        label_shape: The per-example shape of the data set's labels.
        hidden: Widths of the hidden dense + ReLU layers, each ``>= 1``.
        loss: The training loss (and the metric ``loss``); ``"huber"`` is squared within
            ``huber_delta`` of the target and linear beyond.
        huber_delta: Where the Huber loss turns from squared to linear. ``> 0``.
    """

    def __init__(self, in_features: int, *, label_shape: tuple[int, ...], hidden: tuple[int, ...] = (),
                 loss: Literal["mse", "mae", "huber"] = "mse", huber_delta: float = 1.0,
                 rngs: nnx.Rngs):
        if not huber_delta > 0:
            raise ConfigError(f"must be > 0, got {huber_delta}", key="huber_delta")
        self.label_shape = tuple(int(d) for d in label_shape)
        if any(d < 1 for d in self.label_shape):
            raise ConfigError(f"every dimension must be >= 1, got {self.label_shape}", key="label_shape")
        self.outputs = math.prod(self.label_shape)
        self.hidden, width = hidden_layers(in_features, tuple(hidden), rngs=rngs)
        self.out = nnx.Linear(width, self.outputs, rngs=rngs)
        self.loss_name, self.huber_delta = loss, huber_delta

    def __call__(self, features: jax.Array) -> jax.Array:
        features = apply_hidden(self.hidden, features)
        return self.out(features).reshape((features.shape[0], *self.label_shape))

    def check_labels(self, spec: FieldSpec) -> None:
        dtype = np.dtype(spec.dtype)
        if not np.issubdtype(dtype, np.floating):
            raise ConfigError(f"the regression head needs real-valued (floating-point) labels, got "
                              f"{dtype}", hint='integer class ids need type = "classification" '
                                               '(0/1 vectors per class: type = "multilabel")')

    test_settings = {"hidden": [8]}
    test_labels = FieldSpec((2,), "float32")

    def values(self, predictions: jax.Array) -> jax.Array:
        """The predicted values ``[B, *label_shape]`` (the predictions themselves)."""
        return predictions

    def answer(self, predictions, *, label_names=None, top=3) -> list[ValuesAnswer]:
        values = np.asarray(self.values(jnp.asarray(predictions)), np.float64)
        return [ValuesAnswer(v.item() if v.ndim == 0 else v.tolist()) for v in values]

    def _errors(self, predictions, labels) -> jax.Array:
        """Per-example loss, averaged over outputs: ``[B]``."""
        labels = labels.astype(predictions.dtype)
        if self.loss_name == "mse":
            per = jnp.square(predictions - labels)
        elif self.loss_name == "mae":
            per = jnp.abs(predictions - labels)
        else:
            per = optax.huber_loss(predictions, labels, delta=self.huber_delta)
        return per.reshape((per.shape[0], -1)).mean(axis=-1)

    def loss(self, predictions, labels):
        return self._errors(predictions, labels).mean()

    def metric_stats(self, predictions, labels, weights):
        b = predictions.shape[0]
        y = labels.astype(jnp.float32).reshape((b, -1))
        diff = predictions.astype(jnp.float32).reshape((b, -1)) - y
        w = weights[:, None]
        return {"loss_sum": jnp.sum(self._errors(predictions, labels) * weights),
                "count": jnp.sum(weights),
                "sse": jnp.sum(jnp.square(diff) * w, axis=0), "sae": jnp.sum(jnp.abs(diff) * w, axis=0),
                "sum_y": jnp.sum(y * w, axis=0), "sum_y2": jnp.sum(jnp.square(y) * w, axis=0)}

    @staticmethod
    def finalize_metrics(stats: Mapping[str, float]) -> dict[str, float]:
        n = max(float(stats["count"]), 1.0)
        sse, sae, sum_y, sum_y2 = (np.asarray(stats[k], np.float64).reshape(-1)
                                   for k in ("sse", "sae", "sum_y", "sum_y2"))
        sst = np.maximum(sum_y2 - sum_y ** 2 / n, 0.0)
        varies = sst > 1e-12 * np.maximum(sum_y2, 1e-30)
        r2 = np.where(varies, 1.0 - sse / np.where(varies, sst, 1.0), np.where(sse == 0, 1.0, 0.0))
        mse = float(sse.mean()) / n
        return {"loss": float(stats["loss_sum"]) / n, "mse": mse, "mae": float(sae.mean()) / n,
                "rmse": math.sqrt(mse), "r2": float(r2.mean())}
