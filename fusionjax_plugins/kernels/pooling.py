"""Non-overlapping max and average pooling, ``[B, H, W, C]``, window = stride, VALID.

Why: XLA:CPU rewrites the gradient of ``reduce_window`` max pooling
(select-and-scatter) into a variadic reduce-window over four full-size ``int32``
index arrays plus a scatter; on workload ``small`` that was about 60% of the train
step.  With window = stride every input belongs to exactly one window, so the pool
is a reshape and a reduction, and its gradient is elementwise: each window's
gradient goes to the *first* position (row-major) that holds the window's maximum,
exactly the element select-and-scatter picks.  The forward pass keeps that position
as an int8 per window, so the backward pass reads neither the input nor the output.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax import fast_paths, tuning
from fusionjax_plugins.kernels import AVG_POOL, MAX_POOL


def _windows(x: jax.Array, k: int) -> jax.Array:
    """``[B, H, W, C] -> [B, H//k, k, W//k, k, C]`` (rows/columns beyond a whole
    window are dropped, as VALID pooling does)."""
    b, h, w, c = x.shape
    x = x[:, : h - h % k, : w - w % k]
    return x.reshape(b, h // k, k, w // k, k, c)


def _first_argmax(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Each window's maximum and the row-major index (int8) of its first occurrence."""
    xw = _windows(x, k)
    best = xw[:, :, 0, :, 0, :]
    index = jnp.zeros(best.shape, jnp.int8)
    for p in range(1, k * k):
        v = xw[:, :, p // k, :, p % k, :]
        # strictly greater: a tie keeps the earlier position; a NaN wins (and the first
        # NaN stays), so that NaN propagates as through XLA's max
        better = (v > best) | (jnp.isnan(v) & ~jnp.isnan(best))
        best = jnp.where(better, v, best)
        index = jnp.where(better, jnp.int8(p), index)
    return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, k: int) -> jax.Array:
    # not ``_windows(x, k).max(axis=(2, 4))``: XLA:CPU's multi-axis max reduction turns
    # an all-NaN window into -inf (jax 0.10.2), where reduce_window gives NaN
    return _first_argmax(x, k)[0]


def _max_pool_fwd(x, k):
    # the residual is the window index (int8), not the input: the backward pass never
    # reads the (k*k times larger, float) input again
    y, index = _first_argmax(x, k)
    return y, (index, x.shape)


def _max_pool_bwd(k, residuals, dy):
    index, shape = residuals
    # one broadcast select: position (i, j) of window (h, w) gets dy where index == i*k + j
    position = (jnp.arange(k, dtype=jnp.int8)[:, None] * k + jnp.arange(k, dtype=jnp.int8))
    hit = index[:, :, None, :, None, :] == position[None, None, :, None, :, None]
    dxw = jnp.where(hit, dy[:, :, None, :, None, :], jnp.zeros((), dy.dtype))  # [B, H//k, k, W//k, k, C]
    b, h, w, c = shape
    dx = dxw.reshape(b, h - h % k, w - w % k, c)
    if dx.shape != shape:
        # the rows/columns VALID pooling dropped get no gradient.  The barrier keeps XLA
        # from folding this zero padding into the next convolution's padding: XLA:CPU
        # runs a convolution padded unevenly (1 before, 2 after) on a slow generic path
        dx = jax.lax.optimization_barrier(jnp.pad(dx, ((0, 0), (0, h % k), (0, w % k), (0, 0))))
    return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def _reduce_window(x: jax.Array, k: int) -> jax.Array:
    return nnx.max_pool(x, (k, k), strides=(k, k), padding="VALID")


@functools.cache
def _max_pool_op(k: int) -> tuning.Op:
    """The ``k x k`` max pool's two formulations, timed forward + backward (the gradient
    is where they differ: select-and-scatter against one broadcast select)."""
    return tuning.declare(f"max_pool.k{k}", {"argmax": lambda x: _max_pool(x, k),
                                             "reduce_window": lambda x: _reduce_window(x, k)},
                          default="argmax", timed="gradient")


def max_pool(x: jax.Array, k: int) -> jax.Array:
    """``k x k`` max pool with stride ``k``, VALID: ``[B, H, W, C] -> [B, H//k, W//k, C]``."""
    if fast_paths.enabled(MAX_POOL):
        return tuning.pick(_max_pool_op(k), x)(x)
    return _reduce_window(x, k)


def avg_pool(x: jax.Array, k: int) -> jax.Array:
    """``k x k`` average pool with stride ``k``, VALID."""
    if fast_paths.enabled(AVG_POOL):
        return _windows(x, k).mean(axis=(2, 4))
    return nnx.avg_pool(x, (k, k), strides=(k, k), padding="VALID")
