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

A package declares its fast paths with :func:`declare` in a module it names in the
``fusionjax.fast_paths`` entry-point group (the bundled ones:
``fusionjax_plugins.kernels``), so that :func:`check` knows every name, used by the
model at hand or not.  The allocator settings are the fast path ``malloc``
(:mod:`fusionjax.allocator`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from fusionjax.errors import ConfigError, did_you_mean

ENV = "FUSIONJAX_FAST_PATHS"
ENTRY_POINTS = "fusionjax.fast_paths"

_declared: dict[str, str] = {}
_platforms: dict[str, tuple[str, ...] | None] = {}
_overrides: list[dict[str, bool]] = []


def declare(name: str, description: str, platforms: tuple[str, ...] | None = None) -> str:
    """Make fast path ``name`` known (idempotent); returns ``name``.  ``platforms``:
    the JAX backends (``"cpu"``, ``"gpu"``, ``"tpu"``) it is on by default on, the ones
    it was measured to help on; None: every backend."""
    _declared.setdefault(name, description)
    _platforms.setdefault(name, platforms)
    return name


def declared() -> dict[str, str]:
    """``{name: description}`` of every fast path declared so far."""
    return dict(_declared)


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
    platforms = _platforms.get(name)
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
        frame = {**{n: on for n in _declared}, **frame}
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
    if any(name not in _declared for name in names):
        _load_declarations()
    for name in names:
        if name not in _declared:
            raise ConfigError(f"names {name!r}, which no fast path has"
                              f"{did_you_mean(name, _declared)}", key=where,
                              hint="known: " + ", ".join(sorted(_declared)) if _declared
                              else "no component declared a fast path")


def _load_declarations() -> None:
    """Import the modules of the ``fusionjax.fast_paths`` entry points (they declare)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINTS):
        try:
            ep.load()
        except Exception:  # a broken package must not hide the user's typo behind its error
            continue
