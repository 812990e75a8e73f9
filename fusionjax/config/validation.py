"""Check a config section against a callable's signature: no schema to write.

A component's constructor *is* its schema: parameter names are the allowed keys,
annotations are their types, defaults make them optional.  Supported
annotations: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``None``,
unions/``Optional``, ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``list[X]``, ``Sequence[X]``, ``dict``/``Mapping``; anything else is checked with
``isinstance`` when it is a class and accepted otherwise.

Every value bound to a parameter must also be *usable*: floats finite (``nan`` and
``inf`` are refused, anywhere in a list or table) unless the parameter's own default
is non-finite (``fmax: float = math.inf`` documents that ``inf`` means something), and
ints within the int64 range.  :func:`check_tree` bounds the config as a whole: string
keys only, at most :data:`MAX_DEPTH` levels and :data:`MAX_VALUES` values.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fusionjax.errors import ConfigError, did_you_mean, shown

_EMPTY = inspect.Parameter.empty

MAX_DEPTH = 32  # nested tables and lists below the top-level table
MAX_VALUES = 100_000  # tables, lists and scalars of the whole config, aliases expanded
MAX_KEY_LENGTH = 256
INT64 = (-(2**63), 2**63 - 1)


def check_tree(config: Any, where: str | None = None) -> None:
    """A :class:`ConfigError` unless every key in ``config`` (at any depth) is a string
    of at most :data:`MAX_KEY_LENGTH` characters, it nests at most :data:`MAX_DEPTH`
    levels and holds at most :data:`MAX_VALUES` values.  Visits at most that many
    values, so shared or self-referencing structure is refused, never walked for long.
    ``where``: what the error calls the config (e.g. its file)."""
    suffix = f" (in {where})" if where else ""
    stack: list[tuple[Any, str, int]] = [(config, "", 0)]
    count = 1
    while stack:
        node, path, depth = stack.pop()
        is_table = isinstance(node, Mapping)
        if not (is_table or isinstance(node, list | tuple)) or not len(node):
            continue
        if depth >= MAX_DEPTH:
            raise ConfigError(f"nests deeper than {MAX_DEPTH} levels of tables and lists{suffix}",
                              key=path or None, hint="a config is a few levels deep; is a "
                                                     "value (or a YAML alias) nested in itself?")
        count += len(node)
        if count > MAX_VALUES:
            raise ConfigError(f"holds more than {MAX_VALUES:,} values{suffix}", key=path or None,
                              hint="keep large data in files the data set reads")
        children = []
        for k, v in node.items() if is_table else enumerate(node):
            if is_table:
                if not isinstance(k, str):
                    spelled = _spelled(k)
                    raise ConfigError(
                        f"key {spelled} ({type(k).__name__}) is not a string{suffix}",
                        key=path or None,
                        hint=f"quote it: \"{spelled}\" (YAML reads an unquoted 1, 1.5, true or "
                             f"null as a number, a boolean or null)")
                if len(k) > MAX_KEY_LENGTH:
                    raise ConfigError(f"key {shown(k, 60)} is {len(k):,} characters long, more "
                                      f"than {MAX_KEY_LENGTH}{suffix}", key=path or None,
                                      hint="keys are names: parameters, modalities, splits")
                child = f"{path}.{k}" if path else k
            else:
                child = f"{path}[{k}]"
            children.append((v, child, depth + 1))
        stack.extend(reversed(children))  # report the first offending key in document order


def _spelled(key: Any) -> str:
    """A non-string key as a YAML file spells it."""
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    return shown(key, 60)


def check_numbers(value: Any, key: str, owner: str = "", *, allow_nonfinite: bool = False) -> None:
    """A :class:`ConfigError` at ``key`` (or below it) for a non-finite float (unless
    ``allow_nonfinite``) or an int outside the int64 range anywhere in ``value``."""
    where = f" ({owner})" if owner else ""
    stack, seen = [(value, key)], 0
    while stack:
        node, path = stack.pop()
        seen += 1
        if seen > MAX_VALUES:  # values that came here without check_tree (a direct call)
            raise ConfigError(f"holds more than {MAX_VALUES:,} values{where}", key=key)
        if isinstance(node, bool):
            continue
        if isinstance(node, float) and not allow_nonfinite and not math.isfinite(node):
            raise ConfigError(f"must be a finite number, got {node!r}{where}", key=path,
                              hint="nan and inf are not valid here; write the number itself")
        if isinstance(node, int) and not INT64[0] <= node <= INT64[1]:
            raise ConfigError(f"{shown(node, 60)} is outside the int64 range [-2**63, 2**63 - 1]"
                              f"{where}", key=path)
        if isinstance(node, Mapping):
            stack.extend((v, f"{path}.{k}") for k, v in reversed(list(node.items())))
        elif isinstance(node, list | tuple):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node))))


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
        return text if self.required else f"{text} = {shown(as_config_value(self.default), 60)}"


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
        f"expected {type_name(annotation)}, got {shown(value)} ({type(value).__name__}){where}",
        key=key,
        hint=hint,
    )


def with_defaults(section: Mapping[str, Any], defaults: Mapping[str, tuple[Any, str]],
                  params: Mapping[str, Any], key: str, *, owner: str, what: str = "") -> dict[str, Any]:
    """``section`` with each of ``defaults`` (``name -> (value, where it comes from)``, e.g.
    a data set's class count) that ``params`` has filled in where the user left it out; a
    value the user set must agree with it, or it is a :class:`ConfigError` at
    ``key.name`` (``what``: a prefix for the message)."""
    out = dict(section)
    for name, (value, source) in defaults.items():
        if name not in params:
            continue
        if name not in out:
            out[name] = value
        elif as_config_value(out[name]) != as_config_value(value):
            raise ConfigError(f"{what}is {shown(out[name])}, but {source} is {shown(value)} ({owner})",
                              key=f"{key}.{name}", hint=f"remove {name!r} to use {shown(value)}")
    return out


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
                hint=f"remove {name!r}; fusionjax passes {shown(injected[name])} here",
            )
        if name not in params:
            if var_kw:
                check_numbers(value, path, owner)
                kwargs[name] = value
                continue
            settable = [p for p in params if p not in injected]
            raise ConfigError(
                f"unknown parameter {shown(name)}{did_you_mean(name, settable)} for {owner}",
                key=path,
                hint="valid parameters: " + (", ".join(
                    params[p].describe() for p in settable) or "none"),
            )
        default = params[name].default
        check_numbers(value, path, owner, allow_nonfinite=isinstance(default, float)
                      and not math.isfinite(default))
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
