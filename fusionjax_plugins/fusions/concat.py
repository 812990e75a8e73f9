"""Concatenation fusion."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.interfaces import Fusion


class ConcatFusion(Fusion):
    """``[B, sum(D_m)]``: the embeddings side by side in sorted modality order; an
    absent modality's slot is zeros.  No parameters.

    Late fusion by concatenation, the baseline of the multimodal literature
    (Baltrusaitis et al., 2019, "Multimodal Machine Learning: A Survey and
    Taxonomy", IEEE TPAMI; MultiBench's ``Concat``).

    Parameters:
        in_features: Encoder output width per modality.
    """

    test_settings = {}

    def __init__(self, in_features: Mapping[str, int], *, rngs: nnx.Rngs):
        self.modalities = tuple(sorted(in_features))
        self.out_features = sum(in_features.values())

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        return jnp.concatenate(
            [jnp.where(masks[m][:, None], embeddings[m], 0.0) for m in self.modalities], axis=-1)
