"""Plugin ``manifest``: your own data, one example per row of a CSV or JSONL file."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.dataset("manifest", "fusionjax_plugins.manifest.dataset:ManifestDataset",
                      summary="your own images, audio and text, listed in a CSV or JSONL manifest")
