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

from fusionjax.config.validation import bind, check_tree
from fusionjax.errors import ConfigError, did_you_mean, shown

SECTIONS = {
    "model": "the network: encoders, fusion, head",
    "data": "the data set: type and its parameters",
    "train": "steps, batch size, seed, optimiser, logging, output directory",
}
MODEL_SECTIONS = ("encoders", "fusion", "head")
DEFAULT_OPTIMIZER = "adam"  # a [train.optimizer] table without `name`
DEFAULT_LEARNING_RATE = 1e-3  # ... and without `learning_rate`


@dataclass(frozen=True)
class TrainConfig:
    """The ``[train]`` section (every field optional).

    Parameters:
        steps: Number of optimiser steps. Must be ``>= 1``.
        batch_size: Global training batch size (split over all devices). Must be ``>= 1``, at
            most the size of the ``train`` split, and a multiple of the device count; with
            ``grad_accumulation = k``, a multiple of ``k`` × the device count. All checked
            once, when the config is assembled (``config check`` too). Only full batches are
            used; the train split is reshuffled every epoch.
        seed: Seeds parameter initialisation (each component's key is derived from the seed
            and its config key path, so adding a modality does not change the other
            components' initialisation) and the shuffling of training batches. The data set
            has its own seed (``data.seed`` of every bundled data set).
        optimizer: The optimiser, gradient clipping and learning-rate schedule; see
            [``[train.optimizer]``](#trainoptimizer). A ``[train.optimizer]`` table you write
            replaces this default (it is not merged), except that a table without ``name`` is
            ``adam`` and gets ``learning_rate = 1e-3`` unless it sets one (so
            ``train.optimizer.clip_norm=1.0`` works on a config without the table). The
            resolved config records the optimiser's ``name``, all its defaults that are plain
            values, ``clip_norm`` and the resolved ``schedule``.
        log_every: Log training metrics (to the console and ``metrics.jsonl``) every
            ``log_every`` steps and at the last step. Must be ``>= 1``. Step 1 (which includes
            compilation) is timed and reported on its own: it is never a log point and is not
            included in any logged metrics.
        eval_split: The split evaluated once after the last step. Must be a non-empty split of
            the data set (``synthetic`` has ``train`` and ``test``); checked by ``config check``,
            whose error lists the data set's splits.
        eval_batch_size: Batch size for evaluation; none: ``batch_size``. Must be ``>= 1`` and
            a multiple of the device count. The whole split is evaluated; the last short batch
            is padded with rows of weight 0.
        output_dir: The run directory. ``--output-dir`` on the command line takes precedence;
            if neither is given, ``runs/<config file stem>-<YYYYmmdd-HHMMSS>`` relative to the
            current directory.
        modality_dropout: Modality → probability in ``[0, 1)`` that a training example loses
            that modality (``modality_dropout = {image = 0.3}``): its mask turns false for that
            step and the model zeroes the input, so the model learns to answer without it.
            Drawn independently per example, modality and step from ``seed``; an example never
            loses every modality it has (where the draw would hide them all, it keeps its
            masks). Evaluation never drops anything. A name that is not a modality of the
            model is a config error with a did-you-mean. See ``fusionjax evaluate --sweep``
            for its effect.
        grad_accumulation: Split each batch into this many micro-batches inside the compiled
            step, run forward and backward on one at a time, and apply **one** optimiser
            update with the mean gradient: the update of a ``batch_size`` batch with the
            activation memory of a ``batch_size / grad_accumulation`` one. Must be ``>= 1``
            and divide ``batch_size`` (``train.grad_accumulation: 5 micro-batches do not split
            train.batch_size (32) evenly``). ``steps`` counts updates, not micro-batches. See
            [Gradient accumulation](#gradient-accumulation).
        precision: The dtype training computes in; parameters and optimiser state are always
            float32. See [Mixed precision](#mixed-precision).
        shard_params: Split the parameters and the optimiser state over the devices (FSDP /
            ZeRO-3 style) instead of replicating them: every array of at least 2^14 elements
            is split along its largest dimension that the device count divides, so each
            device stores ``1/n`` of it; smaller arrays stay whole. The step gathers the
            parameters before the forward pass (communication each step); the results are
            those of the replicated run up to float rounding. For models whose parameters and
            Adam state do not fit one device. No effect on one device. See
            [Sharded parameters](distributed.md#sharded-parameters-fsdp).
        eval_every: Evaluate ``validation_split`` every N steps (a positive multiple of
            ``log_every``: evaluations happen at log points), log it to
            ``metrics.jsonl``/TensorBoard, track the best evaluation, and write a checkpoint.
            none: evaluate once, after the last step. See
            [Evaluation, best model, early stopping](#evaluation-best-model-early-stopping).
        validation_split: The split of the periodic evaluations; none: ``eval_split``. Early
            stopping on the test split selects on the test split: give your data a validation
            split (e.g. the manifest's ``split`` column) when the final figure must be
            unbiased.
        early_stopping: ``{metric, mode, patience, min_delta}``: needs ``eval_every``.
            ``metric`` (default ``"loss"``) must be one the head reports (a did-you-mean
            otherwise); ``mode`` ``"min"``/``"max"`` (default: ``min`` for names with
            loss/error/mse/mae, else ``max``); ``patience`` (default ``0``: never stop, only
            track the best) evaluations in a row without an improvement larger than
            ``min_delta`` (default ``0.0``) stop the run.
        restore_best: With ``eval_every``: the run's final model (the final evaluation,
            ``final_model/``, what ``evaluate``/``predict`` load) is the best evaluation's,
            restored from its checkpoint. ``false``: the last step's.
        checkpoint_every: Write a checkpoint at the first log point at least this many steps
            after the previous one, at every periodic evaluation and at the end. See
            [Checkpoints and resume](#checkpoints-and-resume).
        keep_checkpoints: How many of the most recent checkpoints to keep (the best
            evaluation's is kept as well).
    """

    steps: int = 500
    batch_size: int = 64
    seed: int = 0
    optimizer: dict = field(default_factory=lambda: {"name": DEFAULT_OPTIMIZER,
                                                     "learning_rate": DEFAULT_LEARNING_RATE})
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
                raise ConfigError(f"must be a probability, got {shown(rate)}", key=key)
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"must be in [0, 1), got {rate}", key=key,
                                  hint="the probability that a training example loses this modality")


    def check_devices(self, n_devices: int) -> None:
        """A :class:`ConfigError` unless the train and eval batches split over
        ``n_devices`` devices (the train batch into ``grad_accumulation`` micro-batches on
        each); called once, when the config is assembled for the devices at hand."""
        k = self.grad_accumulation
        if self.batch_size % (k * n_devices):
            raise ConfigError(
                f"{self.batch_size} examples do not split into {k} micro-batches on each of "
                f"{n_devices} devices", key="train.batch_size",
                hint=f"use a multiple of {k * n_devices} (train.grad_accumulation x devices)")
        self.eval_batch(n_devices)

    def eval_batch(self, n_devices: int, override: int | None = None) -> int:
        """The evaluation batch size (``override``, e.g. ``evaluate --batch-size``, else
        ``eval_batch_size``, else ``batch_size``), checked to split over the devices."""
        key = "--batch-size" if override is not None else "train.eval_batch_size"
        size = override if override is not None else (self.eval_batch_size or self.batch_size)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"must be an int >= 1, got {shown(size)}", key=key)
        if size % n_devices:
            raise ConfigError(f"{size} does not split evenly over {n_devices} devices", key=key,
                              hint=f"use a multiple of {n_devices}")
        return size


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
            raise ConfigError(f"must be {want.__name__}, got {shown(value)}", key=where)
    if section.get("mode", "max") not in ("min", "max"):
        raise ConfigError(f"must be 'min' or 'max', got {shown(section['mode'])}",
                          key="train.early_stopping.mode")
    if section.get("patience", 0) < 0 or section.get("min_delta", 0.0) < 0:
        raise ConfigError("patience and min_delta must be >= 0", key="train.early_stopping")
    if eval_every is None:
        raise ConfigError("needs periodic evaluations", key="train.early_stopping",
                          hint="set train.eval_every (a multiple of train.log_every)")


def check_top_level(config: Mapping[str, Any]) -> None:
    """Non-string keys anywhere (and a config too deep or too large), unknown or missing
    sections, and a malformed ``[model]``."""
    check_tree(config)
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
            raise ConfigError(f"must be a table, got {shown(config[key])}", key=key)
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
            raise ConfigError(f"must be a table, got {shown(model[key])}", key=f"model.{key}")
    if not model["encoders"]:
        raise ConfigError("needs at least one modality, e.g. [model.encoders.image]",
                          key="model.encoders")


def train_config(config: Mapping[str, Any]) -> TrainConfig:
    section = config.get("train", {})
    if not isinstance(section, dict):
        raise ConfigError(f"must be a table, got {shown(section)}", key="train")
    return TrainConfig(**bind(TrainConfig, section, "train", owner="the [train] section"))
