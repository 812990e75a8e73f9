"""Plugin ``digits``: MNIST handwritten digits paired with Free Spoken Digit recordings."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.dataset("avdigits", "fusionjax_plugins.digits.avdigits:AVDigits",
                      summary="image + audio: an MNIST digit and a spoken recording of the same digit")
    registrar.dataset("digit_qa", "fusionjax_plugins.digits.digit_qa:DigitQA",
                      summary="image + audio + text: sum/difference/larger/smaller of a written "
                              "and a spoken digit")
