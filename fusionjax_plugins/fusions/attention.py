"""Attention over modalities: a learned softmax weight per modality and example."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.fusion_ops import (
    check_features,
    masked_softmax,
    present,
    projections,
    stacked_masks,
)


class AttentionFusion(Fusion):
    """Modality attention in the manner of Hori et al., 2017, "Attention-Based
    Multimodal Fusion for Video Description" (ICCV): each modality is projected to
    ``features`` (``p_m = W_m x_m``), scored by a small additive-attention network
    ``s_m = v . tanh(U p_m + b)`` (width ``attention_features``), and the output is
    ``sum_m softmax_m(s) p_m`` -- a convex combination whose weights depend on the
    example, so the model can lean on whichever modality is informative.

    Missing modalities: the softmax runs over the modalities the example has;
    an example with none gets zeros.  ``weights()`` returns the attention weights,
    for inspection.

    Parameters:
        in_features: Encoder output width per modality.
        features: Common width of the projections and output width, ``>= 1``.
        attention_features: Hidden width of the scoring network, ``>= 1``.
    """

    test_settings = {"features": 8, "attention_features": 4}

    def __init__(self, in_features: Mapping[str, int], *, features: int = 128,
                 attention_features: int = 64, rngs: nnx.Rngs):
        check_features(attention_features, "attention_features")
        self.modalities = tuple(sorted(in_features))
        self.proj = projections(in_features, features, rngs=rngs)
        self.score_hidden = nnx.Linear(features, attention_features, rngs=rngs)
        self.score = nnx.Linear(attention_features, 1, use_bias=False, rngs=rngs)
        self.out_features = features

    def _projected_and_weights(self, embeddings, masks) -> tuple[jax.Array, jax.Array]:
        have = stacked_masks(masks, self.modalities)  # [B, M]
        p = jnp.stack([self.proj[m](present(embeddings[m], masks[m])) for m in self.modalities],
                      axis=1)
        p = jnp.where(have[..., None], p, 0.0)  # [B, M, D]
        scores = self.score(jnp.tanh(self.score_hidden(p)))[..., 0]  # [B, M]
        return p, masked_softmax(scores, have, axis=1)

    def weights(self, embeddings, masks) -> jax.Array:
        """``[B, M]`` attention weights, modalities in sorted order."""
        return self._projected_and_weights(embeddings, masks)[1]

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        p, alpha = self._projected_and_weights(embeddings, masks)
        return jnp.sum(alpha[..., None] * p, axis=1)
