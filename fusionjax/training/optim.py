"""The optimiser from ``[train.optimizer]``: an Optax optimiser by name, with its
own keyword arguments checked against its signature, optional gradient clipping
and an optional learning-rate schedule.

    [train.optimizer]
    name = "adamw"            # default: "adam"
    learning_rate = 3e-4      # the peak of the schedule
    weight_decay = 1e-4       # decoupled (adamw, lion, lamb, novograd)
    clip_norm = 1.0           # clip the gradient's global norm first (default: no clipping)

    [train.optimizer.schedule]
    warmup_steps = 100        # linear ramp from 0 to learning_rate
    decay = "cosine"          # "constant" (default) | "linear" | "cosine"
    final_lr_fraction = 0.1   # lr at the end of the decay, as a fraction of learning_rate
    decay_steps = 400         # default: train.steps - warmup_steps

The schedule is a table of its own, not flat keys of ``[train.optimizer]``: every
other key of that table is an argument of the Optax function and is checked against
its signature, so the schedule's keys can never collide with an optimiser's (Optax's
own ``decay`` of ``rmsprop``, say), and the table reads, overrides
(``train.optimizer.schedule.decay=linear``) and records as one unit.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import jax
import optax

from fusionjax.config.schema import DEFAULT_LEARNING_RATE, DEFAULT_OPTIMIZER
from fusionjax.config.validation import as_config_value, bind, signature_params
from fusionjax.errors import ConfigError, did_you_mean, shown

OPTIMIZERS = ("adam", "adamw", "sgd", "lion", "rmsprop", "adagrad", "adafactor", "lamb",
              "nadam", "radam", "adabelief", "novograd")
KEY = "train.optimizer"
OWN_KEYS = ("name", "clip_norm", "schedule")  # keys fusionjax reads itself, not Optax

# Range checks for the keyword arguments that the common optimisers share, by name:
# (predicate, what the value must be).  A None value (an Optax "off") is never checked.
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "learning_rate": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "b1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "b2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "eps": (lambda v: v >= 0, ">= 0"),
    "eps_root": (lambda v: v >= 0, ">= 0"),
}


@dataclass(frozen=True)
class ScheduleConfig:
    """The ``[train.optimizer.schedule]`` table (every key optional)."""

    warmup_steps: int = 0
    decay: Literal["constant", "linear", "cosine"] = "constant"
    decay_steps: int | None = None  # None: until train.steps
    final_lr_fraction: float | None = None  # None: 1.0 for "constant", else 0.0


class Optimizer(NamedTuple):
    """What ``[train.optimizer]`` resolves to."""

    transform: optax.GradientTransformation
    section: dict  # the section with every default filled in (as config.json records it)
    learning_rate: Callable[[Any], Any] | None  # optimiser update number (0-based) -> lr


def make_optimizer(section: Mapping[str, Any], *, steps: int) -> Optimizer:
    """The optimiser for a run of ``steps`` optimiser steps, its section resolved (name
    and every default filled in, the schedule included: assembling the resolved section
    again gives the same optimiser) and its learning-rate schedule."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"must be a table, got {shown(section)}", key=KEY)
    section = dict(section)
    if "name" not in section:  # the default optimiser, with its default learning rate
        section.setdefault("learning_rate", DEFAULT_LEARNING_RATE)
    name = section.pop("name", DEFAULT_OPTIMIZER)
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {shown(name)}{did_you_mean(name, OPTIMIZERS)}",
            key=f"{KEY}.name", hint=f"choose from: {', '.join(OPTIMIZERS)}")
    fn = getattr(optax, name)
    clip_norm = _clip_norm(section.pop("clip_norm", None))
    schedule_section = section.pop("schedule", {})
    _check_weight_decay(name, fn, section)
    _check_names(name, fn, section)
    kwargs = bind(fn, section, KEY, owner=f"optax.{name}")
    for arg, value in kwargs.items():
        if arg in _RANGES and isinstance(value, int | float) and not isinstance(value, bool):
            ok, what = _RANGES[arg]
            if not ok(value):
                raise ConfigError(f"must be {what}, got {value} (optax.{name})", key=f"{KEY}.{arg}")
    resolved = {k: as_config_value(v) for k, v in kwargs.items()
                if v is None or isinstance(v, (bool, int, float, str, list, tuple))}
    schedule, schedule_resolved = make_schedule(schedule_section, kwargs.get("learning_rate"),
                                                steps=steps)
    if schedule is not None and not _is_constant(schedule_resolved):
        kwargs = {**kwargs, "learning_rate": schedule}  # Optax calls it with its update count
    resolved = {"name": name, **resolved, "clip_norm": clip_norm, "schedule": schedule_resolved}
    tx = fn(**kwargs)
    if clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    return Optimizer(tx, resolved, schedule)


