"""Plugin ``contrastive``: a CLIP-style two-modality contrastive head."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.head("contrastive", "fusionjax_plugins.contrastive.head:ContrastiveHead",
                     summary="InfoNCE between two modalities' embeddings, learned temperature; recall@k")
