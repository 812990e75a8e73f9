"""Switches for the fast paths of the bundled components.

A fast path is a faster formulation of an operation that gives the same values
and gradients as the plain JAX one (tested to a relative error below 1e-4 in
float32), e.g. a max pool whose gradient avoids XLA:CPU's select-and-scatter.
A fast path is on by default on the platforms it was measured to help on (the
bundled ones: XLA:CPU; on a GPU or TPU they stay off until measured there, see
``benchmarks/gpu.sh``).  To rule one out while debugging, switch it off, either
for the process::

    FUSIONJAX_FAST_PATHS=none fusionjax train ...          # every one off
    FUSIONJAX_FAST_PATHS=-max_pool,-lstm fusionjax train ... # these off
    FUSIONJAX_FAST_PATHS=max_pool fusionjax train ...       # only these on, on any platform

or around the code that builds and traces a model::

    with fast_paths.override(max_pool=False):
        ...

The choice is read when a function is traced, so a compiled step keeps the
formulation it was traced with (and ``jax.jit`` caches traces per function: trace a
fresh function inside an :func:`override` block).

A plugin declares its fast paths in its registration hook
(``registrar.fast_path(name, description, platforms)``; the bundled ones: plugin
``kernels``), so that :func:`check` knows every name, used by the model at hand or not,
and a plugin that fails to load is recorded and reported like any other
(``fusionjax plugins list``); the fast paths of a disabled or broken plugin are off.
The core's own, the allocator settings (fast path ``malloc``, :mod:`fusionjax.allocator`),
are declared with :func:`declare`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from fusionjax.errors import ConfigError, did_you_mean

ENV = "FUSIONJAX_FAST_PATHS"

_core: dict[str, tuple[str, tuple[str, ...] | None]] = {}  # the core's own: name -> (description, platforms)
_overrides: list[dict[str, bool]] = []


def declare(name: str, description: str, platforms: tuple[str, ...] | None = None) -> str:
    """Make one of the core's own fast paths known (idempotent); returns ``name``.
    ``platforms``: the JAX backends (``"cpu"``, ``"gpu"``, ``"tpu"``) it is on by default
    on, the ones it was measured to help on; None: every backend.  Plugins declare
    theirs with ``registrar.fast_path`` instead."""
    _core.setdefault(name, (description, platforms))
    return name


def _table() -> dict[str, tuple[str, tuple[str, ...] | None]]:
    """Every known fast path: the core's and those of the loaded plugins."""
    from fusionjax.plugins import loaded

    plugin = {f.name: (f.description, f.platforms) for f in loaded().fast_paths.values()}
    return {**plugin, **_core}


def declared() -> dict[str, str]:
    """``{name: description}`` of every fast path the core and the loaded plugins declare."""
    return {name: description for name, (description, _) in _table().items()}


def _from_env() -> tuple[bool, dict[str, bool]]:
    """(default, {name: on}) from ``FUSIONJAX_FAST_PATHS``."""
    text = os.environ.get(ENV, "").strip()
    if text in ("", "all"):
        return True, {}
    if text == "none":
        return False, {}
    names = [n.strip() for n in text.split(",") if n.strip()]
    if all(n.startswith("-") for n in names):
        return True, {n[1:]: False for n in names}
    if any(n.startswith("-") for n in names):
        raise ConfigError(f"{text!r} mixes names to switch on and '-names' to switch off",
                          key=ENV, hint="list the ones to keep (max_pool,lstm) or the ones to "
                          "drop (-max_pool,-lstm), or use 'all' / 'none'")
    return False, {n: True for n in names}


def enabled(name: str) -> bool:
    """Whether fast path ``name`` is on: the innermost :func:`override` naming it, else
    the environment naming it, else (``all`` or unset) whether the default backend is
    one of its platforms (``none``: off)."""
    for frame in reversed(_overrides):
        if name in frame:
            return frame[name]
    default, named = _from_env()
    if name in named:
        return named[name]
    return default and _on_platform(name)


def _on_platform(name: str) -> bool:
    table = _core if name in _core else _table()
    if name not in table:
        return False  # its plugin is disabled or failed to load: the plain formulation
    platforms = table[name][1]
    if platforms is None:
        return True
    import jax  # only here: enabled() is called while tracing, with JAX already imported

    return jax.default_backend() in platforms


@contextlib.contextmanager
def override(**flags: bool) -> Iterator[None]:
    """Switch the named fast paths on (True) or off (False) inside the block;
    ``override(all=False)`` switches off every one."""
    frame = dict(flags)
    if "all" in frame:
        on = frame.pop("all")
        frame = {**{n: on for n in declared()}, **frame}
    check(frame)
    _overrides.append(frame)
    try:
        yield
    finally:
        _overrides.remove(frame)


def check(names=None) -> None:
    """Refuse a fast-path name that no component declared (a typo would silently
    leave the fast path on).  Without ``names``, checks the environment variable;
    call it after the model's components are imported."""
    where = "fast_paths.override" if names is not None else ENV
    if names is None:
        names = _from_env()[1]
    known = declared()
    for name in names:
        if name not in known:
            raise ConfigError(f"names {name!r}, which no fast path has"
                              f"{did_you_mean(name, known)}", key=where,
                              hint="known: " + ", ".join(sorted(known)) if known
                              else "no component declared a fast path")
