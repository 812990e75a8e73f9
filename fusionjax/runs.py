"""A finished run directory, loaded back: the model with its trained parameters and
the data set ready to read new inputs.  ``evaluate`` and ``predict`` need nothing
else (and the plugins whose components the run used)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx, serialization

from fusionjax.assembly import Assembly, assemble
from fusionjax.errors import ConfigError, DataError
from fusionjax.model import FusionModel

PARAMS = Path("checkpoint") / "params.msgpack"


@dataclass
class Run:
    path: Path
    assembly: Assembly
    model: FusionModel


def load_run(path: str | Path) -> Run:
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise DataError(f"{path}: not a fusionjax run directory (no config.json)")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as e:
        raise DataError(f"{config_file}: unreadable ({e})") from None
    try:
        assembly = assemble(config)
    except ConfigError as e:
        raise ConfigError(f"{e}{missing_plugin_hint(path, e, config)}") from None
    assembly.dataset.restore(path)
    model = assembly.build()
    try:
        restored = serialization.msgpack_restore((path / PARAMS).read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path / PARAMS}: no checkpoint (did the run finish?)") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file
        raise DataError(f"{path / PARAMS}: unreadable checkpoint ({e})") from None
    params = nnx.state(model, nnx.Param)
    expected = _shapes(nnx.to_pure_dict(params))
    found = _shapes(restored)
    if found != expected:
        diff = sorted(set(found.items()) ^ set(expected.items()))[:3]
        raise DataError(f"{path / PARAMS}: does not fit the model of {config_file} "
                        f"(first differences, path and shape: {diff})")
    nnx.replace_by_pure_dict(params, restored)
    nnx.update(model, params)
    return Run(path, assembly, model)


def _shapes(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in leaves}


def missing_plugin_hint(path: Path, error: ConfigError, config: dict | None = None) -> str:
    """Which plugin and package the run used, when a component no longer resolves."""
    if not error.key or not error.key.endswith(".type"):
        return ""
    if config is None:
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            return ""
    node = config
    for part in error.key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    plugin = node.partition("/")[0] if isinstance(node, str) and "/" in node else None
    try:
        info = json.loads((path / "run.json").read_text())["plugins"][plugin]
    except (OSError, ValueError, KeyError):
        return ""
    return (f"\n  this run used plugin {plugin!r} from package {info['package']} "
            f"{info['version']}: install it (pip install {info['package']}) and try again")
