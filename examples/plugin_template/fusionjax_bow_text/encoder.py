"""Bag-of-embeddings text encoder: int token ids ``[B, T]`` (0 = padding) -> ``[B, features]``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Encoder, FieldSpec, TokenSequence


class BagOfEmbeddingsEncoder(Encoder):
    """Embed every token, average over the real ones (id != 0), then dense + ReLU.

    Padding never changes the result, wherever it is and however much of it
    there is; a row with no real token averages to zeros (no NaN).  Word order is
    ignored: this is a fast baseline.  :meth:`tokens` exposes the per-token
    embeddings ``[B, T, embed_dim]`` (zero where padded) with ``valid = ids != 0``,
    for token-level fusions.

    Config (``input_shape`` and, on data sets that declare it, ``vocab_size``
    are supplied by fusionjax)::

        [model.encoders.text]
        type = "bow_text"
        embed_dim = 64
        features = 64

    Parameters:
        input_shape: The modality's per-example shape, ``[T]`` token ids (passed by fusionjax).
        vocab_size: Number of token ids, id 0 being padding; ``>= 2``. Defaults to the data
            set's (its ``FieldSpec.metadata["vocab_size"]``).
        embed_dim: Width of each token's embedding (and of the token sequence); ``>= 1``.
        features: The output width; ``>= 1``.
    """

    # The smallest settings it is tested with, and the input they take: ``vocab_size``
    # is left to the input's metadata, as a data set's spec fills it in a config.
    test_settings = {"embed_dim": 8, "features": 6}
    test_input = FieldSpec((7,), "int32", {"vocab_size": 30})

    def __init__(
        self,
        input_shape: tuple[int, ...],
        *,
        vocab_size: int,
        embed_dim: int = 64,
        features: int = 64,
        rngs: nnx.Rngs,
    ):
        if len(input_shape) != 1:
            raise ConfigError(f"expects token ids [T]; the data gives {input_shape}", key="type")
        if vocab_size < 2:
            raise ConfigError(f"must be >= 2 (id 0 is padding), got {vocab_size}", key="vocab_size")
        for name, value in (("embed_dim", embed_dim), ("features", features)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=name)
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
        self.proj = nnx.Linear(embed_dim, features, rngs=rngs)
        self.out_features = features
        self.token_features = embed_dim

    def tokens(self, ids: jax.Array) -> TokenSequence:
        valid = ids != 0
        values = jnp.where(valid[..., None], self.embed(ids), 0.0)
        return TokenSequence(values, valid)

    def __call__(self, ids: jax.Array) -> jax.Array:
        values, valid = self.tokens(ids)
        count = valid.sum(axis=-1, keepdims=True).astype(values.dtype)
        mean = values.sum(axis=1) / jnp.maximum(count, 1.0)  # all-padding row: 0 / 1 = 0
        return nnx.relu(self.proj(mean))
