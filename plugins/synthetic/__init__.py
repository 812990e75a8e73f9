"""Plugin ``synthetic``: a generated image + text + audio data set with a learnable label."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.dataset("synthetic", "fusionjax_plugins.synthetic.dataset:SyntheticDataset",
                      summary="generated image/text/audio examples whose label every modality carries")
