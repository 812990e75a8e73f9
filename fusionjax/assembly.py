"""Config -> model and data set, checked completely before any array is allocated.

:func:`assemble` resolves every ``type`` in the registry, binds each section to
its component's constructor (:func:`fusionjax.config.validation.bind`), then
builds the whole model *abstractly* with :func:`flax.nnx.eval_shape` and runs one
abstract forward pass with :func:`jax.eval_shape`.  Every mistake (an unknown
name, key or type, a width or shape that does not fit) surfaces here as a
:class:`~fusionjax.errors.ConfigError` naming its key path and its component.
Only :meth:`Assembly.build` allocates parameters.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import numpy as np
import optax
from flax import nnx

from fusionjax import fast_paths, transfer
from fusionjax.config.schema import TrainConfig, check_top_level, train_config
from fusionjax.config.validation import as_config_value, bind, signature_params, with_defaults
from fusionjax.data.pipeline import PipelineSettings
from fusionjax.errors import ComponentError, ConfigError, DataError, capped, did_you_mean, shown
from fusionjax.interfaces import LABEL, Dataset, Encoder, Fusion, Head
from fusionjax.model import FusionModel
from fusionjax.plugins import default_registry
from fusionjax.registry import ComponentSpec, Registry
from fusionjax.training.optim import make_optimizer, per_component
from fusionjax.transfer import InitFrom

_BASES = {"encoder": Encoder, "fusion": Fusion, "head": Head, "dataset": Dataset}


@dataclass(frozen=True)
class Training:
    """The keys of a model component's section that fusionjax reads itself (besides
    ``type``): ``trainable = false`` freezes the component (its parameters never change
    and it has no optimiser state); ``lr_scale`` multiplies its learning rate."""

    trainable: bool = True
    lr_scale: float = 1.0
    init_from: InitFrom | None = None  # its initial parameters: a run, a checkpoint, a file

    KEYS: ClassVar[tuple[str, ...]] = ("trainable", "lr_scale", "init_from")

    @classmethod
    def from_section(cls, section: Mapping[str, Any], key: str) -> Training:
        trainable, lr_scale = section.get("trainable", True), section.get("lr_scale", 1.0)
        if not isinstance(trainable, bool):
            raise ConfigError(f"must be true or false, got {shown(trainable)}", key=f"{key}.trainable")
        if isinstance(lr_scale, bool) or not isinstance(lr_scale, int | float) \
                or not math.isfinite(lr_scale) or lr_scale < 0:
            raise ConfigError(f"must be a finite number >= 0, got {shown(lr_scale)}", key=f"{key}.lr_scale",
                              hint="the factor on the learning rate of this component; "
                                   "trainable = false freezes it")
        init = section.get("init_from")
        return cls(trainable, float(lr_scale), None if init is None else InitFrom.from_config(init, key))

    def resolved(self) -> dict[str, Any]:
        """The keys to record in the resolved config (only those not at their default)."""
        return {**({"trainable": False} if not self.trainable else {}),
                **({"lr_scale": self.lr_scale} if self.lr_scale != 1.0 else {}),
                **({"init_from": self.init_from.resolved()} if self.init_from else {})}


@dataclass(frozen=True)
class Part:
    """One configured component: where it sits in the config and how to build it."""

    key: str  # config key path, e.g. "model.encoders.audio"
    spec: ComponentSpec
    kwargs: Mapping[str, Any]
    injected: frozenset[str] = frozenset()  # kwargs fusionjax supplied (widths, shapes)
    training: Training = field(default_factory=Training)  # how the optimiser treats it

    def resolved(self) -> dict[str, Any]:
        """This part's config section with every default filled in."""
        settings = {k: as_config_value(v) for k, v in self.kwargs.items() if k not in self.injected}
        return {"type": self.spec.qualified_name, **self.training.resolved(), **settings}

    @property
    def owner(self) -> str:
        return f"{self.spec.kind} {self.spec.describe()}"

    def build(self, seed: int) -> Any:
        """The component, its parameters drawn from ``seed`` and its key path only
        (so adding a modality never changes another component's initialisation)."""
        kwargs = dict(self.kwargs)
        if self.spec.kind != "dataset":  # data sets are host-side NumPy: no rngs
            key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(self.key.encode()))
            kwargs["rngs"] = nnx.Rngs(key)
        try:
            return self.spec.load()(**kwargs)
        except ConfigError as e:
            raise e.under(self.key) from None
        except (ValueError, TypeError, OSError) as e:  # OSError: a path setting (too long, ...)
            raise ConfigError(f"{type(e).__name__}: {capped(str(e), 1000)} ({self.owner})",
                              key=self.key) from None


