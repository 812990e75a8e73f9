"""The LSTM recurrence with a hand-written backward pass.

Why: differentiating ``lax.scan`` accumulates the recurrent weight gradient inside
the reverse loop (one ``[H, B] @ [B, 4H]`` matmul and one ``[H, 4H]`` add per time
step, and the loop's per-iteration overhead on top).  Here the reverse loop carries
only what is inherently sequential, ``dh_prev = dz @ W^T``, and emits the gate
gradients ``dz`` of every step; the weight gradient is then one matmul over all
steps, ``sum_t h_(t-1)^T dz_t``, and the input-projection gradient is ``dz`` itself.

The recurrence (gates ordered input, forget, cell, output; a padded step carries
the state unchanged and outputs zeros)::

    z = gates_in[t] + h @ w_rec;  i, f, u, o = split(z)
    c' = sigmoid(f) c + sigmoid(i) tanh(u);  h' = sigmoid(o) tanh(c')
    h, c = where(valid[t], (h', c'), (h, c));  out[t] = where(valid[t], h, 0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fusionjax import fast_paths, tuning
from fusionjax_plugins.kernels import LSTM


def _cell(g, h, c, keep, w_rec):
    """One step; returns the new (h, c), the output and what the backward pass needs."""
    i, f, u, o = jnp.split(g + h @ w_rec, 4, axis=-1)
    si, sf, tu, so = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(u), jax.nn.sigmoid(o)
    c_new = sf * c + si * tu
    tc = jnp.tanh(c_new)
    h_new = so * tc
    h_next, c_next = jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)
    return (h_next, c_next), jnp.where(keep, h_next, 0.0), (h, c, si, sf, tu, so, tc)


def _forward(gates_in, keep, w_rec):
    batch, hidden = gates_in.shape[1], w_rec.shape[0]
    zeros = jnp.zeros((batch, hidden), gates_in.dtype)

    def step(carry, inputs):
        g, k = inputs
        carry, out, saved = _cell(g, *carry, k, w_rec)
        return carry, (out, saved)

    (h, _), (outputs, saved) = jax.lax.scan(step, (zeros, zeros), (gates_in, keep))
    return outputs, h, saved


@jax.custom_vjp
def _recurrence(gates_in, keep, w_rec):
    outputs, h, _ = _forward(gates_in, keep, w_rec)
    return outputs, h


def _recurrence_fwd(gates_in, keep, w_rec):
    outputs, h, saved = _forward(gates_in, keep, w_rec)
    return (outputs, h), (saved, keep, w_rec)


def _recurrence_bwd(residuals, cotangents):
    (h_prev, c_prev, si, sf, tu, so, tc), keep, w_rec = residuals
    d_out, d_h_final = cotangents
    w_t = w_rec.T

    def step(carry, inputs):
        dh, dc = carry  # gradient of the state after this step
        d_o, k, hp, cp, si_, sf_, tu_, so_, tc_ = inputs
        dh = dh + jnp.where(k, d_o, 0.0)
        dh_new, dc_new = jnp.where(k, dh, 0.0), jnp.where(k, dc, 0.0)
        dc_new = dc_new + dh_new * so_ * (1 - tc_ * tc_)
        dz = jnp.concatenate([
            dc_new * tu_ * si_ * (1 - si_),        # input gate
            dc_new * cp * sf_ * (1 - sf_),         # forget gate
            dc_new * si_ * (1 - tu_ * tu_),        # cell candidate
            dh_new * tc_ * so_ * (1 - so_),        # output gate
        ], axis=-1)
        dh_prev = dz @ w_t + jnp.where(k, 0.0, dh)
        dc_prev = dc_new * sf_ + jnp.where(k, 0.0, dc)
        return (dh_prev, dc_prev), dz

    zeros = jnp.zeros_like(d_h_final)
    _, dz = jax.lax.scan(step, (d_h_final, zeros),
                         (d_out, keep, h_prev, c_prev, si, sf, tu, so, tc), reverse=True)
    steps, batch, hidden = h_prev.shape
    d_w = h_prev.reshape(steps * batch, hidden).T @ dz.reshape(steps * batch, 4 * hidden)
    return dz, jnp.zeros_like(keep), d_w


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _scan(gates_in, keep, w_rec):
    """The plain formulation: ``lax.scan``, differentiated by JAX."""
    outputs, h, _ = _forward(gates_in, keep != 0, w_rec)
    return outputs, h


# which is faster depends on the machine and the shapes (timed forward + backward)
RECURRENCE = tuning.declare("lstm.recurrence", {"custom_vjp": _recurrence, "scan": _scan},
                            default="custom_vjp", timed="gradient")


def lstm_recurrence(gates_in: jax.Array, valid: jax.Array, w_rec: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
    """``gates_in [T, B, 4H]`` (input projections, bias included), ``valid [T, B]``,
    ``w_rec [H, 4H]`` -> (outputs ``[T, B, H]``, zero where padded; final hidden
    state ``[B, H]``), from a zero initial state."""
    keep = valid[..., None]
    if fast_paths.enabled(LSTM):
        # a float mask, so that the custom VJP has only differentiable-typed inputs
        keep = keep.astype(gates_in.dtype)
        return tuning.pick(RECURRENCE, gates_in, keep, w_rec)(gates_in, keep, w_rec)
    return _scan(gates_in, keep, w_rec)
