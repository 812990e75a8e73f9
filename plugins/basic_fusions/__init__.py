"""Plugin ``basic_fusions``: late fusion by concatenation and by (projected) sum."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.fusion("concat", "fusionjax_plugins.basic_fusions.concat:ConcatFusion",
                     summary="concatenate the embeddings (absent modalities are zeros)")
    registrar.fusion("sum", "fusionjax_plugins.basic_fusions.sum:SumFusion",
                     summary="sum of the present modalities' (optionally projected) embeddings")
