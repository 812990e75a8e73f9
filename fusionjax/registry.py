"""Components keyed by (kind, name), with the plugin and package that provide them.

A qualified name ``plugin/name`` always resolves; a short ``name`` resolves when
exactly one plugin provides it.  Nothing is ever overwritten: two plugins may
both provide ``concat``, and then the short name is an error that lists both.

    registry.resolve("fusion", "concat")                  # -> ComponentSpec
    registry.resolve("fusion", "fusions/concat")    # always unambiguous
    registry.resolve("fusion", "concta")                  # ComponentError: did you mean 'concat'?

The process-wide registry, filled from the installed plugins on first use, is
:func:`fusionjax.plugins.default_registry`.  This module imports neither JAX, nor any
plugin, nor the plugin loader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fusionjax.errors import ComponentError, did_you_mean, shown

KINDS = ("encoder", "fusion", "head", "dataset", "augmentation")


@dataclass(frozen=True)
class PluginOrigin:
    """Who provides a component: the plugin (entry-point name) and its distribution."""

    plugin: str
    package: str | None = None
    version: str | None = None

    def describe(self) -> str:
        if self.package is None:
            return f"plugin {self.plugin!r}"
        return f"plugin {self.plugin!r} (package {self.package} {self.version or '?'})"


@dataclass
class ComponentSpec:
    """A registered component.  ``target`` is the class (or factory) or a lazy
    ``"module:attr"`` string, imported on first :meth:`load`."""

    kind: str
    name: str
    target: Any
    origin: PluginOrigin
    summary: str = ""
    _loaded: Any = field(default=None, repr=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.origin.plugin}/{self.name}"

    def load(self) -> Callable[..., Any]:
        """The component's constructor, importing a lazy target if needed."""
        if self._loaded is None:
            if isinstance(self.target, str):
                module_name, _, attr = self.target.partition(":")
                try:
                    obj = getattr(importlib.import_module(module_name), attr)
                except Exception as e:  # noqa: BLE001 - reported with its origin
                    raise ComponentError(
                        f"{self.kind} {self.qualified_name!r} of {self.origin.describe()} "
                        f"could not be imported from {self.target!r}: {type(e).__name__}: {e}"
                    ) from e
            else:
                obj = self.target
            self._loaded = obj
        return self._loaded

    def describe(self) -> str:
        return f"{self.qualified_name} from {self.origin.describe()}"


class Registry:
    """Components by kind and name.  Mutated only through :meth:`add`."""

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[str, list[ComponentSpec]]] = {k: {} for k in KINDS}

    def add(self, spec: ComponentSpec) -> None:
        if spec.kind not in self._by_kind:
            raise ComponentError(
                f"unknown component kind {spec.kind!r}{did_you_mean(spec.kind, KINDS)}; "
                f"kinds are: {', '.join(KINDS)}"
            )
        providers = self._by_kind[spec.kind].setdefault(spec.name, [])
        if any(p.origin.plugin == spec.origin.plugin for p in providers):
            raise ComponentError(
                f"{spec.origin.describe()} registers {spec.kind} {spec.name!r} twice"
            )
        providers.append(spec)

    def __iter__(self) -> Iterator[ComponentSpec]:
        for kind in KINDS:
            for name in sorted(self._by_kind[kind]):
                yield from self._by_kind[kind][name]

    def names(self, kind: str) -> list[str]:
        """Every name that resolves for ``kind``: short names and qualified ones."""
        out = []
        for name, providers in sorted(self._by_kind.get(kind, {}).items()):
            if len(providers) == 1:
                out.append(name)
            out.extend(p.qualified_name for p in providers)
        return out

    def resolve(self, kind: str, name: str) -> ComponentSpec:
        """The one component of ``kind`` called ``name`` (short or ``plugin/name``)."""
        if kind not in self._by_kind:
            raise ComponentError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        table = self._by_kind[kind]
        plugin, sep, short = name.rpartition("/")
        if sep:
            for p in table.get(short, []):
                if p.origin.plugin == plugin:
                    return p
        else:
            providers = table.get(name, [])
            if len(providers) == 1:
                return providers[0]
            if len(providers) > 1:
                listing = "\n".join(f"  - {p.describe()}" for p in providers)
                raise ComponentError(
                    f"{kind} {name!r} is ambiguous: {len(providers)} plugins provide it:\n"
                    f"{listing}\nuse a qualified name, e.g. {providers[0].qualified_name!r}"
                )
        available = self.names(kind)
        raise ComponentError(
            f"unknown {kind} {shown(name)}{did_you_mean(name, available)}; available {kind}s: "
            + (", ".join(available) if available else "none (is a plugin missing or disabled? "
               "see `fusionjax plugins list`)")
        )