@dataclass(frozen=True)
class Assembly:
    """A validated config: the data set, the model's parts, the train settings."""

    config: dict
    dataset: Dataset
    data_part: Part
    encoders: Mapping[str, Part]
    fusion: Part | None  # None when the head reads the embeddings directly
    head: Part
    train: TrainConfig
    optimizer: optax.GradientTransformation
    # update number (0-based) -> learning rate; None for an optimiser without one
    learning_rate: Callable[[Any], Any] | None = None
    devices: int = 1  # the device count the batch sizes were checked against
    pipeline: PipelineSettings = PipelineSettings()  # data.workers, data.augment
    augmenter: Any = None  # the training examples' augmentations (fusionjax.augmentation)

    def learning_rate_at(self, update: int) -> float | None:
        """The learning rate of optimiser update ``update`` (0-based: the first train step
        applies ``learning_rate_at(0)``; after step ``n`` of the loop, the last update used
        ``learning_rate_at(n - 1)``), from ``[train.optimizer]`` and its schedule."""
        return None if self.learning_rate is None else float(self.learning_rate(update))

    def build(self, seed: int | None = None, *, init_from: bool = True) -> FusionModel:
        """The model with real parameters (``seed`` defaults to ``train.seed``), those of a
        component with ``init_from`` taken from its source (a run or a weight file;
        ``init_from=False``: the random initialisation only, e.g. for an abstract model or
        one whose parameters are restored next)."""
        seed = self.train.seed if seed is None else seed
        model = FusionModel(
            {m: p.build(seed) for m, p in self.encoders.items()},
            self.fusion.build(seed) if self.fusion is not None else None,
            self.head.build(seed),
        )
        if init_from:
            for part, module in self.components(model):
                if part.training.init_from is not None:
                    transfer.apply(part.training.init_from, part.key, module, part.owner)
        return model

    def components(self, model: FusionModel) -> list[tuple[Part, nnx.Module]]:
        """Each model part in config order (encoders, fusion, head) with its module in
        ``model`` (built or abstract)."""
        modules = [model.encoders[m] for m in self.encoders]
        modules += [model.fusion] if self.fusion is not None else []
        return list(zip(self.parts, [*modules, model.head]))

    @property
    def parts(self) -> list[Part]:
        """Every model part in config order: encoders, fusion (if any), head."""
        fusion = [self.fusion] if self.fusion is not None else []
        return [*self.encoders.values(), *fusion, self.head]

    def resolved_config(self) -> dict[str, Any]:
        """The config after overrides and defaults, with qualified component names."""
        model = {"encoders": {m: p.resolved() for m, p in self.encoders.items()}}
        if self.fusion is not None:
            model["fusion"] = self.fusion.resolved()
        model["head"] = self.head.resolved()
        return {
            "model": model,
            "data": {**self.data_part.resolved(), **self.dataset.resolved_settings(),
                     "workers": self.pipeline.workers,
                     **({"augment": self.augmenter.resolved()} if self.augmenter else {})},
            "train": dataclasses.asdict(self.train),
        }

    def abstract_model(self) -> FusionModel:
        """The model with ``ShapeDtypeStruct`` parameters (nothing allocated)."""
        return nnx.eval_shape(lambda: self.build(0, init_from=False))

    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        spec = self.dataset.spec
        return {k: spec[k].batched(batch_size) for k in (*self.encoders, LABEL) if k in spec}

    def param_counts(self) -> dict[str, int]:
        """Trainable parameters per component key path."""
        return {p.key: _count(nnx.state(m, nnx.Param)) for p, m in self.components(self.abstract_model())}


def _count(state) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))


def _resolve(registry: Registry, kind: str, section: Any, key: str) -> ComponentSpec:
    if not isinstance(section, dict):
        raise ConfigError(f"must be a table with a 'type' key, got {shown(section)}", key=key,
                          hint=f"e.g. [{key}] with type = \"<{kind} name>\"")
    name = section.get("type")
    if not isinstance(name, str) or len(name) > 200:  # no component is called 200 characters
        got = "" if name is None else f", got {shown(name)}"
        raise ConfigError(
            f"needs `type = \"<{kind} name>\"`{got}", key=f"{key}.type",
            hint=f"available {kind}s: {', '.join(registry.names(kind)) or 'none'}",
        )
    try:
        spec = registry.resolve(kind, name)
    except ComponentError as e:
        raise ConfigError(str(e), key=f"{key}.type") from None
    try:
        target = spec.load()  # a lazy "module:attr" target is imported here
    except ComponentError as e:
        raise ConfigError(str(e), key=f"{key}.type",
                          hint="a bug or a missing dependency of that plugin's package; "
                               "`fusionjax plugins list` shows its status") from None
    base = _BASES[kind]
    if isinstance(target, type) and not issubclass(target, base):
        raise ConfigError(
            f"{spec.describe()} is registered as a {kind} but {target.__qualname__} does not "
            f"subclass fusionjax.{base.__name__}", key=f"{key}.type")
    return spec


