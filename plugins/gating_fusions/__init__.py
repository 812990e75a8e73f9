"""Plugin ``gating_fusions``: fusions that weigh or modulate modalities by learned gates."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.fusion("gated", "fusionjax_plugins.gating_fusions.gated:GatedFusion",
                     summary="gated multimodal unit (Arevalo et al., 2017) over N modalities")
    registrar.fusion("attention", "fusionjax_plugins.gating_fusions.attention:AttentionFusion",
                     summary="learned softmax weights over the present modalities, per example")
    registrar.fusion("film", "fusionjax_plugins.gating_fusions.film:FiLMFusion",
                     summary="feature-wise linear modulation of one modality by the others (FiLM)")
