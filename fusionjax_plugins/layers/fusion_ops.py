"""Small pieces the bundled fusions share: masking and per-modality projections.

The rule every fusion keeps: an absent modality contributes nothing, whatever its
embedding holds (NaN included).  So absent data is removed with ``jnp.where``
(never by multiplying with the mask: ``0 * nan`` is ``nan``), and weights over
modalities are normalised over the present ones only.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.errors import ConfigError


def present(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``x`` ([B, ...]) with the rows of absent examples replaced by zeros."""
    return jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))


def masked_softmax(logits: jax.Array, mask: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax over the entries where ``mask`` is True; all-zero where none is."""
    logits = jnp.where(mask, logits, -jnp.inf)
    top = jnp.max(logits, axis=axis, keepdims=True)
    e = jnp.where(mask, jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def stacked_masks(masks: Mapping[str, jax.Array], modalities: tuple[str, ...]) -> jax.Array:
    """``[B, M]`` bool: which of ``modalities`` each example has."""
    return jnp.stack([masks[m] for m in modalities], axis=1)


def check_features(features: int, key: str = "features") -> None:
    if features < 1:
        raise ConfigError(f"must be >= 1, got {features}", key=key)


def projections(in_features: Mapping[str, int], features: int, *, rngs: nnx.Rngs) -> nnx.Dict:
    """One linear map per modality to a common width."""
    check_features(features)
    return nnx.Dict({m: nnx.Linear(in_features[m], features, rngs=rngs) for m in sorted(in_features)})


def pick_modality(name: str | None, in_features: Mapping[str, int], key: str, role: str) -> str:
    """The modality a fusion gives a special ``role`` (``None``: the first in sorted order)."""
    from fusionjax.errors import did_you_mean

    modalities = sorted(in_features)
    if len(modalities) < 2:
        raise ConfigError(f"needs at least two modalities to have a {role}, the model has "
                          f"{modalities}", key=key)
    if name is None:
        return modalities[0]
    if name not in in_features:
        raise ConfigError(f"the model has no modality {name!r}{did_you_mean(name, modalities)}",
                          key=key, hint=f"its modalities are: {', '.join(modalities)}")
    return name
