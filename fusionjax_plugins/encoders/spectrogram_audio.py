"""Spectrogram audio encoder: raw waveform ``[B, samples]`` -> ``[B, dense]``."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax import layouts
from fusionjax.errors import ConfigError
from fusionjax.interfaces import Encoder, FieldSpec, TokenSequence
from fusionjax.training.randomness import training_key
from fusionjax_plugins.layers import spectrogram as frontend
from fusionjax_plugins.layers.conv import ConvStack, Pool


class SpectrogramAudioEncoder(Encoder):
    """Log-mel spectrogram (computed inside the compiled step) -> conv stack ->
    ``readout`` -> dense + ReLU (``dense = 0`` drops the dense layer).

    ``readout``: ``"avg"``/``"max"`` pool over time and frequency (the reference
    workloads' choice); ``"time_avg"`` averages over time only and keeps the
    frequency axis (shift-invariant, keeps the spectral shape: better for speech);
    ``"flatten"`` keeps everything (sized from the data set's clip length).

    The spectrogram ``[B, frames, n_mels]`` is treated as a one-channel image.
    ``sample_rate`` defaults to the data set's.  The token sequence is one token
    per pooled spectrogram frame: the conv features of every mel band at that time.
    ``pool_size = [1, 2]`` pools frequency only: the token sequence then keeps the time
    resolution, one token per frame (what a CTC head aligns a transcript to).

    Under mixed precision the waveform arrives in float32 (``full_precision_input``)
    and the STFT and mel filterbank run in float32; the log-mel spectrogram is cast
    to the parameters' dtype before the conv stack.

    Input: mono waveforms ``[samples]``.  The front end: a centred STFT with a periodic
    Hann window and reflect padding, the power spectrum, a Slaney mel filterbank as in
    ``librosa.filters.mel``, ``log(mel power + log_offset)``;
    ``frames = 1 + samples // hop_length``.  The conv stack is that of ``cnn_image``.

    Output width: ``dense``; without the dense layer, ``channels[-1]`` for ``avg``/``max``,
    ``M' * channels[-1]`` for ``time_avg`` and ``T' * M' * channels[-1]`` for ``flatten``,
    where ``T' x M'`` is the ``frames x n_mels`` spectrogram after the poolings (each
    pooling floor-divides frames by the time size of ``pool_size`` and mel bands by its
    frequency size).

    SpecAugment (Park et al., 2019), in training only: ``time_masks`` bands of up to
    ``time_width`` consecutive frames and ``freq_masks`` bands of up to ``freq_width``
    consecutive mel bands of the log-mel spectrogram are set to the example's mean log-mel
    value, each band's width and place drawn uniformly per example and step from the
    training key (:mod:`fusionjax.training.randomness`: from ``train.seed`` and the step,
    so a resumed run masks what the uninterrupted one did).  Evaluation, ``predict``,
    ``export`` and ``serve`` never mask.  Off by default.

    Example: ``examples/avdigits.toml``
    (6000 samples, ``hop_length = 128``, ``n_mels = 40``, two poolings of 2) flattens
    ``11 x 10 x 32 = 3520`` features into its dense layer.  Token sequence: one token per
    spectrogram frame after the conv stack, holding every mel band's channels: width
    ``M' * channels[-1]`` (``10 x 32 = 320`` in ``examples/avdigits.toml``).

    PyTorch layout (``init_from = {safetensors = "FILE", layout = "pytorch"}``): the front
    end has no parameters; the module reads the log-mel spectrogram as a one-channel NCHW
    image ``[B, 1, frames, n_mels]``, with ``convs`` = ``nn.ModuleList`` of
    ``nn.Conv2d(in, out, k, padding="same")`` (``convs.{i}.weight``/``.bias``; ReLU and
    pooling as in ``cnn_image``) and ``dense`` = ``nn.Linear`` (``dense.weight``/``.bias``,
    then ReLU) reading the ``[C, T', M']`` map ``f`` as ``f.mean((2, 3))``/``f.amax((2, 3))``
    (``avg``/``max``), ``torch.flatten(f.mean(2), 1)`` (``time_avg``, ``[C, M']``) or
    ``torch.flatten(f, 1)`` (``flatten``); the last two's input rows are reordered to Flax's
    channel-last flatten.

    Parameters:
        input_shape: Must be 1-D (``[samples]``).
        sample_rate: Sample rate in Hz. Required; taken from the data set's audio metadata
            (``synthetic``: ``data.sample_rate``), and must equal it if set.
        n_fft: STFT window / FFT size. ``>= 2``, and ``n_fft // 2`` must be less than
            ``samples``.
        hop_length: Samples between frames. ``>= 1``.
        n_mels: Number of mel bands. ``>= 1``.
        fmin: Lowest filterbank frequency (Hz).
        fmax: Highest filterbank frequency (Hz); none: ``sample_rate / 2``. Must satisfy
            ``0 <= fmin < fmax <= sample_rate / 2``.
        log_offset: Added to the mel power before the log.
        channels: Output channels of each convolution. At least one entry, all ``>= 1``.
        kernel_size: Square kernel size ('same' padding), or one size per entry of
            ``channels``. Each ``>= 1``.
        pool: Pooling after each of the first ``pool_layers`` convolutions; ``"none"``
            disables it.
        pool_size: Pooling window and stride: one size (square), or ``[time, frequency]``,
            e.g. ``[1, 2]`` to pool frequency only and keep every frame (one token per frame,
            for a CTC alignment). Each ``>= 1``.
        pool_layers: How many of the first convolutions are followed by pooling (none: all);
            must not shrink the ``frames x n_mels`` spectrogram to nothing.
        readout: ``"avg"``/``"max"``: global pooling over time and mel bins. ``"time_avg"``:
            the mean over time only, keeping the mel axis (shift-invariant in time, keeps the
            spectral shape; suits speech). ``"flatten"``: the whole final feature map (size
            derived from the data set's clip length, ``samples``).
        dense: Width of the final dense + ReLU layer; ``0`` drops the layer. Negative is an
            error (``model.encoders.audio.dense: must be >= 1, or 0 for no dense layer; got
            -1``).
        time_masks: SpecAugment: how many time bands each training example loses. ``>= 0``;
            ``0``: none.
        time_width: SpecAugment: the widest time band, in frames (each band's width is drawn
            from ``0..time_width``). ``>= 1`` with ``time_masks``, at most the spectrogram's
            frames.
        freq_masks: SpecAugment: how many mel bands (frequency bands) each training example
            loses. ``>= 0``; ``0``: none.
        freq_width: SpecAugment: the widest frequency band, in mel bands (drawn from
            ``0..freq_width``). ``>= 1`` with ``freq_masks``, at most ``n_mels``.
    """

    test_settings = {"sample_rate": 8000, "n_fft": 64, "hop_length": 32, "n_mels": 16,
                         "channels": [4, 8], "dense": 16}
    test_input = FieldSpec((800,), "float32", {"sample_rate": 8000})

    full_precision_input = True

    def __init__(
        self,
        input_shape: tuple[int, ...],
        *,
        sample_rate: int,
        n_fft: int = 256,
        hop_length: int = 128,
        n_mels: int = 64,
        fmin: float = 0.0,
        fmax: float | None = None,
        log_offset: float = 1e-6,
        channels: tuple[int, ...] = (32, 64),
        kernel_size: int | tuple[int, ...] = 3,
        pool: Pool = "max",
        pool_size: int | tuple[int, int] = 2,
        pool_layers: int | None = None,
        readout: Literal["avg", "max", "time_avg", "flatten"] = "avg",
        dense: int = 128,
        time_masks: int = 0,
        time_width: int = 0,
        freq_masks: int = 0,
        freq_width: int = 0,
        rngs: nnx.Rngs,
    ):
        if len(input_shape) != 1:
            raise ConfigError(f"expects mono waveforms [samples]; the data gives {input_shape}",
                              key="type")
        samples = input_shape[0]
        if n_fft < 2 or n_fft // 2 >= samples:
            raise ConfigError(f"must be >= 2 and n_fft // 2 < the {samples} samples per example",
                              key="n_fft")
        if hop_length < 1:
            raise ConfigError("must be >= 1", key="hop_length")
        fmax_ = sample_rate / 2 if fmax is None else fmax
        if not 0 <= fmin < fmax_ <= sample_rate / 2:
            raise ConfigError(f"need 0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2}, "
                              f"got fmin={fmin}, fmax={fmax_}", key="fmax")
        if n_mels < 1:
            raise ConfigError("must be >= 1", key="n_mels")
        if not channels:
            raise ConfigError("needs at least one conv layer", key="channels")
        frames = frontend.num_frames(samples, hop_length)
        for masks, width, name, most, what in ((time_masks, time_width, "time", frames, "frames"),
                                               (freq_masks, freq_width, "freq", n_mels, "mel bands")):
            if masks < 0:
                raise ConfigError(f"must be >= 0, got {masks}", key=f"{name}_masks")
            if not 0 <= width <= most or (masks and width < 1):
                raise ConfigError(f"must be in 1..{most} (the spectrogram's {what}) with "
                                  f"{name}_masks = {masks}, got {width}" if masks else
                                  f"must be in 0..{most} (the spectrogram's {what}), got {width}",
                                  key=f"{name}_width")
        self.spec_augment = (time_masks, time_width, freq_masks, freq_width)
        self.frontend = frontend.LogMel(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                             n_mels=n_mels, fmin=fmin, fmax=fmax, log_offset=log_offset)
        if dense < 0:
            raise ConfigError(f"must be >= 1, or 0 for no dense layer; got {dense}", key="dense")
        pool_layers = len(channels) if pool_layers is None else pool_layers
        self.convs = ConvStack(1, tuple(channels), kernel_size=kernel_size, pool=pool,
                               pool_size=pool_size, pool_layers=pool_layers, rngs=rngs)
        frames = frontend.num_frames(samples, hop_length)
        if min(self.convs.output_hw(frames, n_mels)) < 1:
            raise ConfigError(f"{pool_layers} poolings shrink the {frames}x{n_mels} spectrogram "
                              "to nothing", key="pool_layers")
        self.readout = readout
        out_t, out_f = self.convs.output_hw(frames, n_mels)
        self.map_hw = (out_t, out_f)  # the final feature map's size (the PyTorch layout's flatten)
        width = {"avg": 1, "max": 1, "time_avg": out_f, "flatten": out_t * out_f}[readout]
        width *= channels[-1]
        self.dense = nnx.Linear(width, dense, rngs=rngs) if dense > 0 else None
        self.out_features = dense if dense > 0 else width
        # one token per (pooled) time step, holding every mel band's channels: averaging
        # over frequency would throw away the spectral shape speech is recognised by
        self.token_features = out_f * channels[-1]

    def torch_layout(self) -> dict[str, layouts.FromTorch]:
        """The parameters from a PyTorch state dict (the class docstring's module)."""
        rules = self.convs.torch_layout("convs", "convs")
        if self.dense is not None:
            channels = self.convs.convs[-1].kernel.shape[-1]
            map_shape = {"flatten": (*self.map_hw, channels), "time_avg": (self.map_hw[1], channels)}
            kernel = (layouts.flattened_linear_kernel("dense.weight", map_shape[self.readout])
                      if self.readout in map_shape else layouts.linear_kernel("dense.weight"))
            rules |= {"dense/kernel": kernel, "dense/bias": layouts.same("dense.bias")}
        return rules

    def spectrogram(self, audio: jax.Array) -> jax.Array:
        """``[B, samples]`` -> log-mel ``[B, frames, n_mels]`` (computed in float32)."""
        return self.frontend(audio)

    def _feature_map(self, audio: jax.Array) -> jax.Array:
        """``[B, time, mel, C]``, computed in the parameters' dtype (SpecAugment's masks
        applied in training)."""
        spec = self.spectrogram(audio)
        key = training_key(self)
        if key is not None and (self.spec_augment[0] or self.spec_augment[2]):
            spec = spec_augment(spec, key, *self.spec_augment)
        return self.convs(spec.astype(self.convs.convs[0].kernel.dtype)[..., None])

    def __call__(self, audio: jax.Array) -> jax.Array:
        f = self._feature_map(audio)  # [B, time, mel, C]
        if self.readout == "avg":
            f = f.mean(axis=(1, 2))
        elif self.readout == "max":
            f = f.max(axis=(1, 2))
        elif self.readout == "time_avg":
            f = f.mean(axis=1).reshape(f.shape[0], -1)
        else:
            f = f.reshape(f.shape[0], -1)
        return jax.nn.relu(self.dense(f)) if self.dense is not None else f

    def tokens(self, audio: jax.Array) -> TokenSequence:
        f = self._feature_map(audio)  # [B, time, mel, C]
        seq = f.reshape(f.shape[0], f.shape[1], -1)
        return TokenSequence(seq, jnp.ones(seq.shape[:2], bool))


def spec_augment(spec: jax.Array, key: jax.Array, time_masks: int, time_width: int,
                 freq_masks: int, freq_width: int) -> jax.Array:
    """SpecAugment's time and frequency masking of ``spec`` ``[B, frames, mels]``: per
    example, ``time_masks`` bands of ``0..time_width`` frames and ``freq_masks`` bands of
    ``0..freq_width`` mel bands, each placed uniformly, set to that example's mean value."""
    batch, frames, mels = spec.shape
    t_key, f_key = jax.random.split(key)
    masked = _bands(t_key, batch, time_masks, time_width, frames)[:, :, None] \
        | _bands(f_key, batch, freq_masks, freq_width, mels)[:, None, :]
    fill = spec.mean(axis=(1, 2), keepdims=True)
    return jnp.where(masked, fill, spec)


def _bands(key: jax.Array, batch: int, count: int, most: int, length: int) -> jax.Array:
    """bool ``[batch, length]``: the union of ``count`` random bands of ``0..most`` cells."""
    if count == 0:
        return jnp.zeros((batch, length), bool)
    w_key, s_key = jax.random.split(key)
    width = jax.random.randint(w_key, (batch, count, 1), 0, most + 1)
    start = jnp.floor(jax.random.uniform(s_key, (batch, count, 1)) * (length - width + 1)).astype(int)
    cells = jnp.arange(length)
    return ((cells >= start) & (cells < start + width)).any(axis=1)
