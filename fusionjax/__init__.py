"""fusionjax: plugin-based modality fusion for JAX.

``import fusionjax`` is cheap: it loads no plugin, imports no JAX and touches no
device.  Names below are imported on first access.  It does tune glibc's malloc for
XLA:CPU's per-step buffers (:mod:`fusionjax.allocator`), which has to happen before
JAX starts its threads.

    import fusionjax as fj
    assembly = fj.assemble(fj.load_config("examples/three_modality.toml", ["train.steps=50"]))
    result = fj.train(assembly, "runs/notebook")
    run = fj.load_run(result.run_dir)
    run.evaluate("test").metrics
    run.predict(image="digit.png", text="seven").to_json()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fusionjax import allocator as _allocator

__version__ = "0.1.0"
_allocator.tune()

_EXPORTS = {
    "Encoder": "fusionjax.interfaces",
    "Fusion": "fusionjax.interfaces",
    "Head": "fusionjax.interfaces",
    "Dataset": "fusionjax.interfaces",
    "FieldSpec": "fusionjax.interfaces",
    "TokenSequence": "fusionjax.interfaces",
    "FusionModel": "fusionjax.model",
    "Registry": "fusionjax.registry",
    "default_registry": "fusionjax.plugins",
    "hookimpl": "fusionjax.hookspecs",
    "load_config": "fusionjax.config",
    "assemble": "fusionjax.assembly",
    "train": "fusionjax.training.loop",
    "load_run": "fusionjax.rundir",
    "Run": "fusionjax.rundir",
    "RunDir": "fusionjax.rundir",
    "Answer": "fusionjax.answers",
    "RunError": "fusionjax.errors",
    "FusionJaxError": "fusionjax.errors",
    "ConfigError": "fusionjax.errors",
    "ComponentError": "fusionjax.errors",
    "PluginError": "fusionjax.errors",
    "DataError": "fusionjax.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fusionjax.answers import Answer
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax.errors import ComponentError, ConfigError, DataError, FusionJaxError, PluginError, RunError
    from fusionjax.hookspecs import hookimpl
    from fusionjax.interfaces import Dataset, Encoder, FieldSpec, Fusion, Head, TokenSequence
    from fusionjax.model import FusionModel
    from fusionjax.plugins import default_registry
    from fusionjax.registry import Registry
    from fusionjax.rundir import Run, RunDir, load_run
    from fusionjax.training.loop import train


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fusionjax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
