"""Sum fusion."""

from __future__ import annotations

from collections.abc import Mapping

import jax
from flax import nnx

from fusionjax.errors import ConfigError
from fusionjax.interfaces import Fusion
from fusionjax_plugins.layers.fusion_ops import present


class SumFusion(Fusion):
    """``[B, D]``: the sum of the present modalities' embeddings.

    With ``features=None`` every encoder must have the same width D; with
    ``features=D`` each modality is first projected to D by its own linear map.
    An absent modality adds nothing (an example with none present gets zeros).

    Additive late fusion (Baltrusaitis et al., 2019, "Multimodal Machine Learning:
    A Survey and Taxonomy", IEEE TPAMI), e.g. TorchMultimodal's ``sum`` fusion.

    Parameters:
        in_features: Encoder output width per modality.
        features: none: every encoder must have the same output width D, and the output
            width is D. An int D (``>= 1``): each modality is first projected to width D by
            its own linear layer.
    """

    test_settings = {}
    benchmark_settings = {"features": 128}  # the bundled encoders' widths differ

    def __init__(self, in_features: Mapping[str, int], *, features: int | None = None,
                 rngs: nnx.Rngs):
        self.modalities = tuple(sorted(in_features))
        if features is None:
            widths = {in_features[m] for m in self.modalities}
            if len(widths) > 1:
                listing = ", ".join(f"model.encoders.{m}: {in_features[m]}" for m in self.modalities)
                raise ConfigError(
                    f"sum needs equal encoder widths, got {listing}", key="features",
                    hint="set model.fusion.features=D to project each modality to width D "
                         "first, or give the encoders equal output widths")
            self.proj = None
            self.out_features = widths.pop()
        else:
            if features < 1:
                raise ConfigError(f"must be >= 1, got {features}", key="features")
            self.proj = nnx.Dict({m: nnx.Linear(in_features[m], features, rngs=rngs)
                                  for m in self.modalities})
            self.out_features = features

    def __call__(self, embeddings, masks, tokens=None) -> jax.Array:
        total = 0.0
        for m in self.modalities:
            e = present(embeddings[m], masks[m])  # before any arithmetic: absent NaN stays out
            if self.proj is not None:
                e = present(self.proj[m](e), masks[m])
            total = total + e
        return total
