"""Starting a component from what was learned: ``init_from`` in its config section.

::

    [model.encoders.image]
    type = "cnn_image"
    init_from = "runs/image-only"                   # that run's component at the same key path
    # init_from = {run = "runs/qa", key = "model.encoders.image"}   # or at a named one
    trainable = false                               # and, e.g., frozen (fusionjax.assembly.Training)

The source is a finished run's final model (``final_model/``, an Orbax checkpoint,
read as arrays: nothing is executed or unpickled).  Checked when the config is assembled,
against the abstract component, before any compute: a source that is not a finished
run, a key path it has no component at, a parameter missing on either side or of another
shape is a :class:`~fusionjax.errors.ConfigError` at ``<section>.init_from`` naming the
component, the parameter and both shapes.  The arrays replace the component's random
initialisation when the model is built for training (:meth:`Assembly.build`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusionjax.errors import ConfigError, RunError, shown


@dataclass(frozen=True)
class InitFrom:
    """Where a component's initial parameters come from: a finished run, and the key
    path of the component in it (None: the same key path as the target's)."""

    run: str
    key: str | None = None

    @classmethod
    def from_config(cls, value: Any, key: str) -> InitFrom:
        where = f"{key}.init_from"
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping) and isinstance(value.get("run"), str) \
                and set(value) <= {"run", "key"} and isinstance(value.get("key", ""), str):
            return cls(value["run"], value.get("key"))
        raise ConfigError(f"must be a run directory or {{run = \"DIR\", key = \"model....\"}}, got "
                          f"{shown(value)}", key=where,
                          hint='e.g. init_from = "runs/image-only" (the component at the same key '
                               'path), or {run = "runs/qa", key = "model.encoders.image"}')

    def resolved(self) -> str | dict[str, str]:
        return self.run if self.key is None else {"run": self.run, "key": self.key}

    def arrays(self, target_key: str) -> dict[str, np.ndarray]:
        """The source component's parameters, flat (``"convs/0/kernel"``), from its run."""
        source = self.key or target_key
        where = f"{target_key}.init_from"
        try:
            found = _final_arrays(self.run)
        except RunError as e:
            raise ConfigError(f"{e}", key=where) from None
        prefix = "/".join(source.split(".")[1:]) + "/"
        arrays = {k[len(prefix):]: v for k, v in found.items() if k.startswith(prefix)}
        if not arrays:
            components = sorted({"model." + ".".join(k.split("/")[:2 if k.startswith("encoders/") else 1])
                                 for k in found})
            raise ConfigError(f"run {self.run!r} has no component at {source!r}", key=where,
                              hint=f"its components: {', '.join(components)}")
        return arrays


@functools.lru_cache(maxsize=8)
def _final_arrays(run: str) -> dict[str, np.ndarray]:
    from fusionjax.rundir import RunDir

    source = RunDir(run)
    source.read_config()  # NotARunError where there is no run
    return {k: np.asarray(v) for k, v in source.final_arrays().items()}


def check_fits(init: InitFrom, target_key: str, abstract_module: Any, owner: str) -> None:
    """Every parameter of the (abstract) component has a source array of its shape, and
    the source has no parameter the component lacks."""
    source, target = init.arrays(target_key), _flat_params(abstract_module)
    where = f"{target_key}.init_from"
    missing = sorted(set(target) - set(source))
    extra = sorted(set(source) - set(target))
    if missing or extra:
        listing = (f"missing in the source: {', '.join(missing[:5])}" if missing else "") + \
                  ("; " if missing and extra else "") + \
                  (f"not in the component: {', '.join(extra[:5])}" if extra else "")
        raise ConfigError(f"the parameters of {init.run!r} at {init.key or target_key!r} do not match "
                          f"those of {owner} ({listing})", key=where,
                          hint="init_from needs the same component with the same settings")
    for name in sorted(target):
        want, got = tuple(target[name].shape), tuple(np.shape(source[name]))
        if want != got:
            raise ConfigError(f"parameter {name!r} has shape {got} in {init.run!r} but {want} in "
                              f"{owner}", key=where,
                              hint="init_from needs the same component with the same settings "
                                   "(widths, vocabulary size, input shape)")


def apply(init: InitFrom, target_key: str, module: Any) -> None:
    """Replace ``module``'s parameters by the source's (shapes checked by :func:`check_fits`)."""
    from flax import nnx

    from fusionjax.rundir import fill

    nnx.update(module, fill(nnx.state(module, nnx.Param), init.arrays(target_key)))


def _flat_params(module: Any) -> dict[str, Any]:
    from flax import nnx

    from fusionjax.rundir import flatten

    return flatten(nnx.to_pure_dict(nnx.state(module, nnx.Param)))