def _part(spec: ComponentSpec, section: dict, key: str, injected: dict, defaults: dict) -> Part:
    """Bind ``section`` to ``spec``; ``defaults`` fill parameters the user left out and
    must agree with any value the user set."""
    params, _ = signature_params(spec.load())
    owner = f"{spec.kind} {spec.describe()}"
    own = ("type", *Training.KEYS) if spec.kind != "dataset" else ("type", *PipelineSettings.KEYS)
    training = Training.from_section(section, key) if spec.kind != "dataset" else Training()
    user = with_defaults({k: v for k, v in section.items() if k not in own}, defaults, params, key,
                         owner=owner)
    injected = {k: v for k, v in injected.items() if k in params}
    kwargs = bind(spec.load(), user, key, owner=owner, injected=injected)
    return Part(key, spec, kwargs, frozenset(injected), training)


def _abstract(part: Part, what: str):
    try:
        return nnx.eval_shape(lambda: part.build(0))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a plugin bug, reported with its origin
        raise ConfigError(f"building the {what} failed: {type(e).__name__}: {e} ({part.owner})",
                          key=part.key) from None


def assemble(config: Mapping[str, Any], registry: Registry | None = None, *,
             read_sources: bool = True) -> Assembly:
    """Validate ``config`` and prepare the model and data set; allocates nothing.

    ``read_sources=False``: the ``init_from`` sources are not read or checked -- for a run
    whose parameters come from its own checkpoint (loading a finished run, resuming one),
    which must not depend on a source run or weight file still being there."""
    registry = registry or default_registry()
    config = dict(config)
    check_top_level(config)
    train = train_config(config)
    devices = jax.device_count()
    train.check_devices(devices)
    optimizer = make_optimizer(train.optimizer, steps=train.steps)
    train = dataclasses.replace(train, optimizer=optimizer.section)

    data_spec = _resolve(registry, "dataset", config["data"], "data")
    data_part = _part(data_spec, config["data"], "data", {}, {})
    dataset = data_part.build(train.seed)
    _check_data(dataset, data_spec.qualified_name, train)
    pipeline = PipelineSettings(**{k: v for k, v in config["data"].items() if k in PipelineSettings.KEYS})
    augmenter = _augmenter(pipeline.augment, dataset, registry)
    data_name = data_spec.qualified_name

    model_cfg = config["model"]
    encoders: dict[str, Part] = {}
    widths: dict[str, int] = {}
    token_widths: dict[str, int | None] = {}
    for modality, section in model_cfg["encoders"].items():
        key = f"model.encoders.{modality}"
        if modality not in dataset.modalities:
            raise ConfigError(
                f"data set {data_name!r} has no modality {modality!r}"
                f"{did_you_mean(modality, dataset.modalities)}", key=key,
                hint=f"its modalities are: {', '.join(dataset.modalities)}",
            )
        field = dataset.spec[modality]
        spec = _resolve(registry, "encoder", section, key)
        defaults = {k: (v, f"the {modality} {k} of data set {data_name!r}")
                    for k, v in field.metadata.items()}
        part = _part(spec, section, key, {"input_shape": tuple(field.shape)}, defaults)
        encoders[modality] = part
        abstract = _abstract(part, "encoder")
        widths[modality] = _width(abstract, "out_features", part)
        token_widths[modality] = getattr(abstract, "token_features", None)

    for modality in train.modality_dropout:
        if modality not in encoders:
            raise ConfigError(f"the model has no modality {modality!r}"
                              f"{did_you_mean(modality, encoders)}",
                              key=f"train.modality_dropout.{modality}",
                              hint=f"its modalities are: {', '.join(encoders)}")

    head_spec = _resolve(registry, "head", model_cfg["head"], "model.head")
    reads = getattr(head_spec.load(), "inputs", "fused")  # "fused", "embeddings" or "tokens"
    fusion, fused = None, None
    if reads != "fused":
        what = "embeddings" if reads == "embeddings" else "token sequences"
        if "fusion" in model_cfg:
            raise ConfigError(
                f"head {head_spec.describe()} reads the modalities' {what} directly, so the "
                f"model has no fusion", key="model.fusion", hint="remove the [model.fusion] table")
        if reads == "tokens":
            _check_tokens(encoders, token_widths, f"head {head_spec.describe()}")
    elif "fusion" not in model_cfg:
        raise ConfigError("missing table [model.fusion]", key="model.fusion",
                          hint=f"e.g. type = \"concat\"; fusions: {', '.join(registry.names('fusion'))}")
    else:
        fusion_spec = _resolve(registry, "fusion", model_cfg["fusion"], "model.fusion")
        if getattr(fusion_spec.load(), "uses_tokens", False):
            _check_tokens(encoders, token_widths, f"fusion {fusion_spec.describe()}")
        injected = {"in_features": widths, "token_features": token_widths}
        fusion = _part(fusion_spec, model_cfg["fusion"], "model.fusion", injected, {})
        fused = _width(_abstract(fusion, "fusion"), "out_features", fusion)

    label = dataset.spec.get(LABEL)
    # the label's facts (e.g. a target vocabulary) default the head's parameters of those names
    defaults = {k: (v, f"the label {k} of data set {data_name!r}")
                for k, v in (label.metadata.items() if label is not None else ())}
    if dataset.num_classes is not None:
        defaults["num_classes"] = (dataset.num_classes, f"the class count of data set {data_name!r}")
    in_features = {"fused": fused, "embeddings": dict(widths), "tokens": dict(token_widths)}[reads]
    injected = {"in_features": in_features}
    if label is not None:
        injected["label_shape"] = tuple(label.shape)
    try:
        head = _part(head_spec, model_cfg["head"], "model.head", injected, defaults)
    except ConfigError as e:
        if e.key != "model.head.num_classes" or label is None or dataset.num_classes is not None:
            raise
        hint = ("use a head for those labels, e.g. type = \"regression\" for real values, or set "
                "num_classes if they really are classes")
        if "vocabulary" in label.metadata:
            hint = ("its labels are token sequences (a transcript, a caption): use a sequence head, "
                    "type = \"ctc\" or \"decoder\", without a [model.fusion]")
        raise ConfigError(f"{e.message}; data set {data_name!r} has no classes (its labels: shape "
                          f"{tuple(label.shape)}, {label.dtype})", key=e.key, hint=hint) from None
    if label is not None:
        abstract_head = _abstract(head, "head")  # its own errors already carry their key path
        try:
            abstract_head.check_labels(label)
        except ConfigError as e:
            e = e.under("model.head")
            raise ConfigError(f"{e.message} (labels of data set {data_name!r}: shape "
                              f"{tuple(label.shape)}, {label.dtype})", key=e.key, hint=e.hint) from None

    for part in [*encoders.values(), *([fusion] if fusion else []), head]:
        if read_sources and part.training.init_from is not None:  # it fits, before any compute
            transfer.check_fits(part.training.init_from, part.key, _abstract(part, part.spec.kind),
                                part.owner)
    groups = {_param_prefix(p.key): (p.training.trainable, p.training.lr_scale)
              for p in [*encoders.values(), *([fusion] if fusion else []), head]}
    assembly = Assembly(config, dataset, data_part, encoders, fusion, head, train,
                        per_component(optimizer.transform, groups), optimizer.learning_rate, devices,
                        pipeline, augmenter)
    _check_forward(assembly, widths, fused)
    fast_paths.check()  # FUSIONJAX_FAST_PATHS, now that the components declared theirs
    return assembly


