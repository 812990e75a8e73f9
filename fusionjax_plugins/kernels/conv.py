"""2-D 'same' convolution, stride 1, ``NHWC x HWIO``, each of its three computations in
the formulation that is fastest on the machine (:mod:`fusionjax.tuning`).

A convolution's forward pass, input gradient and weight gradient each have two
formulations with the same values:

- ``xla``: XLA's convolution (for the weight gradient: the weight-gradient convolution
  that differentiating ``lax.conv_general_dilated`` gives);
- ``shifts`` (forward, input gradient) / ``matmul`` (weight gradient): matmuls over
  shifted copies of the (padded) input.  With few input channels (``kh * kw * C <= 64``,
  e.g. the first conv on a one-channel image or spectrogram) one matmul over the full
  patch matrix ``[B*H*W, kh*kw*C]``; with more, the patch matrix would be ``kh * kw``
  times the input, so only the ``kw`` column shifts are stacked (``[B, H+kh-1, W, kw*C]``)
  and each of the ``kh`` row offsets is one matmul over a slice of it.

- ``taps`` (forward, weight gradient): one term per kernel tap ``(i, j)``, the input
  shifted by the tap times the tap's weights.  With a few input channels
  (``C <= 4``: a grey or colour image, a spectrogram) the forward pass is one fused
  elementwise loop that reads the input and writes each output once -- no patch matrix
  at all (the first audio conv of workload ``small``: 1.6 ms against 11.3 ms for XLA's
  convolution and 9.0 ms as one matmul over patches, on a 2-core Zen 4) -- and the
  weight gradient one matmul over a tap-major patch matrix ``[kh*kw*C + 1, B*H*W]``
  (each row a contiguous shifted copy of one input channel) with ``dy`` as it lies
  (4.7 ms against 7.2 ms for the ``[B*H*W, kh*kw*C + 1]`` patch matrix, whose rows of
  10 floats are written one by one).  These are the defaults for such shapes.

Which is faster depends on the CPU: on the AVX-512 benchmark machine XLA's weight
gradient of audio conv 2 of workload ``small`` took 21.6 ms against 14.6 ms as matmuls
and 10.9 ms for the forward convolution; on an AVX2-only machine XLA's convolutions ran
at 40% of its matmul rate.  So each is chosen per shape by timing on the machine at the
first compile (the defaults, where nothing was tuned: ``xla``, ``xla``, ``matmul``; with
at most 4 input channels ``taps`` for the forward pass, and with a patch matrix of at
most 64 columns ``taps`` for the weight gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fusionjax import fast_paths, tuning
from fusionjax_plugins.kernels import CONV

_DIMS = ("NHWC", "HWIO", "NHWC")
_FULL_PATCHES_MAX = 64  # kh * kw * C up to which one patch matrix is built
_ELEMENTWISE_MAX = 4  # input channels up to which a tap's product is elementwise, not a matmul


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


def shifts(x: jax.Array, w: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """``x [B, H, W, C]`` zero-padded by ``padding`` (rows, columns) and correlated with
    ``w [kh, kw, C, O]`` ('valid', stride 1), as matmuls over shifted copies."""
    kh, kw, c, o = w.shape
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    b, oh, ow = x.shape[0], xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    if kh * kw * c <= _FULL_PATCHES_MAX:
        patches = jnp.concatenate([xp[:, i:i + oh, j:j + ow] for i in range(kh) for j in range(kw)], axis=-1)
        y = patches.reshape(b * oh * ow, -1) @ w.reshape(kh * kw * c, o)
    else:
        cols = jnp.concatenate([xp[:, :, j:j + ow] for j in range(kw)], axis=-1)  # [B, H+kh-1, ow, kw*C]
        y = sum(cols[:, i:i + oh].reshape(b * oh * ow, kw * c) @ w[i].reshape(kw * c, o) for i in range(kh))
    return y.reshape(b, oh, ow, o).astype(x.dtype)


def taps(x: jax.Array, w: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """As :func:`shifts`, as a sum over the kernel's taps of the shifted input times the
    tap's ``[C, O]`` weights: elementwise products for ``C <= 4`` (XLA fuses the whole
    sum into one loop over the output), else one matmul per tap.  float32 accumulation."""
    kh, kw, c, o = w.shape
    f32 = jnp.float32
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    oh, ow = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    terms = []
    for i in range(kh):
        for j in range(kw):
            shifted = xp[:, i:i + oh, j:j + ow]
            if c <= _ELEMENTWISE_MAX:
                terms += [shifted[..., ch:ch + 1].astype(f32) * w[i, j, ch].astype(f32) for ch in range(c)]
            else:
                terms.append(jnp.matmul(shifted, w[i, j], preferred_element_type=f32))
    return sum(terms).astype(x.dtype)


def _same_padding(kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)


def _flipped(w: jax.Array) -> tuple[jax.Array, tuple[tuple[int, int], tuple[int, int]]]:
    """The kernel and padding of the input gradient: ``dy`` correlated with the flipped
    kernel, its input and output channels swapped, padded on the other side."""
    kh, kw = w.shape[:2]
    return jnp.flip(w, (0, 1)).swapaxes(2, 3), ((kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2))


def input_gradient(dy: jax.Array, w: jax.Array) -> jax.Array:
    """``dx`` of a stride-1 'SAME' conv (XLA's convolution)."""
    flipped, padding = _flipped(w)
    return lax.conv_general_dilated(dy, flipped, (1, 1), padding, dimension_numbers=_DIMS)


def _input_gradient_shifts(dy: jax.Array, w: jax.Array) -> jax.Array:
    return shifts(dy, *_flipped(w))


def _weight_gradient_xla(x: jax.Array, dy: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    _, pullback = jax.vjp(lambda w: _plain(x, w), w)
    return pullback(dy)[0].astype(jnp.float32), dy.sum((0, 1, 2), dtype=jnp.float32)


def _weight_gradient_matmul(x: jax.Array, dy: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    return weight_gradient(x, dy, w.shape[0], w.shape[1], bias=True)


def _weight_gradient_taps(x: jax.Array, dy: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``dW`` and the bias gradient tap by tap: with a patch matrix of at most 64 columns
    one matmul ``[kh*kw*C + 1, B*H*W] @ dy`` over tap-major patches (the last row ones,
    for the bias), else one ``[C, B*H*W] @ dy`` per tap."""
    kh, kw, c, o = w.shape
    b, h, wd = x.shape[:3]
    f32 = jnp.float32
    xp = _pad_same(x, kh, kw)
    dy2 = dy.reshape(b * h * wd, o)
    if kh * kw * c <= _FULL_PATCHES_MAX:
        rows = [xp[:, i:i + h, j:j + wd, ch] for i in range(kh) for j in range(kw) for ch in range(c)]
        patches = jnp.stack(rows + [jnp.ones((b, h, wd), x.dtype)]).reshape(len(rows) + 1, b * h * wd)
        dw = jnp.matmul(patches, dy2, preferred_element_type=f32)
        return dw[:-1].reshape(kh, kw, c, o), dw[-1]
    contract_rows = (((0,), (0,)), ((), ()))
    dw = [lax.dot_general(xp[:, i:i + h, j:j + wd].reshape(b * h * wd, c), dy2, contract_rows,
                          preferred_element_type=f32) for i in range(kh) for j in range(kw)]
    return jnp.stack(dw).reshape(kh, kw, c, o), dy.sum((0, 1, 2), dtype=f32)


def _few_channels(x: jax.Array, w: jax.Array) -> bool:
    return w.shape[2] <= _ELEMENTWISE_MAX


def _small_patches(x: jax.Array, dy: jax.Array, w: jax.Array) -> bool:
    return w.shape[0] * w.shape[1] * w.shape[2] <= _FULL_PATCHES_MAX


FORWARD = tuning.declare("conv2d.forward", {
    "xla": _plain, "shifts": lambda x, w: shifts(x, w, _same_padding(*w.shape[:2])),
    "taps": lambda x, w: taps(x, w, _same_padding(*w.shape[:2]))},
    default="xla", prefer={"taps": _few_channels})
INPUT_GRADIENT = tuning.declare("conv2d.input_gradient", {
    "xla": input_gradient, "shifts": _input_gradient_shifts}, default="xla")
WEIGHT_GRADIENT = tuning.declare("conv2d.weight_gradient", {
    "xla": _weight_gradient_xla, "matmul": _weight_gradient_matmul, "taps": _weight_gradient_taps},
    default="matmul", prefer={"taps": _small_patches})


@jax.custom_vjp
def _conv(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return tuning.pick(FORWARD, x, w)(x, w) + b


def _conv_fwd(x, w, b):
    return _conv(x, w, b), (x, w)


def _conv_bwd(residuals, dy):
    x, w = residuals
    dx = tuning.pick(INPUT_GRADIENT, dy, w)(dy, w)  # XLA drops it where x needs no gradient
    d_w, d_b = tuning.pick(WEIGHT_GRADIENT, x, dy, w)(x, dy, w)
    return dx, d_w.astype(w.dtype), d_b.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d_same(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """``x [B, H, W, C]`` convolved with ``w [kh, kw, C, O]``, stride 1, 'SAME' zero
    padding, plus the bias ``b [O]`` if given -> ``[B, H, W, O]``."""
    if fast_paths.enabled(CONV):
        return _conv(x, w, jnp.zeros(w.shape[-1], w.dtype) if b is None else b)
    return _plain(x, w) if b is None else _plain(x, w) + b
