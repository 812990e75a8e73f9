"""The dense + ReLU stack the bundled heads put before their output layer."""

from __future__ import annotations

import jax
from flax import nnx

from fusionjax.errors import ConfigError


def hidden_layers(in_features: int, hidden: tuple[int, ...], *, rngs: nnx.Rngs) -> tuple[nnx.List, int]:
    """One dense layer per width of ``hidden`` (a head's ``hidden`` parameter), and the
    width of their output (``in_features`` when there are none)."""
    if any(h < 1 for h in hidden):
        raise ConfigError(f"widths must be >= 1, got {list(hidden)}", key="hidden")
    widths = (in_features, *hidden)
    return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])]), widths[-1]


def apply_hidden(layers: nnx.List, x: jax.Array) -> jax.Array:
    for layer in layers:
        x = jax.nn.relu(layer(x))
    return x
