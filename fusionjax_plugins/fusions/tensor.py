"""Tensor fusion network: the outer product of the 1-augmented embeddings."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.fusion_ops import check_features, present


class TensorFusion(Fusion):
    """Tensor fusion, Zadeh et al., 2017, "Tensor Fusion Network for Multimodal
    Sentiment Analysis" (EMNLP): each embedding is extended with a constant 1,
    ``z_m = [1, x_m]``, and the output is their outer product
    ``z_1 (x) z_2 (x) ... (x) z_M``, flattened: it holds every unimodal feature, every
    pairwise product, ..., every M-way product.  (The paper's post-fusion network is
    the head's MLP.)

    The size is ``prod_m (D_m + 1)``, which explodes with the number of modalities;
    ``project = k`` first maps each embedding to width ``k`` (the paper fuses 32-,
    32- and 128-wide embeddings), and configurations whose product exceeds
    ``max_features`` are refused when the config is checked.

    Missing modalities: an absent modality is ``z_m = [1, 0, ..., 0]``, which keeps
    exactly the products that do not involve it (as the paper's constant 1
    intends); its data never reaches the output.

    Output width: ``prod_m (D_m + 1)`` (with ``project = k``: ``(k + 1) ** M``).  The size
    is checked before anything is built, and the error suggests a ``project`` that fits:
    ``model.fusion.max_features: the fused tensor would have 274,625 features ((64 + 1) x
    (64 + 1) x (64 + 1)), over max_features = 32,768``, hint ``set model.fusion.project = 31
    (or less) to project each modality first, or raise model.fusion.max_features knowingly``.

    Parameters:
        in_features: Encoder output width per modality.
        project: Project each modality to this width first (``>= 1``); none: no projection.
        max_features: The largest fused size accepted.
    """

    test_settings = {"project": 3}
    benchmark_settings = {"project": 31}  # a (31 + 1)^3 = 32,768-wide product of three modalities

    def __init__(self, in_features: Mapping[str, int], *, project: int | None = None,
                 max_features: int = 32768, rngs: nnx.Rngs):
        self.modalities = tuple(sorted(in_features))
        if project is not None:
            check_features(project, "project")
            self.proj = nnx.Dict({m: nnx.Linear(in_features[m], project, rngs=rngs)
                                  for m in self.modalities})
            widths = {m: project for m in self.modalities}
        else:
            self.proj = None
            widths = dict(in_features)
        size = math.prod(widths[m] + 1 for m in self.modalities)
        if size > max_features:
            fits = 1  # the largest k with (k + 1) ** M <= max_features
            while (fits + 2) ** len(widths) <= max_features:
                fits += 1
            raise ConfigError(
                f"the fused tensor would have {size:,} features ("
                + " x ".join(f"({widths[m]} + 1)" for m in self.modalities)
                + f"), over max_features = {max_features:,}", key="project" if project else "max_features",
                hint=f"set model.fusion.project = {fits} (or less) to project each modality first, "
                     f"or raise model.fusion.max_features knowingly")
        self.out_features = size

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        product = None
        for m in self.modalities:
            x = present(embeddings[m], masks[m])
            x = present(self.proj[m](x), masks[m]) if self.proj is not None else x
            z = jnp.concatenate([jnp.ones_like(x[:, :1]), x], axis=-1)
            product = z if product is None else (product[:, :, None] * z[:, None, :]).reshape(
                z.shape[0], -1)
        return product
