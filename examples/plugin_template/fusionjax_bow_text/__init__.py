"""Plugin ``bow_text``: a bag-of-embeddings text encoder.

fusionjax finds this module through the entry point in ``pyproject.toml`` and
calls the hook below once.  The target is a lazy ``"module:attr"`` string, so
listing plugins never imports JAX or the encoder; it is imported when a config
first uses ``type = "bow_text"``.
"""

from fusionjax.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def fusionjax_register_components(registrar):
    registrar.encoder("bow_text", "fusionjax_bow_text.encoder:BagOfEmbeddingsEncoder",
                      summary="masked mean of token embeddings -> dense + ReLU; "
                              "int token ids [B, T], 0 = padding")
