"""2-D 'same' convolution, stride 1, ``NHWC x HWIO``, whose weight gradient is a matmul.

Why: XLA:CPU computes a convolution's weight gradient as a convolution that
contracts over batch and space, which on the benchmark machine ran at about half
the speed of the forward convolution (audio conv 2 of workload ``small``: 21.6 ms
against 10.9 ms).  Written as matmuls over shifted copies of the input it takes
14.6 ms.  The forward pass and the input gradient stay XLA's own convolutions.

Two layouts of the same sum ``dW[i, j, c, o] = sum_{b,h,w} x_pad[b, h+i, w+j, c] dy[b, h, w, o]``:

- few input channels (``kh * kw * C <= 64``, e.g. the first conv on a one-channel
  image or spectrogram): one matmul over the full patch matrix ``[B*H*W, kh*kw*C]``;
- more channels: the patch matrix would be ``kh * kw`` times the input, so only the
  ``kw`` column shifts are stacked (``[B, H+kh-1, W, kw*C]``) and each of the ``kh``
  row offsets is one matmul over a slice of it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fusionjax import fast_paths

CONV = fast_paths.declare(
    "conv", "convolution weight gradient as matmuls over shifted inputs (instead of XLA's "
    "weight-gradient convolution)")

_DIMS = ("NHWC", "HWIO", "NHWC")
_FULL_PATCHES_MAX = 64  # kh * kw * C up to which one patch matrix is built


def _plain(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMS)


def _pad_same(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """Zero padding of a stride-1 'SAME' convolution (extra row/column at the end
    for even kernels, as XLA does)."""
    return jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))


def weight_gradient(x: jax.Array, dy: jax.Array, kh: int, kw: int) -> jax.Array:
    """``dW [kh, kw, C, O]`` of a stride-1 'SAME' conv from its input ``x [B, H, W, C]``
    and output gradient ``dy [B, H, W, O]``."""
    b, h, w, c = x.shape
    o = dy.shape[-1]
    xp = _pad_same(x, kh, kw)
    dy2 = dy.reshape(b * h * w, o)
    contract_rows = (((0,), (0,)), ((), ()))  # patches^T @ dy, contracting over B*H*W
    if kh * kw * c <= _FULL_PATCHES_MAX:
        patches = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)],
                                  axis=-1)
        dw = lax.dot_general(patches.reshape(b * h * w, kh * kw * c), dy2, contract_rows)
        return dw.reshape(kh, kw, c, o)
    cols = jnp.concatenate([xp[:, :, j:j + w] for j in range(kw)], axis=-1)  # [B, H+kh-1, W, kw*C]
    rows = [lax.dot_general(cols[:, i:i + h].reshape(b * h * w, kw * c), dy2, contract_rows)
            for i in range(kh)]
    return jnp.stack(rows).reshape(kh, kw, c, o)


@jax.custom_vjp
def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return _plain(x, w)


def _conv_fwd(x, w):
    return _plain(x, w), (x, w)


def _conv_bwd(residuals, dy):
    x, w = residuals
    dx = jax.vjp(lambda x_: _plain(x_, w), x)[1](dy)[0]  # XLA drops it when x needs no gradient
    return dx, weight_gradient(x, dy, w.shape[0], w.shape[1]).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d_same(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [B, H, W, C]`` convolved with ``w [kh, kw, C, O]``, stride 1, 'SAME' zero
    padding -> ``[B, H, W, O]`` (no bias)."""
    if fast_paths.enabled(CONV):
        return _conv(x, w)
    return _plain(x, w)
