"""Plugin ``augmentations``: the bundled augmentations and test-time corruptions, one module
per kind of input (host-side NumPy, one example at a time)."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    add = registrar.augmentation
    add("affine", f"{__name__}.image:Affine",
        summary="image: random shift (pixels), rotation and scale; background fill")
    add("contrast", f"{__name__}.image:Contrast",
        summary="image: contrast and brightness jitter, relative to the image's own statistics")
    add("invert", f"{__name__}.image:Invert",
        summary="image: dark on light <-> light on dark (max + min - x), with probability p")
    add("cutout", f"{__name__}.image:Cutout",
        summary="image: random rectangles set to the background")
    add("noise", f"{__name__}.noise:Noise",
        summary="image or audio: additive white Gaussian noise at an SNR (dB) of the example's own")
    add("gain", f"{__name__}.audio:Gain",
        summary="audio: loudness change by a gain in dB")
    add("time_shift", f"{__name__}.audio:TimeShift",
        summary="audio: shift in time (seconds), circular or zero-filled")
    add("speed", f"{__name__}.audio:Speed",
        summary="audio: speed (tempo and pitch) by a factor, resampled, then cropped or padded")
    add("word_dropout", f"{__name__}.text:WordDropout",
        summary="text: drop words with probability p, the rest shifted left")
    add("typos", f"{__name__}.text:Typos",
        summary="text: words become the unknown id (a misspelt word is out of vocabulary)")
