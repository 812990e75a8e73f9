"""Plugin ``datasets``: the bundled data sets, one module each (host-side NumPy batches)."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    add = registrar.dataset
    add("synthetic", f"{__name__}.synthetic:SyntheticDataset",
        summary="generated image/text/audio examples whose label every modality carries")
    add("manifest", f"{__name__}.manifest:ManifestDataset",
        summary="your own images, audio and text, listed in a CSV or JSONL manifest")
    add("packed", f"{__name__}.packed:PackedDataset",
        summary="a data set `fusionjax pack` wrote: examples decoded once, read without decoding")
    add("sms_spam", f"{__name__}.sms_spam:SmsSpamDataset",
        summary="SMS Spam Collection: text messages labelled ham or spam")
    add("avdigits", f"{__name__}.avdigits:AVDigits",
        summary="image + audio: an MNIST digit and a spoken recording of the same digit")
    add("digit_qa", f"{__name__}.digit_qa:DigitQA",
        summary="image + audio + text: sum/difference/larger/smaller of a written and a spoken digit")
    add("digit_speech", f"{__name__}.digit_speech:DigitSpeech",
        summary="audio -> text: 1..N spoken digits of one FSDD speaker; transcript = the digit string")
    add("digit_strips", f"{__name__}.digit_strips:DigitStrips",
        summary="image -> text: N MNIST digits side by side; caption = the digit string")
