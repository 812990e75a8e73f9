"""Gated multimodal unit, generalised to N modalities."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.fusion_ops import check_features, masked_softmax, present, stacked_masks


class GatedFusion(Fusion):
    """Gated multimodal unit (GMU) of Arevalo et al., 2017, "Gated Multimodal Units for
    Information Fusion" (ICLR workshop), for any number of modalities.

    Each modality gets a candidate ``h_m = tanh(W_m x_m)`` of width ``features``; a
    gate network reads *all* the embeddings at once and gives, per feature, one
    logit per modality, ``g = W_z [x_1, ..., x_M]`` (``[B, M, features]``); the
    output is ``sum_m softmax_m(g) * h_m``.  With two modalities the softmax over
    two logits is a sigmoid of their difference, which is exactly the paper's
    bimodal unit ``z * h_v + (1 - z) * h_t``.

    Missing modalities: an absent modality's embedding is zero in the gate's input
    and its logits are excluded from the softmax, so the gates are renormalised
    over the modalities the example has.

    Parameters:
        in_features: Encoder output width per modality.
        features: Width of the candidates and the output, ``>= 1``.
    """

    test_settings = {"features": 8}

    def __init__(self, in_features: Mapping[str, int], *, features: int = 128, rngs: nnx.Rngs):
        check_features(features)
        self.modalities = tuple(sorted(in_features))
        self.candidates = nnx.Dict({m: nnx.Linear(in_features[m], features, rngs=rngs)
                                    for m in self.modalities})
        self.gate = nnx.Linear(sum(in_features.values()), len(self.modalities) * features, rngs=rngs)
        self.out_features = features

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        xs = {m: present(embeddings[m], masks[m]) for m in self.modalities}
        h = jnp.stack([jnp.tanh(self.candidates[m](xs[m])) for m in self.modalities], axis=1)
        logits = self.gate(jnp.concatenate([xs[m] for m in self.modalities], axis=-1))
        logits = logits.reshape(h.shape)  # [B, M, features]
        z = masked_softmax(logits, stacked_masks(masks, self.modalities)[..., None], axis=1)
        return jnp.sum(z * h, axis=1)
