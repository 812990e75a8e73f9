"""Plugin discovery and isolated, all-or-nothing loading.

Plugins are entry points in the group ``fusionjax.plugins``; the bundled
encoders, fusions and heads are found exactly like third-party ones.  Each
plugin is imported and registered on its own: one that fails to import, raises
in its hook, or implements an unknown hook is skipped with a
:class:`PluginWarning` naming the plugin, its package and version, and none of
its components are kept.  Environment:

* ``FUSIONJAX_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point or package
  name *before* they are imported;
* ``FUSIONJAX_STRICT_PLUGINS=1`` turns a failing plugin into a :class:`PluginError`.

Plugins load in sorted order, so every host of a multi-host run resolves names
identically.  **A plugin name belongs to one distribution**, so a qualified name
``plugin/component`` always means that distribution's code: the names of the bundled
plugins (package ``fusionjax``) are reserved, and another package that declares one is
refused (listed as an error) while the bundled plugin loads; when two other packages
declare the same plugin name, neither is loaded until one is uninstalled or disabled
(``FUSIONJAX_DISABLE_PLUGINS=<package>``), and both are listed with the conflict.

Besides components, a plugin may declare fast paths (``registrar.fast_path``, see
:mod:`fusionjax.fast_paths`); they are kept or dropped with its components.
:func:`default_registry` is the process-wide registry.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import threading
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from fusionjax import hookspecs
from fusionjax.errors import ComponentError, PluginError
from fusionjax.registry import KINDS, ComponentSpec, PluginOrigin, Registry

ENTRY_POINT_GROUP = "fusionjax.plugins"
BUNDLED_PACKAGE = "fusionjax"  # the distribution whose plugin names are reserved
DISABLE_ENV = "FUSIONJAX_DISABLE_PLUGINS"
STRICT_ENV = "FUSIONJAX_STRICT_PLUGINS"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed to load."""


@dataclass(frozen=True)
class FastPathSpec:
    """A fast path a plugin declares (see :mod:`fusionjax.fast_paths`)."""

    name: str
    description: str
    platforms: tuple[str, ...] | None
    origin: PluginOrigin


class Registrar:
    """Handed to ``fusionjax_register_components``; collects one plugin's components
    (and fast paths)."""

    def __init__(self, origin: PluginOrigin):
        self.origin = origin
        self.specs: list[ComponentSpec] = []
        self.fast_paths: list[FastPathSpec] = []

    def add(self, kind: str, name: str, target: Any, *, summary: str = "") -> None:
        if kind not in KINDS:
            raise ComponentError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        if not _NAME.match(name):
            raise ComponentError(
                f"component name {name!r} must be lower_snake_case ([a-z][a-z0-9_]*)"
            )
        if isinstance(target, str) and ":" not in target:
            raise ComponentError(f"lazy target {target!r} must be 'module:attr'")
        if not isinstance(target, str) and not callable(target):
            raise ComponentError(f"target of {kind} {name!r} is neither callable nor 'module:attr'")
        if any(s.kind == kind and s.name == name for s in self.specs):
            raise ComponentError(f"{kind} {name!r} registered twice")
        self.specs.append(ComponentSpec(kind, name, target, self.origin, summary))

    def encoder(self, name: str, target: Any, *, summary: str = "") -> None:
        self.add("encoder", name, target, summary=summary)

    def fusion(self, name: str, target: Any, *, summary: str = "") -> None:
        self.add("fusion", name, target, summary=summary)

    def head(self, name: str, target: Any, *, summary: str = "") -> None:
        self.add("head", name, target, summary=summary)

    def dataset(self, name: str, target: Any, *, summary: str = "") -> None:
        self.add("dataset", name, target, summary=summary)

    def augmentation(self, name: str, target: Any, *, summary: str = "") -> None:
        self.add("augmentation", name, target, summary=summary)

    def fast_path(self, name: str, description: str, *,
                  platforms: tuple[str, ...] | None = None) -> str:
        """Declare fast path ``name``: on by default on the JAX backends ``platforms``
        (those it was measured to help on; None: every backend)."""
        if not _NAME.match(name):
            raise ComponentError(f"fast path name {name!r} must be lower_snake_case ([a-z][a-z0-9_]*)")
        if any(f.name == name for f in self.fast_paths):
            raise ComponentError(f"fast path {name!r} declared twice")
        self.fast_paths.append(FastPathSpec(name, description, None if platforms is None
                                            else tuple(platforms), self.origin))
        return name


@dataclass
class PluginInfo:
    """What ``fusionjax plugins list`` shows for one plugin."""

    name: str
    package: str | None
    version: str | None
    status: str  # "active" | "disabled" | "error"
    components: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LoadResult:
    registry: Registry
    plugins: list[PluginInfo]
    fast_paths: dict[str, FastPathSpec] = field(default_factory=dict)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _env_list(var: str) -> set[str]:
    return {_norm(v.strip()) for v in os.environ.get(var, "").split(",") if v.strip()}


def discover(path: list[str] | None = None) -> list[md.EntryPoint]:
    """Entry points of the group, de-duplicated and sorted by (name, package)."""
    if path is None:
        eps = md.entry_points(group=ENTRY_POINT_GROUP)
    else:
        eps = [ep for d in md.distributions(path=path) for ep in d.entry_points
               if ep.group == ENTRY_POINT_GROUP]
    return _dedupe(eps)


