"""CNN image encoder: ``[B, H, W, C]`` (or ``[B, H, W]``) images -> ``[B, dense]``."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax import layouts
from fusionjax.errors import ConfigError
from fusionjax.interfaces import Encoder, FieldSpec, TokenSequence
from fusionjax_plugins.layers.conv import ConvStack, Pool


class CNNImageEncoder(Encoder):
    """Conv stack -> readout -> dense + ReLU.

    ``channels`` gives one 'same' convolution (+ ReLU) each, of ``kernel_size`` (one size,
    or one per layer); the
    first ``pool_layers`` (default: all) are followed by ``pool_size`` pooling.
    ``readout`` is ``"flatten"`` (sized from the data set's image shape), or a
    global ``"avg"``/``"max"`` pool.  ``dense = 0`` drops the final dense layer.
    The token sequence is the final feature map, one token per position (``tokens =
    "positions"``) or one per column, left to right (``tokens = "columns"``: reading a
    strip of text left to right, e.g. for a CTC head).

    Example (MNIST-sized): ``channels=[32, 64], readout="flatten", dense=128``.

    Input: images ``[H, W, C]`` (or ``[H, W]``, treated as one channel), cast to float32.

    Output width: ``dense``; without the dense layer, ``H' * W' * channels[-1]`` for
    ``flatten`` (``H'``, ``W'`` after pooling) or ``channels[-1]`` for ``avg``/``max``.
    Token sequence (for token-based fusions and sequence heads): ``"positions"``, one token
    per position of the final feature map (row by row), width ``channels[-1]``;
    ``"columns"``, ``W'`` tokens, one per column of the map from left to right, each holding
    that column's every row and channel (row-major), width ``H' * channels[-1]``.

    PyTorch layout (``init_from = {safetensors = "FILE", layout = "pytorch"}``): a module
    with ``convs`` = ``nn.ModuleList`` of ``nn.Conv2d(in, out, k, padding="same")`` (state
    dict ``convs.{i}.weight``/``.bias``; each followed by ReLU and, for the first
    ``pool_layers``, ``nn.MaxPool2d``/``nn.AvgPool2d(pool_size)``, which hold nothing) on
    NCHW images, and ``dense`` = ``nn.Linear`` (``dense.weight``/``.bias``, then ReLU)
    reading ``torch.flatten(f, 1)`` of the ``[C, H', W']`` map for ``flatten`` (its input
    rows are reordered to Flax's ``[H', W', C]``) or ``f.mean((2, 3))``/``f.amax((2, 3))``.

    Parameters:
        input_shape: The modality's per-example shape; must have 2 or 3 dimensions.
        channels: Output channels of each convolution (one conv + ReLU per entry). At least
            one entry, all ``>= 1``.
        kernel_size: Square kernel size of every convolution ('same' padding), or one size
            per entry of ``channels``. Each ``>= 1``.
        pool: Pooling after each of the first ``pool_layers`` convolutions; ``"none"``
            disables pooling.
        pool_size: Pooling window and stride ('valid' padding): one size (square), or
            ``[rows, columns]``, e.g. ``[2, 1]`` to keep every column. Each ``>= 1``.
        pool_layers: How many of the first convolutions are followed by pooling (none: all);
            ``0..len(channels)``. The poolings must not shrink the image to nothing.
        readout: ``"flatten"``: the whole final feature map (size derived from the data set's
            image shape); ``"avg"``/``"max"``: global pooling over positions.
        dense: Width of the final dense + ReLU layer; ``0`` drops the layer. Negative is an
            error (``model.encoders.image.dense: must be >= 1, or 0 for no dense layer; got
            -1``).
        tokens: The token sequence: ``"positions"``, one token per position of the final
            feature map (``H' * W'`` tokens of width ``channels[-1]``); ``"columns"``, one
            per column, left to right (``W'`` tokens of width ``H' * channels[-1]``).
            The embedding does not depend on it.
    """

    test_settings = {"channels": [4, 8], "dense": 16}
    test_input = FieldSpec((12, 12, 1), "float32")

    def __init__(
        self,
        input_shape: tuple[int, ...],
        *,
        channels: tuple[int, ...] = (32, 64),
        kernel_size: int | tuple[int, ...] = 3,
        pool: Pool = "max",
        pool_size: int | tuple[int, int] = 2,
        pool_layers: int | None = None,
        readout: Literal["flatten", "avg", "max"] = "flatten",
        dense: int = 128,
        tokens: Literal["positions", "columns"] = "positions",
        rngs: nnx.Rngs,
    ):
        if len(input_shape) not in (2, 3):
            raise ConfigError(f"expects images [H, W] or [H, W, C]; the data gives {input_shape}",
                              key="type")
        if not channels or min(channels) < 1:
            raise ConfigError(f"needs at least one positive channel count, got {channels}",
                              key="channels")
        h, w = input_shape[:2]
        c = input_shape[2] if len(input_shape) == 3 else 1
        if dense < 0:
            raise ConfigError(f"must be >= 1, or 0 for no dense layer; got {dense}", key="dense")
        pool_layers = len(channels) if pool_layers is None else pool_layers
        if not 0 <= pool_layers <= len(channels):
            raise ConfigError(f"must be in 0..{len(channels)}", key="pool_layers")
        self.convs = ConvStack(c, tuple(channels), kernel_size=kernel_size, pool=pool,
                               pool_size=pool_size, pool_layers=pool_layers, rngs=rngs)
        oh, ow = self.convs.output_hw(h, w)
        if oh < 1 or ow < 1:
            size = "x".join(map(str, self.convs.pool_size))
            raise ConfigError(f"{pool_layers} poolings of size {size} shrink a {h}x{w} image "
                              f"to nothing", key="pool_layers",
                              hint="use fewer pool_layers or a smaller pool_size")
        self.readout = readout
        self.map_hw = (oh, ow)  # the final feature map's size (the PyTorch layout's flatten)
        flat = oh * ow * channels[-1] if readout == "flatten" else channels[-1]
        self.dense = nnx.Linear(flat, dense, rngs=rngs) if dense > 0 else None
        self.out_features = dense if dense > 0 else flat
        if tokens not in ("positions", "columns"):
            raise ConfigError(f"must be 'positions' or 'columns', got {tokens!r}", key="tokens")
        # not ``self.tokens``: that is the method
        self.token_layout = tokens
        self.token_features = channels[-1] * (oh if tokens == "columns" else 1)

    def torch_layout(self) -> dict[str, layouts.FromTorch]:
        """The parameters from a PyTorch state dict (the class docstring's module)."""
        rules = self.convs.torch_layout("convs", "convs")
        if self.dense is not None:
            channels = self.convs.convs[-1].kernel.shape[-1]
            kernel = (layouts.flattened_linear_kernel("dense.weight", (*self.map_hw, channels))
                      if self.readout == "flatten" else layouts.linear_kernel("dense.weight"))
            rules |= {"dense/kernel": kernel, "dense/bias": layouts.same("dense.bias")}
        return rules

    def _feature_map(self, x: jax.Array) -> jax.Array:
        if x.ndim == 3:
            x = x[..., None]
        # the compute dtype is the parameters' (float32, or e.g. bfloat16 under mixed precision)
        return self.convs(x.astype(self.convs.convs[0].kernel.dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        f = self._feature_map(x)
        if self.readout == "flatten":
            f = f.reshape(f.shape[0], -1)
        elif self.readout == "avg":
            f = f.mean(axis=(1, 2))
        else:
            f = f.max(axis=(1, 2))
        return jax.nn.relu(self.dense(f)) if self.dense is not None else f

    def tokens(self, x: jax.Array) -> TokenSequence:
        f = self._feature_map(x)  # [B, H', W', C]
        if self.token_layout == "columns":  # [B, W', H' * C]: column j holds f[:, :, j]
            seq = jnp.swapaxes(f, 1, 2).reshape(f.shape[0], f.shape[2], -1)
        else:  # [B, H' * W', C], row by row
            seq = f.reshape(f.shape[0], -1, f.shape[-1])
        return TokenSequence(seq, jnp.ones(seq.shape[:2], bool))
