"""Feature-wise linear modulation of one modality by the others."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.fusion_ops import pick_modality, present


class FiLMFusion(Fusion):
    """FiLM, Perez et al., 2018, "FiLM: Visual Reasoning with a General Conditioning
    Layer" (AAAI): the embedding ``x`` of one modality (``modality``; default the
    first in sorted order) is scaled and shifted feature by feature by functions
    of the others, ``out = (1 + dgamma(c)) * x + beta(c)``, where ``c`` is the
    concatenation of the other modalities' embeddings and ``dgamma``, ``beta`` are
    linear maps (``dgamma`` starts at zero, so an untrained FiLM is the identity on
    ``x`` plus a shift -- the paper's ``1 + dgamma`` parametrisation).  Output width:
    the modulated modality's.  The classic use: a question (text) modulating an
    image's features.

    Missing modalities: an absent conditioning modality is zero in ``c``; an absent
    modulated modality gives ``x = 0``, leaving ``beta(c)`` -- what the others say.

    Parameters:
        in_features: Encoder output width per modality (at least two).
        modality: The modulated modality; none = the first in sorted order. An unknown name
            is an error with a did-you-mean (``model.fusion.modality: the model has no
            modality 'imgae' (did you mean 'image'?)``).
    """

    test_settings = {"modality": "b"}

    def __init__(self, in_features: Mapping[str, int], *, modality: str | None = None,
                 rngs: nnx.Rngs):
        self.modality = pick_modality(modality, in_features, "modality", "modulated modality")
        self.conditions = tuple(m for m in sorted(in_features) if m != self.modality)
        width = in_features[self.modality]
        cond = sum(in_features[m] for m in self.conditions)
        self.dgamma = nnx.Linear(cond, width, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.beta = nnx.Linear(cond, width, rngs=rngs)
        self.out_features = width

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        x = present(embeddings[self.modality], masks[self.modality])
        c = jnp.concatenate([present(embeddings[m], masks[m]) for m in self.conditions], axis=-1)
        return (1.0 + self.dgamma(c)) * x + self.beta(c)