def _dedupe(eps: Iterable[md.EntryPoint]) -> list[md.EntryPoint]:
    """One entry per (name, target, package), sorted by (name, package)."""
    unique = {(ep.name, ep.value, ep.dist.name if ep.dist else None): ep for ep in eps}
    return sorted(unique.values(), key=lambda ep: (ep.name, ep.dist.name if ep.dist else ""))


def load_plugins(
    entry_points: Iterable[md.EntryPoint] | None = None,
    *,
    strict: bool | None = None,
    disabled: Iterable[str] | None = None,
) -> LoadResult:
    """Load every plugin into a new :class:`Registry`, each in isolation."""
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes")
    blocked = _env_list(DISABLE_ENV) if disabled is None else {_norm(d) for d in disabled}
    eps = discover() if entry_points is None else _dedupe(entry_points)

    owners = _owners(ep for ep in eps if not _blocked(ep, blocked))
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    fast_paths: dict[str, FastPathSpec] = {}
    infos: list[PluginInfo] = []
    for ep in eps:
        package = ep.dist.name if ep.dist else None
        version = ep.dist.version if ep.dist else None
        info = PluginInfo(ep.name, package, version, "active")
        infos.append(info)
        if _blocked(ep, blocked):
            info.status = "disabled"
            continue
        origin = PluginOrigin(ep.name, package, version)
        try:
            _check_owner(ep, owners[ep.name])
            registrar = _register_one(pm, ep, origin)
            for f in registrar.fast_paths:
                if f.name in fast_paths:
                    raise PluginError(f"declares fast path {f.name!r}, which "
                                      f"{fast_paths[f.name].origin.describe()} already declares")
        except Exception as e:  # noqa: BLE001 - any failure of one plugin is isolated
            info.status, info.error = "error", f"{type(e).__name__}: {e}"
            message = f"fusionjax {origin.describe()} was not loaded: {info.error}"
            if strict:
                raise PluginError(
                    f"{message}\n(strict plugin loading, {STRICT_ENV}=1: unset it to skip broken "
                    f"plugins, or disable this one with {DISABLE_ENV}={ep.name})"
                ) from e
            warnings.warn(f"{message}; skipping it (details: `fusionjax plugins list`)",
                          PluginWarning, stacklevel=2)
            info.error += "\n" + "".join(traceback.format_exception(e)[-3:]).rstrip()
            continue
        for spec in registrar.specs:  # commit only after the whole hook succeeded
            registry.add(spec)
        fast_paths.update({f.name: f for f in registrar.fast_paths})
        info.components = ([f"{s.kind}:{s.name}" for s in registrar.specs]
                           + [f"fast_path:{f.name}" for f in registrar.fast_paths])
    return LoadResult(registry, infos, fast_paths)


def _blocked(ep: md.EntryPoint, blocked: set[str]) -> bool:
    package = ep.dist.name if ep.dist else None
    return _norm(ep.name) in blocked or bool(package and _norm(package) in blocked)


def _owners(eps: Iterable[md.EntryPoint]) -> dict[str, list[str]]:
    """Plugin name -> the (enabled) distributions that declare it."""
    owners: dict[str, list[str]] = {}
    for ep in eps:
        owners.setdefault(ep.name, []).append(ep.dist.name if ep.dist else "?")
    return owners


def _check_owner(ep: md.EntryPoint, packages: list[str]) -> None:
    """The identity rule: a plugin name belongs to one distribution (module docstring)."""
    package = ep.dist.name if ep.dist else "?"
    if len(set(packages)) < 2:
        return
    if BUNDLED_PACKAGE in packages:
        if package != BUNDLED_PACKAGE:
            raise PluginError(f"plugin name {ep.name!r} belongs to the bundled plugin of package "
                              f"{BUNDLED_PACKAGE}; package {package} cannot take it (rename its "
                              f"entry point in its pyproject.toml)")
        return
    others = ", ".join(sorted(set(packages) - {package}))
    raise PluginError(f"plugin name {ep.name!r} is declared by package {package} and by {others}; "
                      f"neither is loaded until one is uninstalled or disabled "
                      f"({DISABLE_ENV}=<package>)")


def _register_one(pm: pluggy.PluginManager, ep: md.EntryPoint, origin: PluginOrigin):
    plugin = ep.load()
    known = {n for n in dir(hookspecs) if n.startswith("fusionjax_")}
    marker = hookspecs.PROJECT + "_impl"
    impls = [n for n in dir(plugin) if hasattr(getattr(plugin, n, None), marker)]
    unknown = sorted(set(impls) - known)
    if unknown:
        raise PluginError(
            f"implements unknown hook(s) {', '.join(unknown)}; known hooks: {', '.join(sorted(known))}"
        )
    if not impls:
        raise PluginError(f"{ep.value!r} implements no fusionjax hook (known: {', '.join(sorted(known))})")
    pm.register(plugin, name=ep.name)
    registrar = Registrar(origin)
    try:
        for impl in pm.hook.fusionjax_register_components.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(registrar=registrar)
    except Exception:
        pm.unregister(plugin)
        raise
    return registrar


_loaded: LoadResult | None = None
_lock = threading.Lock()


def loaded() -> LoadResult:
    """The process-wide plugins and registry, loaded on first call."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = load_plugins()
        return _loaded


def default_registry() -> Registry:
    """The registry of every installed, enabled plugin; plugins load on first call."""
    return loaded().registry


def reset() -> None:
    """Forget loaded plugins (tests; after installing a plugin in-process)."""
    global _loaded
    with _lock:
        _loaded = None
