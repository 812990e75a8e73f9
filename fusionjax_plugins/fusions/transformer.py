"""Cross-modal transformer over the encoders' token sequences (MulT-style)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.attention_blocks import Block, TokenEmbedding, check_heads, masked_mean


class CrossModalTransformer(Fusion):
    """Early fusion at token level after MulT, Tsai et al., 2019, "Multimodal
    Transformer for Unaligned Multimodal Language Sequences" (ACL).

    Every modality's token sequence (from its encoder's ``tokens()``) is embedded to
    width ``features`` (linear map + sinusoidal positions + a modality vector).
    Then, for each *target* modality, ``layers`` cross-modal blocks let its tokens
    attend to the tokens of all the other modalities (MulT keeps one cross-modal
    transformer per ordered pair; here one per target attends to the others'
    concatenated tokens, which is the same for two modalities and linear rather
    than quadratic in their number), followed by ``self_layers`` self-attention
    blocks over the target's own tokens (MulT's final transformer).  No alignment
    between sequences is assumed.  Each target's tokens are mean-pooled; the output
    concatenates the targets in sorted order: ``[B, M * features]``.

    Missing modalities: an absent modality's tokens are invalid keys for every
    other target and its own slot of the output is zeros; a target whose others
    are all absent keeps its own tokens (attention over no keys adds nothing).

    Parameters:
        in_features: Encoder output width per modality (at least two).
        token_features: Encoder token width per modality.
        features: Model width; a positive multiple of ``heads``.
        heads: Attention heads.
        layers: Cross-modal blocks per target, ``>= 1``.
        self_layers: Self-attention blocks per target after them, ``>= 0``.
    """

    test_settings = {"features": 8, "heads": 2, "layers": 1, "self_layers": 1}

    uses_tokens = True

    def __init__(self, in_features: Mapping[str, int], *, token_features: Mapping[str, int],
                 features: int = 64, heads: int = 4, layers: int = 2, self_layers: int = 1,
                 rngs: nnx.Rngs):
        check_heads(features, heads)
        if layers < 1 or self_layers < 0:
            raise ConfigError(f"needs layers >= 1 and self_layers >= 0, got {layers}, {self_layers}",
                              key="layers")
        self.modalities = tuple(sorted(in_features))
        if len(self.modalities) < 2:
            raise ConfigError("cross-modal attention needs at least two modalities", key="type")
        self.embed = nnx.Dict({m: TokenEmbedding(token_features[m], features, rngs=rngs)
                               for m in self.modalities})
        self.cross = nnx.Dict({m: nnx.List([Block(features, heads, rngs=rngs) for _ in range(layers)])
                               for m in self.modalities})
        self.own = nnx.Dict({m: nnx.List([Block(features, heads, rngs=rngs)
                                          for _ in range(self_layers)]) for m in self.modalities})
        self.norm = nnx.Dict({m: nnx.LayerNorm(features, rngs=rngs) for m in self.modalities})
        self.out_features = len(self.modalities) * features

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        seqs = {m: self.embed[m](tokens[m], masks[m]) for m in self.modalities}
        outputs = []
        for m in self.modalities:
            x, valid = seqs[m]
            others = [n for n in self.modalities if n != m]
            y = jnp.concatenate([seqs[n][0] for n in others], axis=1)
            y_valid = jnp.concatenate([seqs[n][1] for n in others], axis=1)
            for block in self.cross[m]:
                x = block(x, y, y_valid)
            for block in self.own[m]:
                x = block(x, None, valid)
            pooled = masked_mean(self.norm[m](x), valid)
            outputs.append(jnp.where(masks[m][:, None], pooled, 0.0))
        return jnp.concatenate(outputs, axis=-1)
