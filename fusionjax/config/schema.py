"""The shape of a fusionjax config: its top-level sections and the ``train`` section.

::

    [model.encoders.<modality>]   type = "<encoder>"  + its parameters
    [model.fusion]                type = "<fusion>"   + its parameters
    [model.head]                  type = "<head>"     + its parameters
    [data]                        type = "<dataset>"  + its parameters
    [train]                       the fields of TrainConfig below
    [train.optimizer]             name = "<optax optimiser>" + its parameters, clip_norm
    [train.optimizer.schedule]    warmup_steps, decay, decay_steps, final_lr_fraction
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fusionjax.config.validation import bind
from fusionjax.errors import ConfigError, did_you_mean

SECTIONS = {
    "model": "the network: encoders, fusion, head",
    "data": "the data set: type and its parameters",
    "train": "steps, batch size, seed, optimiser, logging, output directory",
}
MODEL_SECTIONS = ("encoders", "fusion", "head")


@dataclass(frozen=True)
class TrainConfig:
    """The ``[train]`` section (every field optional)."""

    steps: int = 500
    batch_size: int = 64
    seed: int = 0
    optimizer: dict = field(default_factory=lambda: {"name": "adam", "learning_rate": 1e-3})
    log_every: int = 50
    eval_split: str = "test"
    eval_batch_size: int | None = None
    output_dir: str | None = None
    modality_dropout: dict = field(default_factory=dict)  # {modality: probability}
    grad_accumulation: int = 1  # micro-batches per step, gradients averaged inside the step
    precision: Literal["float32", "bfloat16", "float16"] = "float32"  # compute dtype of training
    shard_params: bool = False  # split params and optimiser state over the devices (FSDP)
    eval_every: int | None = None  # evaluate validation_split every N steps (a multiple of log_every)
    validation_split: str | None = None  # the periodic evaluations' split (default: eval_split)
    early_stopping: dict = field(default_factory=dict)  # {metric, mode, patience, min_delta}
    restore_best: bool = True  # with eval_every: the run's final model is its best evaluation's
    checkpoint_every: int = 1000  # a checkpoint at the first log point after every N steps
    keep_checkpoints: int = 2  # the most recent ones kept (plus the best, with eval_every)

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "grad_accumulation"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=f"train.{name}")
        if self.batch_size % self.grad_accumulation:
            k = self.grad_accumulation
            raise ConfigError(
                f"{k} micro-batches do not split train.batch_size ({self.batch_size}) evenly",
                key="train.grad_accumulation",
                hint=f"use a divisor of {self.batch_size}, or a batch_size that is a multiple "
                     f"of {k} (each micro-batch holds batch_size / grad_accumulation examples)")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ConfigError("must be >= 1", key="train.eval_batch_size")
        for name in ("checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=f"train.{name}")
        if self.eval_every is not None and (self.eval_every < 1 or self.eval_every % self.log_every):
            raise ConfigError(f"must be a positive multiple of train.log_every ({self.log_every}), "
                              f"got {self.eval_every}", key="train.eval_every",
                              hint="evaluations happen at log points")
        _check_early_stopping(self.early_stopping, self.eval_every)
        for modality, rate in self.modality_dropout.items():
            key = f"train.modality_dropout.{modality}"
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ConfigError(f"must be a probability, got {rate!r}", key=key)
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"must be in [0, 1), got {rate}", key=key,
                                  hint="the probability that a training example loses this modality")


EARLY_STOPPING = {"metric": str, "mode": str, "patience": int, "min_delta": float}


def _check_early_stopping(section: dict, eval_every: int | None) -> None:
    """``[train.early_stopping]``: which metric, which way, how patient."""
    if not section:
        return
    for key, value in section.items():
        where = f"train.early_stopping.{key}"
        if key not in EARLY_STOPPING:
            raise ConfigError(f"unknown key{did_you_mean(key, EARLY_STOPPING)}", key=where,
                              hint="keys: metric, mode (min|max), patience, min_delta")
        want = EARLY_STOPPING[key]
        if isinstance(value, bool) or not isinstance(value, int | float if want is float else want):
            raise ConfigError(f"must be {want.__name__}, got {value!r}", key=where)
    if section.get("mode", "max") not in ("min", "max"):
        raise ConfigError(f"must be 'min' or 'max', got {section['mode']!r}",
                          key="train.early_stopping.mode")
    if section.get("patience", 0) < 0 or section.get("min_delta", 0.0) < 0:
        raise ConfigError("patience and min_delta must be >= 0", key="train.early_stopping")
    if eval_every is None:
        raise ConfigError("needs periodic evaluations", key="train.early_stopping",
                          hint="set train.eval_every (a multiple of train.log_every)")


def check_top_level(config: Mapping[str, Any]) -> None:
    """Unknown or missing sections, and a malformed ``[model]``."""
    for key in config:
        if key not in SECTIONS:
            raise ConfigError(
                f"unknown section{did_you_mean(key, SECTIONS)}", key=key,
                hint="sections are: " + "; ".join(f"{k} ({v})" for k, v in SECTIONS.items()),
            )
    for key in ("model", "data"):
        if key not in config:
            raise ConfigError(f"missing section [{key}] ({SECTIONS[key]})", key=key)
        if not isinstance(config[key], dict):
            raise ConfigError(f"must be a table, got {config[key]!r}", key=key)
    model = config["model"]
    for key in model:
        if key not in MODEL_SECTIONS:
            raise ConfigError(
                f"unknown key{did_you_mean(key, MODEL_SECTIONS)}", key=f"model.{key}",
                hint="[model] holds: " + ", ".join(MODEL_SECTIONS),
            )
    for key in ("encoders", "head"):  # a fusion is optional for heads that take embeddings
        if key not in model:
            raise ConfigError(f"missing table [model.{key}]", key=f"model.{key}")
    for key in MODEL_SECTIONS:
        if key in model and not isinstance(model[key], dict):
            raise ConfigError(f"must be a table, got {model[key]!r}", key=f"model.{key}")
    if not model["encoders"]:
        raise ConfigError("needs at least one modality, e.g. [model.encoders.image]",
                          key="model.encoders")


def train_config(config: Mapping[str, Any]) -> TrainConfig:
    section = config.get("train", {})
    if not isinstance(section, dict):
        raise ConfigError(f"must be a table, got {section!r}", key="train")
    return TrainConfig(**bind(TrainConfig, section, "train", owner="the [train] section"))
