"""Plugin ``heads``: the bundled heads, one module each (features -> predictions, loss, metrics, answer)."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    add = registrar.head
    add("classification", f"{__name__}.classification:ClassificationHead",
        summary="MLP -> logits; softmax cross-entropy; accuracy, macro F1 (and F1 of class 1)")
    add("multilabel", f"{__name__}.multilabel:MultiLabelHead",
        summary="MLP -> per-label logits; sigmoid cross-entropy; micro/macro F1, mAP")
    add("regression", f"{__name__}.regression:RegressionHead",
        summary="MLP -> real values; MSE, MAE or Huber loss; MSE, MAE, R^2")
    add("contrastive", f"{__name__}.contrastive:ContrastiveHead",
        summary="InfoNCE between two modalities' embeddings, learned temperature; recall@k")
    add("ctc", f"{__name__}.ctc:CTCHead",
        summary="per-frame logits over one modality's tokens; CTC loss; greedy/prefix beam search")
    add("decoder", f"{__name__}.decoder:DecoderHead",
        summary="Transformer decoder over all modalities' tokens; teacher forcing; greedy/beam search")
