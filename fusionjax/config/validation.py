"""Check a config section against a callable's signature: no schema to write.

A component's constructor *is* its schema: parameter names are the allowed keys,
annotations are their types, defaults make them optional.  Supported
annotations: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``None``,
unions/``Optional``, ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``list[X]``, ``Sequence[X]``, ``dict``/``Mapping``; anything else is checked with
``isinstance`` when it is a class and accepted otherwise.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fusionjax.errors import ConfigError, did_you_mean

_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One configurable parameter of a callable."""

    name: str
    annotation: Any
    default: Any

    @property
    def required(self) -> bool:
        return self.default is _EMPTY

    def describe(self) -> str:
        text = f"{self.name}: {type_name(self.annotation)}"
        return text if self.required else f"{text} = {as_config_value(self.default)!r}"


def as_config_value(value: Any) -> Any:
    """``value`` as a config file spells it (tuples are lists)."""
    if isinstance(value, (tuple, list)):
        return [as_config_value(v) for v in value]
    if isinstance(value, dict):
        return {k: as_config_value(v) for k, v in value.items()}
    return value


def signature_params(fn: Callable, skip: tuple[str, ...] = ("rngs",)) -> tuple[dict[str, Param], bool]:
    """The keyword-settable parameters of ``fn`` (a class means its ``__init__``),
    and whether it also takes ``**kwargs``."""
    init = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(fn if dataclasses.is_dataclass(fn) else init)
    except Exception:  # noqa: BLE001 - one unresolvable annotation: resolve the others one by one
        hints = _hints_one_by_one(init)
    factories = {f.name: f.default_factory for f in dataclasses.fields(fn)
                 if f.default_factory is not dataclasses.MISSING} if dataclasses.is_dataclass(fn) else {}
    params, var_kw = {}, False
    # the signature of __init__ itself: metaclasses (NNX's among them) may hide the class's
    sig = inspect.signature(init)
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 and inspect.isclass(fn):
            continue  # self
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip:
            default = factories[p.name]() if p.name in factories else p.default
            params[p.name] = Param(p.name, hints.get(p.name, _EMPTY), default)
    return params, var_kw


def _hints_one_by_one(fn: Callable) -> dict[str, Any]:
    hints = {}
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})
    for name, ann in getattr(fn, "__annotations__", {}).items():
        try:
            hints[name] = eval(ann, namespace) if isinstance(ann, str) else ann  # noqa: S307
        except Exception:  # noqa: BLE001
            pass
    return hints


def type_name(annotation: Any) -> str:
    if annotation is _EMPTY or annotation is Any:
        return "any"
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = list(dict.fromkeys(type_name(a) for a in args))
        if "float" in names:  # Optax-style scalar unions: show what a config can hold
            names = [n for n in names
                     if n.rsplit(".", 1)[-1] not in ("Array", "ndarray", "number", "complex")]
        return " | ".join(names)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin in (list, cabc.Sequence):
        return f"list of {type_name(args[0]) if args else 'any'}"
    if origin in (dict, cabc.Mapping):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


class _Mismatch(Exception):
    pass


def coerce(value: Any, annotation: Any) -> Any:
    """``value`` converted to ``annotation`` (lists to tuples, ints to floats), or
    :class:`_Mismatch`."""
    if annotation is _EMPTY or annotation is Any:
        return value
    if annotation is None or annotation is type(None):
        if value is None:
            return None
        raise _Mismatch
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return coerce(value, arg)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is typing.Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise _Mismatch
        return tuple(coerce(v, a) for v, a in zip(value, args or [Any] * len(value)))
    if origin in (list, cabc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        items = [coerce(v, args[0] if args else Any) for v in value]
        return items if origin is list else tuple(items)
    if origin in (dict, cabc.Mapping) or annotation in (dict, cabc.Mapping):
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if origin is cabc.Callable or annotation is cabc.Callable:
        if callable(value):
            return value
        raise _Mismatch
    if inspect.isclass(annotation):
        if isinstance(value, annotation):
            return value
        raise _Mismatch
    return value


def check_value(value: Any, annotation: Any, key: str, owner: str = "") -> Any:
    """``value`` coerced to ``annotation``, or a :class:`ConfigError` at ``key``."""
    try:
        return coerce(value, annotation)
    except _Mismatch:
        pass
    hint = None
    if typing.get_origin(annotation) is typing.Literal:
        choices = [str(a) for a in typing.get_args(annotation)]
        hint = f"valid choices: {', '.join(map(repr, typing.get_args(annotation)))}"
        if isinstance(value, str):
            hint = did_you_mean(value, choices).strip(" ()").capitalize() or hint
    where = f" ({owner})" if owner else ""
    raise ConfigError(
        f"expected {type_name(annotation)}, got {value!r} ({type(value).__name__}){where}",
        key=key,
        hint=hint,
    )


def bind(
    fn: Callable,
    section: Mapping[str, Any],
    key: str,
    *,
    owner: str,
    injected: Mapping[str, Any] = {},
) -> dict[str, Any]:
    """Keyword arguments for ``fn`` from a config ``section`` at ``key``.

    ``injected`` are arguments fusionjax supplies itself (widths, shapes); a user
    who sets one is told so.  Every unknown key, wrong type and missing required
    parameter is a :class:`ConfigError` naming the key path and ``owner``.
    """
    params, var_kw = signature_params(fn)
    kwargs = {}
    for name, value in section.items():
        path = f"{key}.{name}"
        if name in injected:
            raise ConfigError(
                f"is set by fusionjax, not by the config ({owner})", key=path,
                hint=f"remove {name!r}; fusionjax passes {injected[name]!r} here",
            )
        if name not in params:
            if var_kw:
                kwargs[name] = value
                continue
            settable = [p for p in params if p not in injected]
            raise ConfigError(
                f"unknown parameter {name!r}{did_you_mean(name, settable)} for {owner}",
                key=path,
                hint="valid parameters: " + (", ".join(
                    params[p].describe() for p in settable) or "none"),
            )
        kwargs[name] = check_value(value, params[name].annotation, path, owner)
    for name, p in params.items():
        if name in injected:
            kwargs[name] = injected[name]
        elif not p.required and name not in kwargs:
            kwargs[name] = p.default
        elif p.required and name not in kwargs:
            raise ConfigError(
                f"missing required parameter {p.describe()} of {owner}", key=f"{key}.{name}",
                hint=f"add `{name} = ...` to [{key}] or pass {key}.{name}=VALUE",
            )
    return kwargs
