"""Attention bottlenecks between per-modality transformers (MBT)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.attention_blocks import Block, TokenEmbedding, check_heads, masked_mean


class BottleneckFusion(Fusion):
    """Multimodal bottleneck transformer (MBT), Nagrani et al., 2021, "Attention
    Bottlenecks for Multimodal Fusion" (NeurIPS).

    Each modality has its own transformer over its embedded tokens.  A few shared
    *bottleneck* tokens (``bottlenecks``, learned) are the only path between
    modalities: in every fusion layer each modality's block attends over
    ``[its tokens, the bottleneck tokens]``, and the bottleneck tokens are then
    replaced by the average of the modalities' updated copies.  The first
    ``unimodal_layers`` layers do not exchange (the paper's "mid fusion").  The
    output is the mean over modalities of each one's mean-pooled final tokens:
    ``[B, features]``.

    Missing modalities: the bottleneck average and the output mean run over the
    modalities the example has, so an absent modality writes nothing anywhere.

    Parameters:
        in_features: Encoder output width per modality.
        token_features: Encoder token width per modality.
        features: Model width; a positive multiple of ``heads``.
        heads: Attention heads.
        layers: Blocks per modality, ``>= 1``.
        unimodal_layers: The first layers that do not exchange through the bottleneck (MBT's
            mid fusion); ``0 <= unimodal_layers < layers``.
        bottlenecks: Number of bottleneck tokens, ``>= 1``.
    """

    test_settings = {"features": 8, "heads": 2, "layers": 2, "unimodal_layers": 1, "bottlenecks": 2}

    uses_tokens = True

    def __init__(self, in_features: Mapping[str, int], *, token_features: Mapping[str, int],
                 features: int = 64, heads: int = 4, layers: int = 2, unimodal_layers: int = 0,
                 bottlenecks: int = 4, rngs: nnx.Rngs):
        check_heads(features, heads)
        if layers < 1 or not 0 <= unimodal_layers < layers:
            raise ConfigError(f"needs layers >= 1 and 0 <= unimodal_layers < layers, got layers = "
                              f"{layers}, unimodal_layers = {unimodal_layers}", key="unimodal_layers")
        if bottlenecks < 1:
            raise ConfigError(f"must be >= 1, got {bottlenecks}", key="bottlenecks")
        self.modalities = tuple(sorted(in_features))
        self.unimodal_layers = unimodal_layers
        self.embed = nnx.Dict({m: TokenEmbedding(token_features[m], features, rngs=rngs)
                               for m in self.modalities})
        self.blocks = nnx.Dict({m: nnx.List([Block(features, heads, rngs=rngs) for _ in range(layers)])
                                for m in self.modalities})
        self.norm = nnx.Dict({m: nnx.LayerNorm(features, rngs=rngs) for m in self.modalities})
        self.bottleneck = nnx.Param(jax.random.normal(rngs.params(), (bottlenecks, features)) * 0.02)
        self.out_features = features

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        seqs = {m: self.embed[m](tokens[m], masks[m]) for m in self.modalities}
        present = jnp.stack([masks[m] for m in self.modalities], axis=1)  # [B, M]
        count = jnp.maximum(jnp.sum(present, axis=1), 1)[:, None, None]
        size = present.shape[0]
        shared = jnp.broadcast_to(self.bottleneck[...], (size, *self.bottleneck.shape))
        n = shared.shape[1]
        xs = {m: seqs[m][0] for m in self.modalities}
        for layer in range(len(self.blocks[self.modalities[0]])):
            exchange = layer >= self.unimodal_layers
            updates = []
            for m in self.modalities:
                valid = seqs[m][1]
                block = self.blocks[m][layer]
                if exchange:
                    both = jnp.concatenate([xs[m], shared], axis=1)
                    keys = jnp.concatenate([valid, jnp.ones((size, n), bool)], axis=1)
                    out = block(both, None, keys)
                    xs[m], update = out[:, :-n], out[:, -n:]
                    updates.append(jnp.where(masks[m][:, None, None], update, 0.0))
                else:
                    xs[m] = block(xs[m], None, valid)
            if exchange:
                shared = jnp.where(jnp.any(present, axis=1)[:, None, None],
                                   sum(updates) / count, shared)
        pooled = [jnp.where(masks[m][:, None], masked_mean(self.norm[m](xs[m]), seqs[m][1]), 0.0)
                  for m in self.modalities]
        return sum(pooled) / count[:, :, 0]
