"""Plugin ``bow_text``: a bag-of-embeddings text encoder, a learned weighted-sum fusion and
a generated two-text data set.

fusionjax finds this module through the entry point in ``pyproject.toml`` and calls the
hook below once.  The targets are lazy ``"module:attr"`` strings, so listing plugins never
imports JAX or the components; each is imported when a config first uses it.
"""

from fusionjax.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def fusionjax_register_components(registrar):
    registrar.encoder("bow_text", "fusionjax_bow_text.encoder:BagOfEmbeddingsEncoder",
                      summary="masked mean of token embeddings -> dense + ReLU; "
                              "int token ids [B, T], 0 = padding")
    registrar.fusion("weighted_sum", "fusionjax_bow_text.fusion:WeightedSumFusion",
                     summary="learned weighted sum of the present modalities' projected embeddings")
    registrar.dataset("topics", "fusionjax_bow_text.dataset:TopicsDataset",
                      summary="generated: a title and a body (token ids) about one of a few topics")
