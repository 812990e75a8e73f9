"""Weighted-sum fusion: ``{modality: [B, D_m]}`` + presence masks -> ``[B, features]``."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Fusion


class WeightedSumFusion(Fusion):
    """A learned weighted sum of the present modalities' projected embeddings.

    Each modality ``m`` is projected to ``features`` by its own linear map ``P_m``; the
    output is ``sum_m w_m * P_m(e_m)`` with weights ``w = softmax(logits)`` taken over the
    modalities the example *has*: an absent one gets weight 0 and the present ones share
    the whole weight.  ``logits`` (one per modality, starting equal) is learned.

    An absent modality contributes nothing, whatever its embedding holds (NaN included):
    its rows are replaced by zeros with ``jnp.where`` before any arithmetic (``0 * nan``
    is ``nan``), and an example with no modality at all gets zeros.

    Parameters:
        in_features: Encoder output width per modality (passed by fusionjax).
        features: The output width; ``>= 1``.
    """

    # The smallest settings it is tested with (``in_features`` is supplied by the test).
    test_settings = {"features": 8}

    def __init__(self, in_features: Mapping[str, int], *, features: int = 64, rngs: nnx.Rngs):
        if features < 1:
            raise ConfigError(f"must be >= 1, got {features}", key="features")
        self.modalities = tuple(sorted(in_features))
        self.proj = nnx.Dict({m: nnx.Linear(in_features[m], features, rngs=rngs)
                              for m in self.modalities})
        self.logits = nnx.Param(jnp.zeros(len(self.modalities)))
        self.out_features = features

    def weights(self, masks: Mapping[str, jax.Array]) -> jax.Array:
        """``[B, M]``: the softmax of the logits over each example's present modalities."""
        have = jnp.stack([masks[m] for m in self.modalities], axis=1)
        logits = self.logits[...]
        e = jnp.where(have, jnp.exp(logits - jnp.max(logits)), 0.0)
        total = jnp.sum(e, axis=1, keepdims=True)
        return e / jnp.where(total > 0, total, 1.0)  # no modality: all weights 0, no 0 / 0

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        w = self.weights(masks)
        out = 0.0
        for i, m in enumerate(self.modalities):
            keep = masks[m][:, None]
            e = jnp.where(keep, embeddings[m], 0.0)  # before any arithmetic
            out = out + w[:, i:i + 1] * jnp.where(keep, self.proj[m](e), 0.0)
        return out
