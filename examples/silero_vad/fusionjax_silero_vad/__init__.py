"""Plugin ``silero_vad``: silero-vad's pretrained 16 kHz voice-activity network as an
audio encoder, its weights read from the file the silero-vad wheel ships.

The target is a lazy ``"module:attr"`` string: listing plugins imports neither JAX nor
the encoder, and nothing here ever imports ``silero_vad`` (which imports torch).
"""

from fusionjax.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def fusionjax_register_components(registrar):
    registrar.encoder("silero_vad", "fusionjax_silero_vad.encoder:SileroVADEncoder",
                      summary="silero VAD's pretrained 16 kHz network (STFT conv front end + LSTM "
                              "over 32 ms chunks) on waveforms [B, samples]")
