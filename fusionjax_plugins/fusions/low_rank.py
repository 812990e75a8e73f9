"""Low-rank multimodal fusion: a tensor fusion with a rank-r weight, never materialised."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.fusion_ops import check_features, present


class LowRankFusion(Fusion):
    """Low-rank multimodal fusion (LMF), Liu et al., 2018, "Efficient Low-rank
    Multimodal Fusion with Modality-Specific Factors" (ACL).

    A tensor fusion followed by a linear map ``W`` to ``features`` outputs, where
    ``W`` is constrained to rank ``rank``: ``W = sum_r (x)_m W_m^(r)``.  The product
    then factorises, ``h = sum_r lambda_r * prod_m (z_m @ W_m^(r)) + b`` with
    ``z_m = [1, x_m]``, so the cost is linear in the number of modalities and the
    ``prod (D_m + 1)``-sized tensor is never built.

    Missing modalities: like :class:`TensorFusion`, an absent modality is
    ``z_m = [1, 0, ..., 0]`` (it keeps only its factor's constant row), so its data
    never reaches the output.

    ``tests/test_fusions.py`` checks it against the full tensor it factorises.

    Parameters:
        in_features: Encoder output width per modality.
        features: Output width, ``>= 1``.
        rank: Rank of the factorised weight, ``>= 1``.
    """

    test_settings = {"features": 8, "rank": 3}

    def __init__(self, in_features: Mapping[str, int], *, features: int = 128, rank: int = 4,
                 rngs: nnx.Rngs):
        check_features(features)
        check_features(rank, "rank")
        self.modalities = tuple(sorted(in_features))
        self.rank, self.out_features = rank, features
        # Each factor's product over M modalities should keep unit scale: draw every
        # factor with standard deviation (1 / (D_m + 1)) ** 0.5 (Glorot-like).
        self.factors = nnx.Dict({
            m: nnx.Param(jax.random.normal(rngs.params(), (in_features[m] + 1, rank * features))
                         / math.sqrt(in_features[m] + 1))
            for m in self.modalities})
        self.rank_weights = nnx.Param(jnp.full((rank,), 1.0 / rank))
        self.bias = nnx.Param(jnp.zeros((features,)))

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        product = None
        for m in self.modalities:
            x = present(embeddings[m], masks[m])
            z = jnp.concatenate([jnp.ones_like(x[:, :1]), x], axis=-1)
            f = (z @ self.factors[m][...]).reshape(x.shape[0], self.rank, self.out_features)
            product = f if product is None else product * f
        return jnp.einsum("brf,r->bf", product, self.rank_weights[...]) + self.bias[...]
