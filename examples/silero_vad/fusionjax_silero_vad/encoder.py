"""Silero VAD's 16 kHz network as a fusionjax encoder: waveform ``[B, samples]`` -> ``[B, 128]``.

The network (silero-vad 6.2.3, ``silero_vad/tinygrad_model.py``), per chunk of 512 new
samples with the 64 samples before them as context (576 in all):

    reflect-pad 64 on the right -> conv(258, kernel 256, stride 128, no bias): a
    Hann-windowed DFT, 4 frames of 129 real and 129 imaginary parts -> magnitude ->
    4 x (conv1d k=3 pad=1 + ReLU): 129 -> 128 -> 64 (stride 2) -> 64 (stride 2) -> 128,
    one frame left -> LSTMCell(128, 128), its state carried from chunk to chunk ->
    ReLU -> 1x1 conv -> sigmoid: the chunk's speech probability.

Here every chunk's convolutions run at once (they do not depend on each other) and
``jax.lax.scan`` runs the LSTM over the chunks; the first chunk's context is zeros and
the last chunk is zero-padded, as silero's own ``get_speech_timestamps`` does.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusionjax import layouts
from fusionjax.errors import ConfigError
from fusionjax.interfaces import Encoder, FieldSpec, TokenSequence

SAMPLE_RATE = 16000
CHUNK = 512  # new samples per chunk (32 ms)
CONTEXT = 64  # samples of the previous chunk in front of it
N_FFT, HOP = 256, 128
BINS = N_FFT // 2 + 1  # 129
HIDDEN = 128

# the silero state dict's tensor names (silero_vad_16k.safetensors)
CONVS = ("conv1", "conv2", "conv3", "conv4")
LSTM = "lstm_cell"


def stft_basis() -> np.ndarray:
    """The STFT as a convolution kernel ``[256, 1, 258]`` (Flax ``[K, I, O]``): a periodic
    Hann window times ``cos`` (outputs 0-128) and ``-sin`` (outputs 129-257) of the 129
    DFT bins -- silero's ``stft_conv.weight``, to within 1e-7."""
    n = np.arange(N_FFT)
    angle = 2 * np.pi * np.arange(BINS)[:, None] * n / N_FFT
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)
    basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window  # [258, 256]
    return basis.T[:, None, :].astype(np.float32)


def chunked(audio: jax.Array, context: jax.Array | None = None) -> jax.Array:
    """``[B, samples]`` -> ``[B, N, 576]``: ``N = ceil(samples / 512)`` chunks (the last
    zero-padded), each behind the 64 samples before it (``context [B, 64]`` before the
    first; default zeros)."""
    b, s = audio.shape
    n = -(-s // CHUNK)
    new = jnp.pad(audio, ((0, 0), (0, n * CHUNK - s))).reshape(b, n, CHUNK)
    first = jnp.zeros((b, 1, CONTEXT), audio.dtype) if context is None else context[:, None]
    before = jnp.concatenate([first.astype(audio.dtype), new[:, :-1, -CONTEXT:]], axis=1)
    return jnp.concatenate([before, new], axis=-1)


def _magnitude(power: jax.Array) -> jax.Array:
    """``sqrt(power)`` whose gradient is 0, not NaN, where ``power`` is 0 (a silent frame:
    zero padding, an absent modality)."""
    positive = power > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, power, 1.0)), 0.0)


class VADOutput(NamedTuple):
    """What the network computes for each chunk: ``probs [B, N]`` (speech probability) and
    the LSTM state after it, ``h`` and ``c`` (``[B, N, 128]``)."""

    probs: jax.Array
    h: jax.Array
    c: jax.Array

    @property
    def state(self) -> jax.Array:
        """The final state as silero's ONNX model lays it out: ``[2, B, 128]`` (h, c)."""
        return jnp.stack([self.h[:, -1], self.c[:, -1]])


