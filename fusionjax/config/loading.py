"""Read a config file into plain dicts and apply ``key.path=value`` overrides.

Formats by extension: ``.toml`` (tomllib), ``.yaml``/``.yml`` (PyYAML's safe
loader only), ``.json``.  Override values are parsed as TOML values
(``3``, ``1e-3``, ``true``, ``[32, 64]``, ``"text"``, ``{a = 1}``); anything that
does not parse is taken as a bare string, so ``model.fusion.type=sum`` works.

What is read is bounded before anything walks it: a file of at most
:data:`MAX_FILE_BYTES`, YAML aliases that expand to at most
:data:`~fusionjax.config.validation.MAX_VALUES` values (a "billion laughs" document is
refused before it is built), and then :func:`~fusionjax.config.validation.check_tree`:
string keys only, bounded depth and size.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

from fusionjax.config.validation import MAX_DEPTH, MAX_VALUES, check_tree
from fusionjax.errors import ConfigError, capped, shown

SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
MAX_FILE_BYTES = 2 * 2**20  # a config describes a run; data lives in the data set's files


def load_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """The config in ``path`` with ``overrides`` applied (a new dict)."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"config file {str(path)!r} has an unknown extension {path.suffix!r}",
            hint="use one of " + ", ".join(sorted(SUFFIXES)),
        )
    name = f"config file {shown(str(path))}"
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # never more, whatever the file (or device) is
    except FileNotFoundError:
        raise ConfigError(f"{name} does not exist") from None
    except OSError as e:
        raise ConfigError(f"{name} cannot be read: {capped(str(e), 500)}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MB",
                          hint="a config describes the model, data set and training; keep data "
                               "in the files the data set reads")
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name} cannot be read: {e}") from None
    try:
        if kind == "TOML":
            data = tomllib.loads(text)
        elif kind == "JSON":
            data = json.loads(text)
        else:
            data = _load_yaml(text, name)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"{name} nests tables and lists too deeply (at most {MAX_DEPTH} "
                          f"levels)") from None
    except Exception as e:  # noqa: BLE001 - every parser has its own error type
        raise ConfigError(f"{name} is not valid {kind}: {capped(str(e), 1000)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must hold a table/mapping at the top, "
                          f"not a {type(data).__name__}")
    check_tree(data, where=name)
    return _apply(data, overrides)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (``["a", "b", "c"]``, parsed value)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ConfigError(
            f"override {shown(text)} is not of the form key.path=value",
            hint="e.g. train.steps=200 or model.encoders.audio.n_mels=40",
        )
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [p.strip() for p in parts], value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``config`` with each ``key.path=value`` set (tables created as needed)."""
    check_tree(config)  # before deepcopy walks it: string keys, bounded depth and size
    return _apply(config, overrides)


def _apply(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """:func:`apply_overrides` on a config already checked by ``check_tree``."""
    config = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        node = config
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {shown(text)} descends into {shown('.'.join(parts[: i + 1]))}, "
                    f"which is {shown(child)}, not a table",
                    key=".".join(parts[: i + 1]),
                )
            node = child
        node[parts[-1]] = value
    if overrides:
        check_tree(config)
    return config


def _load_yaml(text: str, name: str) -> Any:
    """The YAML document in ``text`` (safe tags only), refused before construction when
    its aliases expand to more than :data:`MAX_VALUES` values or refer to themselves."""
    import yaml

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it
    # Parsing is incremental and cheap; building the node graph is not: count the nodes the
    # text writes (a key and its value are two) and stop early, before building anything.
    written = 0
    for event in yaml.parse(text, Loader=loader_class):
        if isinstance(event, yaml.NodeEvent):  # scalars, aliases, sequence and mapping starts
            written += 1
            if written > 2 * MAX_VALUES + 1:
                raise ConfigError(f"{name} holds more than {MAX_VALUES:,} values",
                                  hint="keep large data in files the data set reads")
    loader = loader_class(text)
    try:
        node = loader.get_single_node()  # the node graph: an alias is its anchor's node, shared
        if node is None:
            return None
        _check_expansion(node, name)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: Any, name: str) -> None:
    """How many values the YAML node graph from ``root`` stands for once every alias is
    expanded, counted without expanding: each shared node once (linear in the file)."""
    import yaml

    def children(node):  # what check_tree counts: values, and keys that are not scalars
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair if not isinstance(n, yaml.ScalarNode)
                    or n is pair[1]]
        return node.value if isinstance(node, yaml.SequenceNode) else []

    size: dict[int, int] = {}  # id(node) -> values it expands to (capped at MAX_VALUES + 1)
    open_: set[int] = set()  # nodes being counted: their descendants are still on the stack
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, counted = stack.pop()
        if counted:
            open_.discard(id(node))
            size[id(node)] = min(MAX_VALUES + 1, 1 + sum(size[id(c)] for c in children(node)))
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            raise ConfigError(f"{name}: the YAML value at line {node.start_mark.line + 1} holds an "
                              f"alias of itself (a value nested in itself)",
                              hint="an alias (*name) can only repeat a value defined before it")
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in size)
    if size[id(root)] > MAX_VALUES:
        distinct = "its YAML aliases expand it to" if len(size) <= MAX_VALUES else "it holds"
        raise ConfigError(f"{name}: {distinct} more than {MAX_VALUES:,} values",
                          hint="an alias (*name) repeats its anchor's whole value each time it is "
                               "used; a config needs few of them")
