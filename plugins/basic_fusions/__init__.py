"""Plugin ``basic_fusions``: late fusion by concatenation, sum, mean and max."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.fusion("concat", "fusionjax_plugins.basic_fusions.concat:ConcatFusion",
                     summary="concatenate the embeddings (absent modalities are zeros)")
    registrar.fusion("sum", "fusionjax_plugins.basic_fusions.sum:SumFusion",
                     summary="sum of the present modalities' (optionally projected) embeddings")
    registrar.fusion("mean", "fusionjax_plugins.basic_fusions.pooling:MeanFusion",
                     summary="mean of the present modalities, each projected to a common width")
    registrar.fusion("max", "fusionjax_plugins.basic_fusions.pooling:MaxFusion",
                     summary="element-wise max over the present modalities, each projected to a common width")
