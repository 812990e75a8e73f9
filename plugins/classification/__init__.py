"""Plugin ``classification``: the softmax classification head."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.head("classification", "fusionjax_plugins.classification.head:ClassificationHead",
                   summary="MLP -> logits; softmax cross-entropy; accuracy, macro F1 (and F1 of class 1)")
