"""Modality dropout: during training, hide whole modalities of random examples.

A model that must also work when a modality is missing (a camera off, no audio
track) learns to from examples where that modality was hidden.  With
``train.modality_dropout = {image = 0.3}`` each training example loses its image
with probability 0.3: the modality's presence mask turns False, and the model
zeroes its input.  An example never loses *every* modality it has: where the
draw would hide them all, it keeps its original masks.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from fusionjax.interfaces import Batch, mask_key


def dropout_key(seed: int) -> jax.Array:
    """The key of the dropout stream, independent of the parameters' and the data's."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(b"train.modality_dropout"))


def drop_modalities(batch: Batch, rates: Mapping[str, float], modalities: Sequence[str],
                    key: jax.Array) -> Batch:
    """``batch`` with the masks of ``modalities`` redrawn: each of ``rates``' modalities
    is hidden with its probability, independently per example."""
    size = batch[modalities[0]].shape[0]
    before = {m: batch.get(mask_key(m), jnp.ones((size,), bool)) for m in modalities}
    after = dict(before)
    for i, m in enumerate(modalities):
        if rates.get(m, 0.0) > 0.0:
            keep = jax.random.uniform(jax.random.fold_in(key, i), (size,)) >= rates[m]
            after[m] = before[m] & keep
    anything_left = jnp.any(jnp.stack([after[m] for m in modalities]), axis=0)
    out = dict(batch)
    for m in modalities:
        out[mask_key(m)] = jnp.where(anything_left, after[m], before[m])
    return out
