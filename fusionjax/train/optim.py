"""The optimiser from ``[train.optimizer]``: an Optax optimiser by name, with its
own keyword arguments checked against its signature.

    [train.optimizer]
    name = "adamw"            # default: "adam"
    learning_rate = 3e-4
    weight_decay = 1e-4
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

from fusionjax.config.validation import as_config_value, bind
from fusionjax.errors import ConfigError, did_you_mean

OPTIMIZERS = ("adam", "adamw", "sgd", "lion", "rmsprop", "adagrad", "adafactor", "lamb",
              "nadam", "radam", "adabelief", "novograd")


def make_optimizer(section: Mapping[str, Any]) -> tuple[optax.GradientTransformation, dict]:
    """The optimiser, and its section resolved (name and every default filled in)."""
    section = dict(section)
    name = section.pop("name", "adam")
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {name!r}{did_you_mean(str(name), OPTIMIZERS)}",
            key="train.optimizer.name", hint=f"choose from: {', '.join(OPTIMIZERS)}")
    fn = getattr(optax, name)
    kwargs = bind(fn, section, "train.optimizer", owner=f"optax.{name}")
    resolved = {k: as_config_value(v) for k, v in kwargs.items()
                if v is None or isinstance(v, (bool, int, float, str, list, tuple))}
    return fn(**kwargs), {"name": name, **resolved}
