"""Plugin ``lstm_text``: an embedding + LSTM text encoder."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.encoder("lstm_text", "fusionjax_plugins.lstm_text.encoder:LSTMTextEncoder",
                      summary="embedding + (bi)LSTM on int token ids [B, T], 0 = padding")
