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
    A head with ``inputs = "embeddings"`` reads the embeddings directly, one with
    ``inputs = "tokens"`` the encoders' token sequences (their pooled embeddings are not
    computed); either way the model has no fusion (``fusion=None``).
    """

    def __init__(self, encoders: Mapping[str, Encoder], fusion: Fusion | None, head: Head):
        self.encoders = nnx.Dict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.modalities = tuple(sorted(encoders))

    def inputs(self, batch: Batch) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """Each modality's input, zeros where the example lacks it, and its presence mask."""
        batch_size = batch[self.modalities[0]].shape[0]
        inputs, masks = {}, {}
        for m in self.modalities:
            mask = batch.get(mask_key(m))
            x = batch[m]
            if mask is None:
                mask = jnp.ones((batch_size,), bool)
            else:
                x = jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))
            inputs[m], masks[m] = x, mask
        return inputs, masks

    def embed(self, batch: Batch, *, tokens: bool = False) -> tuple[
            dict[str, jax.Array], dict[str, jax.Array], dict[str, TokenSequence] | None]:
        """Per-modality embeddings, presence masks and (with ``tokens``) token sequences."""
        inputs, masks = self.inputs(batch)
        embeddings = {m: self.encoders[m](x) for m, x in inputs.items()}
        seqs = {m: self.encoders[m].tokens(x) for m, x in inputs.items()} if tokens else None
        return embeddings, masks, seqs

    def token_sequences(self, batch: Batch) -> tuple[dict[str, TokenSequence], dict[str, jax.Array]]:
        """Per-modality token sequences and presence masks (no embeddings computed)."""
        inputs, masks = self.inputs(batch)
        return {m: self.encoders[m].tokens(x) for m, x in inputs.items()}, masks

    def features(self, batch: Batch) -> jax.Array:
        """Fused features ``[B, fusion.out_features]``."""
        embeddings, masks, tokens = self.embed(batch, tokens=self.fusion.uses_tokens)
        return self.fusion(embeddings, masks, tokens)

    def __call__(self, batch: Batch) -> jax.Array:
        if self.head.inputs == "tokens":
            return self.head(*self.token_sequences(batch))
        if self.fusion is None:
            embeddings, masks, _ = self.embed(batch)
            return self.head(embeddings, masks)
        return self.head(self.features(batch))
