"""Plugin ``cnn_image``: a configurable CNN image encoder."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.encoder("cnn_image", "fusionjax_plugins.cnn_image.encoder:CNNImageEncoder",
                      summary="conv stack + pooling + dense on [B, H, W, C] images")
