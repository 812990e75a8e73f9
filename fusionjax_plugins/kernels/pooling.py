"""Non-overlapping max and average pooling, ``[B, H, W, C]``, window = stride, VALID;
the window is square (one size) or rectangular, ``(rows, columns)``.

Why: XLA:CPU rewrites the gradient of ``reduce_window`` max pooling
(select-and-scatter) into a variadic reduce-window over four full-size ``int32``
index arrays plus a scatter; on workload ``small`` that was about 60% of the train
step.  With window = stride every input belongs to exactly one window, so the pool
is a reshape and a reduction, and its gradient is elementwise: each window's
gradient goes to the *first* position (row-major) that holds the window's maximum,
exactly the element select-and-scatter picks.  The forward pass keeps that position
as an int8 per window (int16 for a window of more than 127 elements), so the backward
pass reads neither the input nor the output.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax import fast_paths, tuning
from fusionjax_plugins.kernels import AVG_POOL, MAX_POOL

Window = tuple[int, int]  # (rows, columns)


def window(k: int | tuple[int, int]) -> Window:
    """A pooling window as ``(rows, columns)``: ``k`` is one size (square) or a pair."""
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


def _windows(x: jax.Array, k: Window) -> jax.Array:
    """``[B, H, W, C] -> [B, H//kh, kh, W//kw, kw, C]`` (rows/columns beyond a whole
    window are dropped, as VALID pooling does)."""
    (kh, kw), (b, h, w, c) = k, x.shape
    x = x[:, : h - h % kh, : w - w % kw]
    return x.reshape(b, h // kh, kh, w // kw, kw, c)


def _index_dtype(k: Window):
    # int8 holds the positions of windows up to 127 elements (11 x 11); a larger window
    # keeps an int16 index, so the gradient stays exact whatever the window
    return jnp.int8 if k[0] * k[1] <= 127 else jnp.int16


def _first_argmax(x: jax.Array, k: Window) -> tuple[jax.Array, jax.Array]:
    """Each window's maximum and the row-major index of its first occurrence."""
    (kh, kw), dtype = k, _index_dtype(k)
    xw = _windows(x, k)
    best = xw[:, :, 0, :, 0, :]
    index = jnp.zeros(best.shape, dtype)
    for p in range(1, kh * kw):
        v = xw[:, :, p // kw, :, p % kw, :]
        # strictly greater: a tie keeps the earlier position; a NaN wins (and the first
        # NaN stays), so that NaN propagates as through XLA's max
        better = (v > best) | (jnp.isnan(v) & ~jnp.isnan(best))
        best = jnp.where(better, v, best)
        index = jnp.where(better, jnp.asarray(p, dtype), index)
    return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, k: Window) -> jax.Array:
    # not ``_windows(x, k).max(axis=(2, 4))``: XLA:CPU's multi-axis max reduction turns
    # an all-NaN window into -inf (jax 0.10.2), where reduce_window gives NaN
    return _first_argmax(x, k)[0]


def _max_pool_fwd(x, k):
    # the residual is the window index (int8), not the input: the backward pass never
    # reads the (kh*kw times larger, float) input again
    y, index = _first_argmax(x, k)
    return y, (index, x.shape)


def _max_pool_bwd(k, residuals, dy):
    (kh, kw), (index, shape) = k, residuals
    dtype = _index_dtype(k)
    # one broadcast select: position (i, j) of window (h, w) gets dy where index == i*kw + j
    position = jnp.arange(kh, dtype=dtype)[:, None] * kw + jnp.arange(kw, dtype=dtype)
    hit = index[:, :, None, :, None, :] == position[None, None, :, None, :, None]
    dxw = jnp.where(hit, dy[:, :, None, :, None, :], jnp.zeros((), dy.dtype))  # [B, H//kh, kh, W//kw, kw, C]
    b, h, w, c = shape
    dx = dxw.reshape(b, h - h % kh, w - w % kw, c)
    if dx.shape != shape:
        # the rows/columns VALID pooling dropped get no gradient.  The barrier keeps XLA
        # from folding this zero padding into the next convolution's padding: XLA:CPU
        # runs a convolution padded unevenly (1 before, 2 after) on a slow generic path
        dx = jax.lax.optimization_barrier(jnp.pad(dx, ((0, 0), (0, h % kh), (0, w % kw), (0, 0))))
    return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def _reduce_window(x: jax.Array, k: Window) -> jax.Array:
    return nnx.max_pool(x, k, strides=k, padding="VALID")


def op_name(k: Window) -> str:
    """The tuning op of a max pool window: ``max_pool.k2`` (square), ``max_pool.k1x2``."""
    return f"max_pool.k{k[0]}" if k[0] == k[1] else f"max_pool.k{k[0]}x{k[1]}"


@functools.cache
def _max_pool_op(k: Window) -> tuning.Op:
    """The ``kh x kw`` max pool's two formulations, timed forward + backward (the gradient
    is where they differ: select-and-scatter against one broadcast select)."""
    return tuning.declare(op_name(k), {"argmax": lambda x: _max_pool(x, k),
                                       "reduce_window": lambda x: _reduce_window(x, k)},
                          default="argmax", timed="gradient")


def max_pool(x: jax.Array, k: int | tuple[int, int]) -> jax.Array:
    """``k`` max pool (one size, or ``(rows, columns)``), stride = window, VALID:
    ``[B, H, W, C] -> [B, H//kh, W//kw, C]``."""
    k = window(k)
    if fast_paths.enabled(MAX_POOL):
        return tuning.pick(_max_pool_op(k), x)(x)
    return _reduce_window(x, k)


def avg_pool(x: jax.Array, k: int | tuple[int, int]) -> jax.Array:
    """``k`` average pool (one size, or ``(rows, columns)``), stride = window, VALID."""
    k = window(k)
    if fast_paths.enabled(AVG_POOL):
        return _windows(x, k).mean(axis=(2, 4))
    return nnx.avg_pool(x, k, strides=k, padding="VALID")
