"""Plugin ``multiplicative_fusions``: fusions built on products of the modalities."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.fusion("tensor", "fusionjax_plugins.multiplicative_fusions.tensor:TensorFusion",
                     summary="tensor fusion network: outer product of 1-augmented embeddings (TFN)")
    registrar.fusion("low_rank", "fusionjax_plugins.multiplicative_fusions.low_rank:LowRankFusion",
                     summary="low-rank multimodal fusion, rank-r factors (LMF)")
    registrar.fusion("multiplicative",
                     "fusionjax_plugins.multiplicative_fusions.multiplicative:MultiplicativeFusion",
                     summary="multiplicative interactions: context-generated weights (MI)")
