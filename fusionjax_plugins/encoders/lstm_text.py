"""LSTM text encoder: int token ids ``[B, T]`` (0 = padding) -> ``[B, hidden * directions]``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax import layouts
from fusionjax.errors import ConfigError
from fusionjax.interfaces import Encoder, FieldSpec, TokenSequence
from fusionjax_plugins.kernels.lstm import lstm_recurrence


class LSTMLayer(nnx.Module):
    """One direction of one LSTM layer, gates ordered (input, forget, cell, output).

    The input projection of every time step is one matmul outside the recurrence;
    :func:`~fusionjax_plugins.kernels.lstm.lstm_recurrence` runs the rest.  At a
    padded step the state is carried unchanged, so the final state is the state
    after the last real token, whatever the padding.
    """

    def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs):
        forget_bias = jnp.zeros(4 * hidden).at[hidden:2 * hidden].set(1.0)
        self.inp = nnx.Linear(in_features, 4 * hidden, rngs=rngs,
                              bias_init=lambda *_: forget_bias)
        self.rec = nnx.Linear(hidden, 4 * hidden, use_bias=False, rngs=rngs,
                              kernel_init=nnx.initializers.orthogonal())
        self.hidden = hidden

    def __call__(self, x: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x [B, T, D]``, ``valid [B, T]`` -> (outputs ``[B, T, H]``, zero where
        padded; final hidden state ``[B, H]``)."""
        # time-major before the projection: the [T, B, 4H] gate gradients then need no
        # transpose on the way back (the narrower input's does)
        gates_in = self.inp(jnp.swapaxes(x, 0, 1))  # [T, B, 4H]
        w_rec = self.rec.kernel[...].astype(gates_in.dtype)
        outputs, h = lstm_recurrence(gates_in, valid.T, w_rec)
        return jnp.swapaxes(outputs, 0, 1), h


class LSTMTextEncoder(Encoder):
    """Embedding -> ``layers`` LSTM layers (optionally bidirectional).

    The embedding is the hidden state at each row's last real token (and, when
    bidirectional, the backward state at its first real token, concatenated).
    Padding (id 0) never changes the result.  The token sequence is the last
    layer's per-token outputs with ``valid = ids != 0``.

    Input: int token ids ``[T]``, 0 = padding.  Output width:
    ``hidden * (2 if bidirectional else 1)``.

    PyTorch layout (``init_from = {safetensors = "FILE", layout = "pytorch"}``): a module
    with ``embed`` = ``nn.Embedding(vocab_size, embed_dim)`` (``embed.weight``; a
    ``padding_idx=0`` changes nothing, padding is skipped) and ``lstm`` =
    ``nn.LSTM(embed_dim, hidden, num_layers=layers, bidirectional=bidirectional,
    batch_first=True)`` (``lstm.weight_ih_l{k}``, ``lstm.weight_hh_l{k}``, ``lstm.bias_ih_l{k}``,
    ``lstm.bias_hh_l{k}``, and ``..._l{k}_reverse`` for the backward direction; the two
    biases are summed), run on ``pack_padded_sequence`` of the rows (padding at the end);
    the embedding is the last layer's ``h_n`` (forward, then backward).  PyTorch's gate
    order is this LSTM's: input, forget, cell, output.

    Parameters:
        input_shape: Must be 1-D (``[T]``).
        vocab_size: Size of the embedding table (token ids ``0..vocab_size-1``). Required;
            taken from the data set's text metadata (``synthetic``: ``data.vocab_size``), and
            must equal it if set. ``>= 1``.
        embed_dim: Embedding width. ``>= 1``.
        hidden: LSTM hidden size per direction. ``>= 1``.
        layers: Number of stacked LSTM layers. ``>= 1``.
        bidirectional: Add a backward LSTM in every layer.
    """

    test_settings = {"vocab_size": 30, "embed_dim": 8, "hidden": 8, "bidirectional": True, "layers": 2}
    test_input = FieldSpec((7,), "int32", {"vocab_size": 30})

    def __init__(
        self,
        input_shape: tuple[int, ...],
        *,
        vocab_size: int,
        embed_dim: int = 128,
        hidden: int = 128,
        layers: int = 1,
        bidirectional: bool = False,
        rngs: nnx.Rngs,
    ):
        if len(input_shape) != 1:
            raise ConfigError(f"expects token ids [T]; the data gives {input_shape}", key="type")
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim),
                            ("hidden", hidden), ("layers", layers)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=name)
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
        directions = 2 if bidirectional else 1
        stack, width = [], embed_dim
        for _ in range(layers):
            stack.append(nnx.List([LSTMLayer(width, hidden, rngs=rngs) for _ in range(directions)]))
            width = hidden * directions
        self.layers = nnx.List(stack)
        self.out_features = self.token_features = width

    def torch_layout(self) -> dict[str, layouts.FromTorch]:
        """The parameters from a PyTorch state dict (the class docstring's module)."""
        rules = {"embed/embedding": layouts.same("embed.weight")}
        for k, directions in enumerate(self.layers):
            for d in range(len(directions)):
                at, tail = f"layers/{k}/{d}", f"l{k}" + ("_reverse" if d else "")
                rules |= layouts.torch_lstm(
                    f"{at}/inp/kernel", f"{at}/rec/kernel", f"{at}/inp/bias",
                    f"lstm.weight_ih_{tail}", f"lstm.weight_hh_{tail}", f"lstm.bias_ih_{tail}",
                    f"lstm.bias_hh_{tail}", gates="ifgo")  # LSTMLayer's order: input, forget, cell, output
        return rules

    def _run(self, ids: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        valid = ids != 0
        # the table's own dtype (nnx.Embed would promote it to the dtype it was built with,
        # float32, even when mixed precision hands it over in bfloat16)
        x = jnp.take(self.embed.embedding[...], ids, axis=0)
        for directions in self.layers:
            outputs, finals = [], []
            for d, lstm in enumerate(directions):
                if d == 0:
                    out, h = lstm(x, valid)
                else:  # backward: run over the reversed sequence; padding is skipped either way
                    out, h = lstm(x[:, ::-1], valid[:, ::-1])
                    out = out[:, ::-1]
                outputs.append(out)
                finals.append(h)
            x = jnp.concatenate(outputs, axis=-1)
        return x, jnp.concatenate(finals, axis=-1), valid

    def __call__(self, ids: jax.Array) -> jax.Array:
        return self._run(ids)[1]

    def tokens(self, ids: jax.Array) -> TokenSequence:
        seq, _, valid = self._run(ids)
        return TokenSequence(seq, valid)
