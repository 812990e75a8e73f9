"""Plugin ``fusions``: the bundled fusions, one module each ({modality: embedding} -> features)."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    add = registrar.fusion
    add("concat", f"{__name__}.concat:ConcatFusion",
        summary="concatenate the embeddings (absent modalities are zeros)")
    add("sum", f"{__name__}.sum:SumFusion",
        summary="sum of the present modalities' (optionally projected) embeddings")
    add("mean", f"{__name__}.pooling:MeanFusion",
        summary="mean of the present modalities, each projected to a common width")
    add("max", f"{__name__}.pooling:MaxFusion",
        summary="element-wise max over the present modalities, each projected to a common width")
    add("gated", f"{__name__}.gated:GatedFusion",
        summary="gated multimodal unit (Arevalo et al., 2017) over N modalities")
    add("attention", f"{__name__}.attention:AttentionFusion",
        summary="learned softmax weights over the present modalities, per example")
    add("film", f"{__name__}.film:FiLMFusion",
        summary="feature-wise linear modulation of one modality by the others (FiLM)")
    add("tensor", f"{__name__}.tensor:TensorFusion",
        summary="tensor fusion network: outer product of 1-augmented embeddings (TFN)")
    add("low_rank", f"{__name__}.low_rank:LowRankFusion",
        summary="low-rank multimodal fusion, rank-r factors (LMF)")
    add("multiplicative", f"{__name__}.multiplicative:MultiplicativeFusion",
        summary="multiplicative interactions: context-generated weights (MI)")
    add("transformer", f"{__name__}.transformer:CrossModalTransformer",
        summary="cross-modal transformer over token sequences (MulT)")
    add("bottleneck", f"{__name__}.bottleneck:BottleneckFusion",
        summary="attention bottleneck tokens between per-modality transformers (MBT)")
