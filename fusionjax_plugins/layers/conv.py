"""A stack of ``Conv -> activation -> pool`` blocks, shared by the image and audio encoders."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax import layouts
from fusionjax.errors import ConfigError
from fusionjax_plugins.kernels.conv import conv2d_same
from fusionjax_plugins.kernels.pooling import avg_pool, max_pool

Pool = Literal["max", "avg", "none"]


def pool_window(pool_size: int | tuple[int, ...]) -> tuple[int, int]:
    """``pool_size`` as ``(rows, columns)``, each ``>= 1``: one size is a square window,
    a pair a rectangle; anything else is a :class:`ConfigError` at ``pool_size``."""
    size = (pool_size, pool_size) if isinstance(pool_size, int) else tuple(pool_size)
    given = pool_size if isinstance(pool_size, int) else list(size)
    if len(size) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) for k in size):
        raise ConfigError(f"must be one size or a pair [rows, columns], got {given}", key="pool_size")
    if min(size) < 1:
        raise ConfigError(f"must be >= 1, got {given}", key="pool_size")
    return size


class ConvStack(nnx.Module):
    """``[B, H, W, C] -> [B, H', W', channels[-1]]``: 'same' convolutions, ReLU, and
    ``pool_size`` pooling after each of the first ``pool_layers`` convolutions.
    ``kernel_size`` is one size for every layer or one per layer; ``pool_size`` one size
    (a square window) or ``(rows, columns)``."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], *,
                 kernel_size: int | tuple[int, ...], pool: Pool, pool_size: int | tuple[int, int],
                 pool_layers: int, rngs: nnx.Rngs):
        kernels = (kernel_size,) * len(channels) if isinstance(kernel_size, int) else kernel_size
        if len(kernels) != len(channels):
            raise ConfigError(f"gives {len(kernels)} sizes for {len(channels)} conv layers",
                              key="kernel_size", hint="give one size, or one per entry of channels")
        self.pool_size = pool_window(pool_size)
        for key, value in (("kernel_size", min(kernels)), ("channels", min(channels, default=0))):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        convs, c = [], in_channels
        for out, k in zip(channels, kernels):
            convs.append(nnx.Conv(c, out, (k, k), padding="SAME", rngs=rngs))
            c = out
        self.convs = nnx.List(convs)
        self.pool = pool
        self.pool_layers = pool_layers

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.pool != "none":
            for _ in range(self.pool_layers):
                h, w = h // self.pool_size[0], w // self.pool_size[1]
        return h, w

    def torch_layout(self, at: str, module: str) -> dict[str, layouts.FromTorch]:
        """The stack's parameters (under the name ``at``) from ``nn.Conv2d`` layers at the
        state-dict names ``{module}.{i}`` (an ``nn.ModuleList`` of the convolutions, ``padding
        ='same'``; ReLU and pooling have no parameters)."""
        return {name: rule for i in range(len(self.convs))
                for name, rule in layouts.torch_conv(f"{at}/convs/{i}/kernel", f"{at}/convs/{i}/bias",
                                                     f"{module}.{i}").items()}

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, conv in enumerate(self.convs):
            # nnx.Conv holds the parameters; the convolution is the fast-path kernel's
            dtype = jnp.result_type(x.dtype, conv.kernel.dtype)
            x = conv2d_same(x.astype(dtype), conv.kernel[...].astype(dtype),
                            conv.bias[...].astype(dtype))
            if i < self.pool_layers and self.pool == "max":
                # relu(max_pool(x)) == max_pool(relu(x)), values and gradients (ReLU is
                # monotone); on the pooled map the ReLU touches kh*kw times fewer elements
                x = jax.nn.relu(max_pool(x, self.pool_size))
            elif i < self.pool_layers and self.pool == "avg":
                x = avg_pool(jax.nn.relu(x), self.pool_size)
            else:
                x = jax.nn.relu(x)
        return x
