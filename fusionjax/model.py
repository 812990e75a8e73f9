"""The model every config assembles into: encoders -> fusion -> head."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.interfaces import Batch, Encoder, Fusion, Head, mask_key


class FusionModel(nnx.Module):
    """``encoders`` (one per modality, an ``nnx.Dict``), a ``fusion`` and a ``head``.

    ``model(batch)`` returns the head's predictions for a batch dict keyed by
    modality name; ``batch["mask/<modality>"]`` (bool ``[B]``), when present, marks
    which examples have that modality.
    """

    def __init__(self, encoders: Mapping[str, Encoder], fusion: Fusion, head: Head):
        self.encoders = nnx.Dict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.modalities = tuple(sorted(encoders))

    def features(self, batch: Batch) -> jax.Array:
        """Fused features ``[B, fusion.out_features]``."""
        batch_size = batch[self.modalities[0]].shape[0]
        embeddings, masks, tokens = {}, {}, {} if self.fusion.uses_tokens else None
        for m in self.modalities:
            encoder = self.encoders[m]
            embeddings[m] = encoder(batch[m])
            masks[m] = batch.get(mask_key(m), jnp.ones((batch_size,), bool))
            if tokens is not None:
                tokens[m] = encoder.tokens(batch[m])
        return self.fusion(embeddings, masks, tokens)

    def __call__(self, batch: Batch) -> jax.Array:
        return self.head(self.features(batch))
