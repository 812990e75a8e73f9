"""Plugin ``token_fusions``: early fusion over the encoders' token sequences."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.fusion("transformer", "fusionjax_plugins.token_fusions.transformer:CrossModalTransformer",
                     summary="cross-modal transformer over token sequences (MulT)")
    registrar.fusion("bottleneck", "fusionjax_plugins.token_fusions.bottleneck:BottleneckFusion",
                     summary="attention bottleneck tokens between per-modality transformers (MBT)")
