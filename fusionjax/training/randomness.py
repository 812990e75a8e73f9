"""Training-only randomness for components: a PRNG key a module gets during the train
step's forward pass, and None everywhere else (evaluation, prediction, export, serving).

A component that does something random only while it learns (SpecAugment's masks,
dropout) asks for its key and acts only when it gets one::

    from fusionjax.training.randomness import training_key

    def __call__(self, x):
        key = training_key(self)          # None outside the train step: deterministic
        if key is not None:
            x = mask_some(x, key)
        ...

The train step (:mod:`fusionjax.training.step`) sets the keys around the model call, at
trace time, so it works under ``jax.jit`` and costs nothing where no component asks:
the key of step ``n`` is :func:`step_key` ``(seed, n)``, so a resumed run draws what the
uninterrupted one drew.  Each module's key is that key folded with the module's path in
the model (e.g. ``encoders/audio``): two encoders draw independently, a module called
twice in one step (an encoder's embedding and its token sequence) draws the same, and
adding a modality changes nothing another module draws.
"""

from __future__ import annotations

import contextlib
import contextvars
import zlib
from collections.abc import Iterator

import jax
from flax import nnx

_ACTIVE: contextvars.ContextVar[tuple[jax.Array, dict[int, str]] | None] = \
    contextvars.ContextVar("fusionjax_training_key", default=None)


def step_key(seed: int, step: jax.Array | int) -> jax.Array:
    """The training randomness of step ``step`` (0-based) of a run seeded ``seed``:
    independent of the parameters', the data's and modality dropout's streams."""
    base = jax.random.fold_in(jax.random.key(seed), zlib.crc32(b"train.randomness"))
    return jax.random.fold_in(base, step)


@contextlib.contextmanager
def training(key: jax.Array, model: nnx.Module) -> Iterator[None]:
    """Within this block, every module of ``model`` gets its own key from ``key``
    (:func:`training_key`); outside it, none does."""
    paths = {id(node): "/".join(map(str, path)) for path, node in nnx.iter_graph(model)
             if isinstance(node, nnx.Module)}
    token = _ACTIVE.set((key, paths))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def training_key(module: nnx.Module) -> jax.Array | None:
    """``module``'s key for this train step, or None when it is not training."""
    active = _ACTIVE.get()
    if active is None:
        return None
    key, paths = active
    path = paths.get(id(module))
    if path is None:
        raise RuntimeError(f"{type(module).__name__} asked for a training key but is not part of "
                           "the model being trained")
    return jax.random.fold_in(key, zlib.crc32(path.encode()))
