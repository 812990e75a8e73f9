"""The model every config assembles into: encoders -> fusion -> head."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.interfaces import Batch, Encoder, Fusion, Head, TokenSequence, mask_key


class FusionModel(nnx.Module):
    """``encoders`` (one per modality, an ``nnx.Dict``), a ``fusion`` and a ``head``.

    ``model(batch)`` returns the head's predictions for a batch dict keyed by
    modality name; ``batch["mask/<modality>"]`` (bool ``[B]``), when present, marks
    which examples have that modality.  An absent modality's input is replaced by
    zeros before it is encoded, so nothing it holds reaches a value or a gradient.
    A head with ``inputs = "embeddings"`` reads the embeddings directly and the
    model has no fusion (``fusion=None``).
    """

    def __init__(self, encoders: Mapping[str, Encoder], fusion: Fusion | None, head: Head):
        self.encoders = nnx.Dict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.modalities = tuple(sorted(encoders))

    def embed(self, batch: Batch, *, tokens: bool = False) -> tuple[
            dict[str, jax.Array], dict[str, jax.Array], dict[str, TokenSequence] | None]:
        """Per-modality embeddings, presence masks and (with ``tokens``) token sequences."""
        batch_size = batch[self.modalities[0]].shape[0]
        embeddings, masks, seqs = {}, {}, {} if tokens else None
        for m in self.modalities:
            mask = batch.get(mask_key(m))
            x = batch[m]
            if mask is None:
                mask = jnp.ones((batch_size,), bool)
            else:
                x = jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))
            encoder = self.encoders[m]
            embeddings[m] = encoder(x)
            masks[m] = mask
            if seqs is not None:
                seqs[m] = encoder.tokens(x)
        return embeddings, masks, seqs

    def features(self, batch: Batch) -> jax.Array:
        """Fused features ``[B, fusion.out_features]``."""
        embeddings, masks, tokens = self.embed(batch, tokens=self.fusion.uses_tokens)
        return self.fusion(embeddings, masks, tokens)

    def __call__(self, batch: Batch) -> jax.Array:
        if self.fusion is None:
            embeddings, masks, _ = self.embed(batch)
            return self.head(embeddings, masks)
        return self.head(self.features(batch))