class SileroVADEncoder(Encoder):
    """Silero VAD (16 kHz): per 32 ms chunk a conv front end and an LSTM cell whose state
    runs through the recording; the embedding reads the LSTM's per-chunk outputs.

    Meant to start from silero's own weights, and usually frozen::

        [model.encoders.audio]
        type = "silero_vad"
        init_from = {safetensors = "silero_vad/data/silero_vad_16k.safetensors",
                     package = "silero-vad", layout = "pytorch"}
        trainable = false

    The recordings must be at 16 kHz (``data.sample_rate = 16000``).  A recording of
    ``samples`` samples is ``N = ceil(samples / 512)`` chunks.  Embedding (``readout``):
    ``"mean"`` (default) the mean of the N hidden states (128); ``"last"`` the last one
    (128); ``"mean_last"`` both, concatenated (256).  :meth:`tokens`: the N
    hidden states ``[B, N, 128]``.  :meth:`run`: the network's own output, each chunk's
    speech probability, and its states (:meth:`speech_probabilities`: the probabilities).

    Without ``init_from`` it starts at random, except the STFT kernel, which starts as
    the windowed DFT silero uses.  Under mixed precision the STFT runs in float32.

    PyTorch layout (``layout = "pytorch"``): the tensors of ``silero_vad_16k.safetensors``
    -- ``stft_conv.weight``; ``conv1`` .. ``conv4`` ``.weight`` / ``.bias`` (``nn.Conv1d``);
    ``lstm_cell.weight_ih``, ``.weight_hh``, ``.bias_ih``, ``.bias_hh`` (``nn.LSTMCell``,
    gates input, forget, cell, output); ``final_conv.weight`` / ``.bias``.

    Parameters:
        input_shape: Must be 1-D (``[samples]``), at least one sample.
        sample_rate: Sample rate in Hz; taken from the data set's audio metadata. Must be
            16000: the network is silero's 16 kHz one.
        readout: How the per-chunk hidden states become the embedding: ``"mean"``,
            ``"last"`` or ``"mean_last"``.
    """

    test_settings = {"readout": "mean_last"}
    test_input = FieldSpec((1200,), "float32", {"sample_rate": SAMPLE_RATE})  # 3 chunks, 1 padded

    full_precision_input = True  # the STFT

    def __init__(
        self,
        input_shape: tuple[int, ...],
        *,
        sample_rate: int,
        readout: Literal["mean", "last", "mean_last"] = "mean",
        rngs: nnx.Rngs,
    ):
        if len(input_shape) != 1 or input_shape[0] < 1:
            raise ConfigError(f"expects mono waveforms [samples]; the data gives {tuple(input_shape)}",
                              key="type")
        if sample_rate != SAMPLE_RATE:
            raise ConfigError(f"the silero VAD network here is the 16 kHz one: it needs "
                              f"sample_rate {SAMPLE_RATE}, the data gives {sample_rate}",
                              key="sample_rate",
                              hint=f"resample the recordings: data.sample_rate={SAMPLE_RATE} "
                                   f"(avdigits, digit_qa, synthetic, manifest)")
        if readout not in ("mean", "last", "mean_last"):
            raise ConfigError(f"must be mean, last or mean_last, got {readout!r}", key="readout")
        self.readout = readout
        self.stft = nnx.Conv(1, 2 * BINS, (N_FFT,), strides=HOP, padding="VALID", use_bias=False,
                             kernel_init=lambda _key, shape, dtype: jnp.asarray(stft_basis(), dtype),
                             rngs=rngs)
        widths, strides = (BINS, 128, 64, 64, HIDDEN), (1, 2, 2, 1)
        for name, i, o, s in zip(CONVS, widths[:-1], widths[1:], strides):
            setattr(self, name, nnx.Conv(i, o, (3,), strides=s, padding=((1, 1),), rngs=rngs))
        # the LSTM cell: x @ inp + bias + h @ rec, gates in PyTorch's order (i, f, g, o)
        self.inp = nnx.Linear(HIDDEN, 4 * HIDDEN, rngs=rngs)
        self.rec = nnx.Linear(HIDDEN, 4 * HIDDEN, use_bias=False, rngs=rngs)
        self.final = nnx.Conv(HIDDEN, 1, (1,), rngs=rngs)
        self.out_features = 2 * HIDDEN if readout == "mean_last" else HIDDEN
        self.token_features = HIDDEN

    def torch_layout(self) -> dict[str, layouts.FromTorch]:
        """The parameters from ``silero_vad_16k.safetensors`` (all 15 tensors)."""
        rules = {"stft/kernel": layouts.conv_kernel("stft_conv.weight")}
        for name in CONVS:
            rules |= layouts.torch_conv(f"{name}/kernel", f"{name}/bias", name)
        rules |= layouts.torch_lstm("inp/kernel", "rec/kernel", "inp/bias", f"{LSTM}.weight_ih",
                                    f"{LSTM}.weight_hh", f"{LSTM}.bias_ih", f"{LSTM}.bias_hh",
                                    gates=layouts.TORCH_LSTM_GATES)
        return rules | layouts.torch_conv("final/kernel", "final/bias", "final_conv")

    # -- the network -------------------------------------------------------------------

    def chunk_features(self, audio: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``[B, samples]`` -> the conv front end's output per chunk, ``[B, N, 128]``."""
        x = chunked(audio.astype(jnp.float32), context)
        b, n, width = x.shape
        x = jnp.pad(x.reshape(b * n, width), ((0, 0), (0, CONTEXT)), mode="reflect")
        spectrum = self.stft(x[..., None])  # [B*N, 4, 258], float32 (the input's dtype wins)
        power = spectrum[..., :BINS] ** 2 + spectrum[..., BINS:] ** 2
        f = _magnitude(power).astype(self.conv1.kernel.dtype)
        for name in CONVS:
            f = jax.nn.relu(getattr(self, name)(f))
        return f.reshape(b, n, HIDDEN)  # one frame is left of the four

    def run(self, audio: jax.Array, state: jax.Array | None = None,
            context: jax.Array | None = None) -> VADOutput:
        """The network over each recording of ``audio [B, samples]``, from ``state``
        (``[2, B, 128]``, h then c, as silero's ONNX model takes it; default zeros) and
        ``context`` (the 64 samples before the first chunk; default zeros): to continue a
        stream, pass the previous call's ``.state`` and last 64 samples."""
        f = self.chunk_features(audio, context)
        gates_in = self.inp(jnp.swapaxes(f, 0, 1))  # [N, B, 4H]: every chunk's input projection at once
        w_rec = self.rec.kernel[...].astype(gates_in.dtype)
        if state is None:
            state = jnp.zeros((2, f.shape[0], HIDDEN), gates_in.dtype)
        state = state.astype(gates_in.dtype)

        def step(carry, g):
            h, c = carry
            i, fg, cell, o = jnp.split(g + h @ w_rec, 4, axis=-1)
            c = jax.nn.sigmoid(fg) * c + jax.nn.sigmoid(i) * jnp.tanh(cell)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), (h, c)

        _, (h, c) = jax.lax.scan(step, (state[0], state[1]), gates_in)
        h, c = jnp.swapaxes(h, 0, 1), jnp.swapaxes(c, 0, 1)  # [B, N, H]
        probs = jax.nn.sigmoid(self.final(jax.nn.relu(h)))[..., 0]
        return VADOutput(probs, h, c)

    def speech_probabilities(self, audio: jax.Array) -> jax.Array:
        """``[B, samples]`` -> the speech probability of each chunk, ``[B, N]``."""
        return self.run(audio).probs

    # -- the encoder -------------------------------------------------------------------

    def tokens(self, audio: jax.Array) -> TokenSequence:
        h = self.run(audio).h
        return TokenSequence(h, jnp.ones(h.shape[:2], bool))

    def __call__(self, audio: jax.Array) -> jax.Array:
        h = self.run(audio).h
        if self.readout == "mean":
            return h.mean(axis=1)
        if self.readout == "last":
            return h[:, -1]
        return jnp.concatenate([h.mean(axis=1), h[:, -1]], axis=-1)
