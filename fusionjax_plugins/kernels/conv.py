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
from fusionjax_plugins.kernels import CONV

_DIMS = ("NHWC", "HWIO", "NHWC")
_FULL_PATCHES_MAX = 64  # kh * kw * C up to which one patch matrix is built


def _plain(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMS)


def _pad_same(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """Zero padding of a stride-1 'SAME' convolution (extra row/column at the end
    for even kernels, as XLA does)."""
    return jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))


def weight_gradient(x: jax.Array, dy: jax.Array, kh: int, kw: int, *, bias: bool = False
                    ) -> tuple[jax.Array, jax.Array | None]:
    """``dW [kh, kw, C, O]`` of a stride-1 'SAME' conv from its input ``x [B, H, W, C]``
    and output gradient ``dy [B, H, W, O]``, and with ``bias`` the bias gradient
    ``[O]`` too: a column of ones among the patches, so that ``dy`` (the largest
    array here) is read once rather than once more for its sum."""
    b, h, w, c = x.shape
    o = dy.shape[-1]
    xp = _pad_same(x, kh, kw)
    dy2 = dy.reshape(b * h * w, o)
    ones = [jnp.ones((b, h, w, 1), x.dtype)] if bias else []
    contract_rows = (((0,), (0,)), ((), ()))  # patches^T @ dy, contracting over B*H*W
    f32 = jnp.float32  # a sum over B*H*W terms: accumulated and returned in float32 (bf16 inputs too)
    if kh * kw * c <= _FULL_PATCHES_MAX:
        patches = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)]
                                  + ones, axis=-1)
        dw = lax.dot_general(patches.reshape(b * h * w, -1), dy2, contract_rows, preferred_element_type=f32)
        rows = [dw[: kh * kw * c]]
    else:
        cols = jnp.concatenate([xp[:, :, j:j + w] for j in range(kw)], axis=-1)  # [B, H+kh-1, W, kw*C]
        rows = [lax.dot_general(
            jnp.concatenate([cols[:, i:i + h]] + (ones if i == 0 else []), axis=-1)
            .reshape(b * h * w, -1), dy2, contract_rows, preferred_element_type=f32) for i in range(kh)]
        dw = rows[0]
        rows[0] = rows[0][: kw * c]
    d_bias = dw[-1] if bias else None
    return jnp.concatenate(rows).reshape(kh, kw, c, o), d_bias


@jax.custom_vjp
def _conv(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return _plain(x, w) + b


def _conv_fwd(x, w, b):
    return _conv(x, w, b), (x, w)


def input_gradient(dy: jax.Array, w: jax.Array) -> jax.Array:
    """``dx`` of a stride-1 'SAME' conv: ``dy`` convolved with the flipped kernel, its
    input and output channels swapped, padded on the other side."""
    kh, kw = w.shape[:2]
    flipped = jnp.flip(w, (0, 1)).swapaxes(2, 3)
    padding = ((kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2))
    return lax.conv_general_dilated(dy, flipped, (1, 1), padding, dimension_numbers=_DIMS)


def _conv_bwd(residuals, dy):
    x, w = residuals
    dx = input_gradient(dy, w)  # XLA drops it where x needs no gradient (a first layer)
    d_w, d_b = weight_gradient(x, dy, w.shape[0], w.shape[1], bias=True)
    return dx, d_w.astype(w.dtype), d_b.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d_same(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """``x [B, H, W, C]`` convolved with ``w [kh, kw, C, O]``, stride 1, 'SAME' zero
    padding, plus the bias ``b [O]`` if given -> ``[B, H, W, O]``."""
    if fast_paths.enabled(CONV):
        return _conv(x, w, jnp.zeros(w.shape[-1], w.dtype) if b is None else b)
    return _plain(x, w) if b is None else _plain(x, w) + b
