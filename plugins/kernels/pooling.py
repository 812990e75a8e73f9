"""Non-overlapping max and average pooling, ``[B, H, W, C]``, window = stride, VALID.

Why: XLA:CPU rewrites the gradient of ``reduce_window`` max pooling
(select-and-scatter) into a variadic reduce-window over four full-size ``int32``
index arrays plus a scatter; on workload ``small`` that was about 60% of the train
step.  With window = stride every input belongs to exactly one window, so the pool
is a reshape and a reduction, and its gradient is elementwise: each window's
gradient goes to the *first* position (row-major) that holds the window's maximum,
exactly the element select-and-scatter picks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from fusionjax import fast_paths

MAX_POOL = fast_paths.declare(
    "max_pool", "max pooling as reshape + max, gradient to the first maximum of each window "
    "(instead of XLA's select-and-scatter)")
AVG_POOL = fast_paths.declare("avg_pool", "average pooling as reshape + mean")


def _windows(x: jax.Array, k: int) -> jax.Array:
    """``[B, H, W, C] -> [B, H//k, k, W//k, k, C]`` (rows/columns beyond a whole
    window are dropped, as VALID pooling does)."""
    b, h, w, c = x.shape
    x = x[:, : h - h % k, : w - w % k]
    return x.reshape(b, h // k, k, w // k, k, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, k: int) -> jax.Array:
    return _windows(x, k).max(axis=(2, 4))


def _max_pool_fwd(x, k):
    y = _max_pool(x, k)
    return y, (x, y)


def _max_pool_bwd(k, residuals, dy):
    x, y = residuals
    xw = _windows(x, k)
    free = jnp.ones(y.shape, bool)  # no position of the window has taken the gradient yet
    rows = []
    for i in range(k):
        cols = []
        for j in range(k):
            hit = free & (xw[:, :, i, :, j, :] == y)
            free = free & ~hit
            cols.append(jnp.where(hit, dy, jnp.zeros_like(dy)))
        rows.append(jnp.stack(cols, axis=3))
    dxw = jnp.stack(rows, axis=2)  # [B, H//k, k, W//k, k, C]
    b, h, w, c = x.shape
    dx = dxw.reshape(b, h - h % k, w - w % k, c)
    if dx.shape != x.shape:
        dx = jnp.pad(dx, ((0, 0), (0, h % k), (0, w % k), (0, 0)))
    return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, k: int) -> jax.Array:
    """``k x k`` max pool with stride ``k``, VALID: ``[B, H, W, C] -> [B, H//k, W//k, C]``."""
    if fast_paths.enabled(MAX_POOL):
        return _max_pool(x, k)
    return nnx.max_pool(x, (k, k), strides=(k, k), padding="VALID")


def avg_pool(x: jax.Array, k: int) -> jax.Array:
    """``k x k`` average pool with stride ``k``, VALID."""
    if fast_paths.enabled(AVG_POOL):
        return _windows(x, k).mean(axis=(2, 4))
    return nnx.avg_pool(x, (k, k), strides=(k, k), padding="VALID")
