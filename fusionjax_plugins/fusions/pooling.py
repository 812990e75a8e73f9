"""Mean and max pooling over modalities (late fusion)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.fusion_ops import present, projections, stacked_masks


class _Pooling(Fusion):
    def __init__(self, in_features: Mapping[str, int], *, features: int = 128, rngs: nnx.Rngs):
        self.modalities = tuple(sorted(in_features))
        self.proj = projections(in_features, features, rngs=rngs)
        self.out_features = features

    def _stack(self, embeddings, masks) -> tuple[jax.Array, jax.Array]:
        values = jnp.stack([self.proj[m](present(embeddings[m], masks[m])) for m in self.modalities],
                           axis=1)
        return values, stacked_masks(masks, self.modalities)  # [B, M, D], [B, M]


class MeanFusion(_Pooling):
    """``[B, features]``: the mean over the present modalities of each modality's
    linear projection to ``features``.  The average is over the modalities an
    example *has*, so its scale does not shrink when one is missing; an example
    with none gets zeros.  Averaging per-modality representations is the simplest
    late-fusion baseline of the multimodal surveys (e.g. Baltrusaitis et al., 2019,
    "Multimodal Machine Learning: A Survey and Taxonomy").

    Parameters:
        in_features: Encoder output width per modality.
        features: The common width, ``>= 1``; the output width.
    """

    test_settings = {"features": 8}

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        values, have = self._stack(embeddings, masks)
        total = jnp.sum(jnp.where(have[..., None], values, 0.0), axis=1)
        count = jnp.sum(have, axis=1, keepdims=True)
        return total / jnp.maximum(count, 1)


class MaxFusion(_Pooling):
    """``[B, features]``: the element-wise maximum over the present modalities of each
    modality's linear projection to ``features`` (zeros for an example with none).
    Max pooling across modalities is the symmetric, order-free aggregator of deep
    sets (Zaheer et al., 2017, "Deep Sets"), used for fusion e.g. in TorchMultimodal's
    ``DeepsetFusionModule``.

    Parameters:
        in_features: Encoder output width per modality.
        features: The common width, ``>= 1``; the output width.
    """

    test_settings = {"features": 8}

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        values, have = self._stack(embeddings, masks)
        top = jnp.max(jnp.where(have[..., None], values, -jnp.inf), axis=1)
        return jnp.where(jnp.any(have, axis=1, keepdims=True), top, 0.0)
