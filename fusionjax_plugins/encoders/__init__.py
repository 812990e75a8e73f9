"""Plugin ``encoders``: the bundled encoders, one module each (one modality's batch -> embedding)."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    add = registrar.encoder
    add("cnn_image", f"{__name__}.cnn_image:CNNImageEncoder",
        summary="conv stack + pooling + dense on [B, H, W, C] images")
    add("lstm_text", f"{__name__}.lstm_text:LSTMTextEncoder",
        summary="embedding + (bi)LSTM on int token ids [B, T], 0 = padding")
    add("spectrogram_audio", f"{__name__}.spectrogram_audio:SpectrogramAudioEncoder",
        summary="raw waveform [B, samples] -> STFT -> Slaney log-mel -> conv stack -> dense")