def make_schedule(section: Any, learning_rate: Any, *, steps: int
                  ) -> tuple[Callable[[Any], Any] | None, dict]:
    """``[train.optimizer.schedule]`` -> (schedule: update number -> learning rate, or
    None when the optimiser has no learning rate; the table resolved).

    The learning rate ramps linearly from 0 to ``learning_rate`` over ``warmup_steps``
    updates, then ``decay``s over ``decay_steps`` updates to ``final_lr_fraction *
    learning_rate`` and stays there."""
    key = f"{KEY}.schedule"
    if not isinstance(section, Mapping):
        raise ConfigError(f"must be a table, got {shown(section)}", key=key,
                          hint="e.g. schedule = {warmup_steps = 100, decay = \"cosine\"}")
    cfg = ScheduleConfig(**bind(ScheduleConfig, section, key, owner="the learning-rate schedule"))
    if cfg.warmup_steps < 0 or cfg.warmup_steps >= steps:
        raise ConfigError(f"must be >= 0 and < train.steps ({steps}), got {cfg.warmup_steps}",
                          key=f"{key}.warmup_steps")
    decay_steps = steps - cfg.warmup_steps if cfg.decay_steps is None else cfg.decay_steps
    if decay_steps < 1:
        raise ConfigError(f"must be >= 1, got {decay_steps}", key=f"{key}.decay_steps")
    final = cfg.final_lr_fraction
    if final is None:
        final = 1.0 if cfg.decay == "constant" else 0.0
    if not 0.0 <= final <= 1.0:
        raise ConfigError(f"must be in [0, 1], got {final}", key=f"{key}.final_lr_fraction")
    if cfg.decay == "constant" and final != 1.0:
        raise ConfigError(f"is {final}, but decay = \"constant\" keeps the learning rate",
                          key=f"{key}.final_lr_fraction",
                          hint="set decay = \"linear\" or \"cosine\" to end at a fraction of it")
    resolved = asdict(ScheduleConfig(cfg.warmup_steps, cfg.decay, decay_steps, float(final)))
    if learning_rate is None:
        if not _is_constant(resolved):
            raise ConfigError("needs the optimiser's learning_rate", key=key,
                              hint=f"set {KEY}.learning_rate (the peak of the schedule)")
        return None, resolved
    lr = float(learning_rate)
    if cfg.decay == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=final)
    elif cfg.decay == "linear":
        decay = optax.linear_schedule(lr, lr * final, decay_steps)
    else:
        decay = optax.constant_schedule(lr)
    if not cfg.warmup_steps:
        return decay, resolved
    warmup = optax.linear_schedule(0.0, lr, cfg.warmup_steps)
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps]), resolved


def _is_constant(schedule: Mapping[str, Any]) -> bool:
    return schedule["warmup_steps"] == 0 and schedule["decay"] == "constant"


def _clip_norm(value: Any) -> float | None:
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0 < value <= sys.float_info.max:  # nan, inf and huge ints too
        finite = "finite " if number and not value <= sys.float_info.max else ""
        raise ConfigError(f"must be a {finite}number > 0, got {shown(value)}", key=f"{KEY}.clip_norm",
                          hint="the largest global (all-parameter) L2 norm of a gradient; "
                               "leave it out for no clipping")
    return float(value)


def _check_names(name: str, fn: Callable, section: Mapping[str, Any]) -> None:
    """An unknown key, with a did-you-mean over Optax's arguments and fusionjax's own keys."""
    params, var_kw = signature_params(fn)
    for key in section:
        if key not in params and not var_kw:
            raise ConfigError(
                f"unknown parameter {shown(key)}{did_you_mean(key, [*params, *OWN_KEYS])} for "
                f"optax.{name}", key=f"{KEY}.{key}",
                hint=f"valid parameters: {', '.join(p.describe() for p in params.values())}; "
                     f"and fusionjax's own: {', '.join(OWN_KEYS)}")


def _check_weight_decay(name: str, fn: Callable, section: Mapping[str, Any]) -> None:
    """``weight_decay`` for an optimiser that has none is refused, not silently
    turned into an L2 penalty (which Adam would rescale per parameter)."""
    if "weight_decay" not in section or "weight_decay" in signature_params(fn)[0]:
        return
    with_decay = [n for n in OPTIMIZERS
                  if "weight_decay" in inspect.signature(getattr(optax, n)).parameters]
    hint = ('use name = "adamw" (Adam with decoupled weight decay)' if name in ("adam", "nadam")
            else f"use an optimiser with decoupled weight decay: {', '.join(with_decay)}")
    raise ConfigError(f"optax.{name} has no weight decay", key=f"{KEY}.weight_decay", hint=hint)


def per_component(tx: optax.GradientTransformation,
                  groups: Mapping[tuple[str, ...], tuple[bool, float]]) -> optax.GradientTransformation:
    """``tx`` applied per model component: ``groups`` maps where a component's parameters
    sit in the model's state (``("encoders", "image")``, ``("head",)``) to its
    ``(trainable, lr_scale)``.  A frozen component's updates are zero and it holds no
    optimiser state (``optax.set_to_zero`` under ``optax.multi_transform``); a scaled one's
    updates are multiplied by its ``lr_scale``.  With every component at the defaults this
    is ``tx`` itself, so such a run is unchanged, bit for bit."""
    if all(trainable and scale == 1.0 for trainable, scale in groups.values()):
        return tx

    def label(trainable: bool, scale: float) -> str:
        return "frozen" if not trainable or scale == 0.0 else f"scale={scale!r}"

    transforms: dict[str, optax.GradientTransformation] = {"frozen": optax.set_to_zero(),
                                                          label(True, 1.0): tx}
    for trainable, scale in groups.values():
        name = label(trainable, scale)
        if name not in transforms:
            transforms[name] = tx if scale == 1.0 else optax.chain(tx, optax.scale(scale))

    def labels(params):
        def one(path, _):
            keys = [getattr(k, "key", getattr(k, "name", k)) for k in path]
            for prefix, (trainable, scale) in groups.items():
                if tuple(str(k) for k in keys[: len(prefix)]) == prefix:
                    return label(trainable, scale)
            return label(True, 1.0)
        return jax.tree_util.tree_map_with_path(one, params)

    return optax.multi_transform(transforms, labels)
