"""Plugin ``multilabel``: the sigmoid multi-label head."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.head("multilabel", "fusionjax_plugins.multilabel.head:MultiLabelHead",
                     summary="MLP -> per-label logits; sigmoid cross-entropy; micro/macro F1, mAP")