def assemble_dataset(section: Any, registry: Registry | None = None, *,
                     key: str = "data") -> tuple[Dataset, dict[str, Any]]:
    """The data set a ``[data]`` section describes, built as :func:`assemble` builds it
    (and no model), and its resolved config: ``type`` (qualified) and every parameter,
    defaults filled in, without the pipeline's own keys (``workers``, ``augment``)."""
    if not isinstance(section, dict):
        raise ConfigError(f"must be a table, got {shown(section)}", key=key)
    part = _part(_resolve(registry or default_registry(), "dataset", section, key), section, key, {}, {})
    dataset = part.build(0)
    return dataset, {**part.resolved(), **dataset.resolved_settings()}


def _augmenter(section, dataset: Dataset, registry: Registry):
    """The ``data.augment`` section's augmentations, checked against the data set."""
    if not section:
        return None
    from fusionjax.augmentation import Augmenter

    return Augmenter.from_config(section, dataset, registry, key="data.augment")


def _check_tokens(encoders: Mapping[str, Part], token_widths: Mapping[str, int | None],
                 reader: str) -> None:
    """Every encoder exposes a token sequence (``token_features``) for ``reader``."""
    for m, width in token_widths.items():
        if not isinstance(width, int):
            part = encoders[m]
            raise ConfigError(f"{reader} reads token sequences, but {part.owner} exposes none "
                              f"(no token_features)", key=f"{part.key}.type",
                              hint="use an encoder with a token sequence, or a fusion of embeddings")


