"""Transformer pieces for the token-level fusions: masked multi-head attention
that is safe when a query has no valid key, pre-LayerNorm blocks, and the token
embedding every modality goes through."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import TokenSequence
from fusionjax_plugins.layers.fusion_ops import masked_softmax


def check_heads(features: int, heads: int) -> None:
    if features < 1 or heads < 1 or features % heads:
        raise ConfigError(f"features = {features} must be a positive multiple of heads = {heads}",
                          key="features", hint=f"e.g. features = {max(heads, 1) * 16}")


def sinusoids(length: int, features: int) -> jax.Array:
    """``[length, features]`` sinusoidal positions (Vaswani et al., 2017)."""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    rate = jnp.exp(-math.log(10_000.0) * jnp.arange(0, features, 2, dtype=jnp.float32) / features)
    table = jnp.zeros((length, features))
    table = table.at[:, 0::2].set(jnp.sin(position * rate))
    return table.at[:, 1::2].set(jnp.cos(position * rate[: features // 2]))


class Attention(nnx.Module):
    """Multi-head attention of queries ``x`` [B, Q, D] over keys ``y`` [B, K, D] where
    ``valid`` [B, K]; a query with no valid key gets zeros (never NaN, never an
    average of invalid values)."""

    def __init__(self, features: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.q, self.k, self.v, self.o = (nnx.Linear(features, features, rngs=rngs) for _ in range(4))

    def __call__(self, x: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
        b, q_len, d = x.shape
        split = lambda t: t.reshape(b, t.shape[1], self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(y)), split(self.v(y))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // self.heads)
        weights = masked_softmax(logits, valid[:, None, None, :])
        return self.o(jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, q_len, d))


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: ``x += attn(ln(x), ln(y)); x += mlp(ln(x))``.
    With ``y = x`` it is self-attention; otherwise cross-attention from x to y."""

    def __init__(self, features: int, heads: int, *, mlp_ratio: int = 2, rngs: nnx.Rngs):
        self.ln_x, self.ln_y, self.ln_mlp = (nnx.LayerNorm(features, rngs=rngs) for _ in range(3))
        self.attention = Attention(features, heads, rngs=rngs)
        self.mlp_in = nnx.Linear(features, mlp_ratio * features, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_ratio * features, features, rngs=rngs)

    def __call__(self, x: jax.Array, y: jax.Array | None, valid: jax.Array) -> jax.Array:
        h = self.ln_x(x)
        x = x + self.attention(h, h if y is None else self.ln_y(y), valid)
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln_mlp(x))))


class TokenEmbedding(nnx.Module):
    """A modality's tokens -> width ``features``: a linear map, sinusoidal positions
    and a learned modality-type vector.  Invalid tokens and absent examples become
    zeros and are marked invalid."""

    def __init__(self, in_features: int, features: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Linear(in_features, features, rngs=rngs)
        self.kind = nnx.Param(jax.random.normal(rngs.params(), (features,)) * 0.02)

    def __call__(self, seq: TokenSequence, present: jax.Array) -> tuple[jax.Array, jax.Array]:
        valid = seq.valid & present[:, None]
        values = jnp.where(valid[..., None], seq.values, 0.0)
        positions = sinusoids(values.shape[1], self.kind.shape[0]).astype(self.kind.dtype)
        x = self.proj(values) + positions + self.kind[...]  # in the parameters' dtype
        return jnp.where(valid[..., None], x, 0.0), valid


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """``[B, T, D]`` -> ``[B, D]``: the mean over valid tokens (zeros where none is)."""
    total = jnp.sum(jnp.where(valid[..., None], x, 0.0), axis=1)
    return total / jnp.maximum(jnp.sum(valid, axis=1, keepdims=True), 1)
