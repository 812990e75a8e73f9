"""Read a config file into plain dicts and apply ``key.path=value`` overrides.

Formats by extension: ``.toml`` (tomllib), ``.yaml``/``.yml`` (PyYAML's safe
loader only), ``.json``.  Override values are parsed as TOML values
(``3``, ``1e-3``, ``true``, ``[32, 64]``, ``"text"``, ``{a = 1}``); anything that
does not parse is taken as a bare string, so ``model.fusion.type=sum`` works.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

from fusionjax.errors import ConfigError

SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


def load_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """The config in ``path`` with ``overrides`` applied (a new dict)."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"config file {str(path)!r} has an unknown extension {path.suffix!r}",
            hint="use one of " + ", ".join(sorted(SUFFIXES)),
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {e}") from None
    try:
        if kind == "TOML":
            data = tomllib.loads(text)
        elif kind == "JSON":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - every parser has its own error type
        raise ConfigError(f"config file {str(path)!r} is not valid {kind}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table/mapping at the top, "
                          f"not a {type(data).__name__}")
    return apply_overrides(data, overrides)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (``["a", "b", "c"]``, parsed value)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ConfigError(
            f"override {text!r} is not of the form key.path=value",
            hint="e.g. train.steps=200 or model.encoders.audio.n_mels=40",
        )
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [p.strip() for p in parts], value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``config`` with each ``key.path=value`` set (tables created as needed)."""
    config = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        node = config
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r} descends into {'.'.join(parts[: i + 1])!r}, "
                    f"which is {child!r}, not a table",
                    key=".".join(parts[: i + 1]),
                )
            node = child
        node[parts[-1]] = value
    return config
