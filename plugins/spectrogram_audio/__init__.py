"""Plugin ``spectrogram_audio``: waveform -> log-mel spectrogram (in the step) -> CNN."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.encoder(
        "spectrogram_audio", "fusionjax_plugins.spectrogram_audio.encoder:SpectrogramAudioEncoder",
        summary="raw waveform [B, samples] -> STFT -> Slaney log-mel -> conv stack -> dense")