def _check_data(dataset: Dataset, name: str, train: TrainConfig) -> None:
    """The data set declares its splits, and those the run reads exist and hold at least
    one batch."""
    splits = getattr(dataset, "splits", None)
    if not isinstance(splits, tuple | list) or not all(isinstance(s, str) for s in splits) \
            or "train" not in splits:
        raise ConfigError(f"data set {name!r} declares no splits with 'train' among them (its "
                          f"`splits` is {splits!r}); this is a bug in the plugin", key="data")
    reads = {"train": "data", train.eval_split: "train.eval_split"}
    if train.validation_split is not None:
        reads.setdefault(train.validation_split, "train.validation_split")
    for split, key in reads.items():
        dataset.check_split(split, key=key, name=name)
        try:
            size = dataset.size(split)
        except (DataError, ConfigError) as e:  # unreadable files; a bad size setting
            raise e.under("data") if isinstance(e, ConfigError) else e from None
        if size < 1:
            raise ConfigError(f"split {split!r} of data set {name!r} is empty", key=key)
    if dataset.size("train") < train.batch_size:
        raise ConfigError(f"{train.batch_size} is larger than the {dataset.size('train')} "
                          f"training examples of data set {name!r}", key="train.batch_size")


def _param_prefix(key: str) -> tuple[str, ...]:
    """A part's config key -> where its parameters sit in the model's state:
    ``model.encoders.image`` -> ``("encoders", "image")``, ``model.head`` -> ``("head",)``."""
    return tuple(key.split(".")[1:])


def _width(module: Any, attr: str, part: Part) -> int:
    value = getattr(module, attr, None)
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"component declares no positive int {attr!r} (got {shown(value)}); "
                          f"this is a bug in the plugin ({part.owner})", key=part.key)
    return value


def _check_forward(assembly: Assembly, widths: Mapping[str, int], fused: int | None) -> None:
    """One abstract pass of the model's own forward, loss and metrics: every declared
    width must be the real one, and every failure names the component it is in."""
    batch = assembly.example_batch(2)

    def run(b):
        model = assembly.build(0, init_from=False)
        for m, enc in model.encoders.items():  # each encoder alone, to name the one that fails
            part = assembly.encoders[m]
            try:
                out = enc(b[m])
            except Exception as e:  # noqa: BLE001 - report which encoder and input
                raise ConfigError(
                    f"cannot encode {m} of shape {b[m].shape} {b[m].dtype}: "
                    f"{type(e).__name__}: {e} ({part.owner})", key=part.key) from None
            _expect(out.shape, (2, widths[m]), part, "its output")
            if model.head.inputs == "tokens":
                values = enc.tokens(b[m]).values
                _expect(values.shape[::2], (2, enc.token_features), part, "its token sequence",
                        declared="[B, T, token_features]")
        if model.fusion is not None:
            _expect(model.features(b).shape, (2, fused), assembly.fusion, "its output")
        predictions = model(b)
        if LABEL in b:
            try:
                model.head.loss(predictions, b[LABEL])
                model.head.metric_stats(predictions, b[LABEL], jax.numpy.ones((2,)))
            except Exception as e:  # noqa: BLE001
                raise ConfigError(
                    f"cannot score the data set's labels {b[LABEL].shape[1:]} {b[LABEL].dtype}: "
                    f"{type(e).__name__}: {e} ({assembly.head.owner})", key=assembly.head.key,
                    hint="the head and the data set's task disagree (classes, multi-label, "
                         "regression targets?)") from None
        return predictions

    try:
        jax.eval_shape(run, batch)
    except (ConfigError, DataError):
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"the model cannot run on the data set's shapes: {type(e).__name__}: {e}",
                          key="model") from None


def _expect(shape: tuple, expected: tuple, part: Part, what: str, *,
            declared: str = "[B, out_features]") -> None:
    if tuple(shape) != expected:
        raise ConfigError(f"{what} has shape {tuple(shape)} but it declares {expected} "
                          f"({declared}); this is a bug in the plugin ({part.owner})",
                          key=part.key)


