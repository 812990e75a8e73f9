"""``data.augment`` -> an :class:`Augmenter`, and the test-time corruptions of
``fusionjax evaluate --corrupt``.

The section maps each modality to the augmentations applied to it, in order, each a
table with the registered name in ``type`` and the augmentation's constructor settings::

    [data.augment]
    image = [{type = "affine", max_shift = 2, max_rotate = 10}, {type = "invert", p = 0.5}]
    audio = [{type = "noise", snr_db = [10, 30]}, {type = "gain", db = [-6, 6]}]

Each entry is resolved in the registry and bound to its constructor like any component
(an unknown name or parameter is a :class:`~fusionjax.errors.ConfigError` with a
did-you-mean at ``data.augment.image[0]...``); the augmentation must apply to the
modality's input (``applies_to``: an image is float ``[H, W, C]``, audio float
``[samples]`` with a ``sample_rate``, text int ids with a ``vocab_size``), and a parameter
named like a key of the modality's spec metadata is defaulted from it.

:meth:`Augmenter.__call__` alters one example (a ``{key: array}`` dict, no batch axis):
the data pipeline calls it on every training example with a generator seeded by the
train seed, the epoch and the example's index.  Every augmentation draws from its own
generator, derived from that one, the modality's name and its place in the modality's
list: adding an augmentation to one modality never changes what another draws.

A corruption is an augmentation at the settings its :meth:`Augmentation.corruption`
gives for a severity in ``(0, 1]``, applied to every evaluated example::

    corruptions(["audio=noise:0.5", "image=cutout:1"], dataset)   # -> Augmenter
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusionjax.config.validation import as_config_value, bind, signature_params, with_defaults
from fusionjax.errors import ComponentError, ConfigError, DataError, capped, did_you_mean, shown
from fusionjax.interfaces import Augmentation, Dataset, FieldSpec, mask_key
from fusionjax.registry import ComponentSpec, Registry

INPUT_KINDS = ("image", "audio", "text")
SEVERITIES = (0.25, 0.5, 1.0)  # of each corruption in a corruption sweep
CORRUPT_KEY = "--corrupt"  # where a bad corruption string is reported
CORRUPT_FORM = "MODALITY=NAME:SEVERITY"
CORRUPT_EXAMPLE = "e.g. --corrupt audio=noise:0.5 (severity in (0, 1]; 1 is the strongest)"


def input_kind(spec: FieldSpec) -> str | None:
    """What an augmentation sees a modality as: ``"image"`` (float ``[H, W, C]``),
    ``"audio"`` (float ``[samples]`` with a ``sample_rate``), ``"text"`` (int ``[length]``
    with a ``vocab_size``), or None (no bundled kind)."""
    dtype, meta, rank = np.dtype(spec.dtype), spec.metadata or {}, len(spec.shape)
    if np.issubdtype(dtype, np.floating):
        if rank == 3:
            return "image"
        if rank == 1 and "sample_rate" in meta:
            return "audio"
    if np.issubdtype(dtype, np.integer) and rank == 1 and "vocab_size" in meta:
        return "text"
    return None


def has_corruption(cls: type) -> bool:
    """Whether augmentation class ``cls`` defines its own :meth:`Augmentation.corruption`."""
    own = getattr(getattr(cls, "corruption", None), "__func__", None)
    return own is not None and own is not Augmentation.corruption.__func__


@dataclass(frozen=True)
class Step:
    """One configured augmentation: where it is configured, what it is, how it was built."""

    key: str  # e.g. "data.augment.image[0]"
    spec: ComponentSpec
    settings: Mapping[str, Any]  # the constructor's keyword arguments, defaults filled in
    augmentation: Augmentation

    def resolved(self) -> dict[str, Any]:
        return {"type": self.spec.qualified_name,
                **{k: as_config_value(v) for k, v in self.settings.items()}}


class Augmenter:
    """Each modality's chain of :class:`Step` s, applied to one example at a time.

    ``augmenter(example, rng)`` returns a new dict: each configured modality's array
    replaced by its augmented copy where ``example["mask/<modality>"]`` (if any) is true,
    every other entry as it was; the input arrays are never written to.
    """

    def __init__(self, chains: Mapping[str, Sequence[Step]]):
        self.chains = {m: tuple(steps) for m, steps in chains.items() if steps}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.chains)

    def __repr__(self) -> str:
        inner = "; ".join(f"{m}: {', '.join(s.spec.name for s in steps)}"
                          for m, steps in self.chains.items())
        return f"Augmenter({inner})"

    @classmethod
    def from_config(cls, section: Any, dataset: Dataset, registry: Registry | None = None, *,
                    key: str = "data.augment") -> Augmenter | None:
        """The augmenter a ``data.augment`` section describes for ``dataset``'s modalities;
        None for a missing or empty section (nothing to do)."""
        if section is None or section == {}:
            return None
        if not isinstance(section, Mapping):
            raise ConfigError(f"must be a table of modality -> list of augmentations, got "
                              f"{shown(section)}", key=key, hint=_EXAMPLE)
        registry = registry or _registry()
        chains: dict[str, list[Step]] = {}
        for modality, entries in section.items():
            field = _field(dataset, modality, f"{key}.{modality}")
            if not isinstance(entries, list | tuple):
                raise ConfigError(f"must be a list of augmentations, got {shown(entries)}",
                                  key=f"{key}.{modality}",
                                  hint=f'e.g. {modality} = [{{type = "<augmentation>"}}]')
            chains[modality] = []
            for i, entry in enumerate(entries):
                where = f"{key}.{modality}[{i}]"
                if not isinstance(entry, Mapping):
                    raise ConfigError(f"must be a table with a 'type' key, got {shown(entry)}",
                                      key=where, hint=f'e.g. {{type = "<augmentation>", ...}}; '
                                      f"augmentations: {_names(registry)}")
                name = entry.get("type")
                if not isinstance(name, str) or len(name) > 200:
                    got = "" if name is None else f", got {shown(name)}"
                    raise ConfigError(f'needs `type = "<augmentation name>"`{got}',
                                      key=f"{where}.type", hint=f"augmentations: {_names(registry)}")
                settings = {k: v for k, v in entry.items() if k != "type"}
                chains[modality].append(
                    _step(registry, name, settings, modality, field, where, f"{where}.type"))
        augmenter = cls(chains)
        return augmenter if augmenter.chains else None

    def resolved(self) -> dict[str, list[dict[str, Any]]]:
        """The section as config values, every default filled in (for the run's config)."""
        return {m: [step.resolved() for step in steps] for m, steps in self.chains.items()}

    def __call__(self, example: Mapping[str, np.ndarray], rng: np.random.Generator
                 ) -> dict[str, np.ndarray]:
        out = dict(example)
        # one draw, whatever is configured: every augmentation's own generator comes from it
        base = int(rng.integers(0, 2**63))
        for modality, steps in self.chains.items():
            if modality not in example or not bool(np.asarray(example.get(mask_key(modality), True))):
                continue
            x = np.asarray(example[modality])
            for i, step in enumerate(steps):
                own = np.random.default_rng([base, zlib.crc32(modality.encode()), i])
                y = np.asarray(step.augmentation(x, own))
                if y.shape != x.shape or y.dtype != x.dtype:
                    raise DataError(
                        f"{step.key}: augmentation {step.spec.describe()} turned a {x.dtype} "
                        f"{list(x.shape)} {modality} into {y.dtype} {list(y.shape)}; an augmentation "
                        "keeps its input's shape and dtype (a bug in the plugin)")
                x = y
            out[modality] = x
        return out


def corruptions(specs: Sequence[str], dataset: Dataset, registry: Registry | None = None, *,
                modalities: Sequence[str] | None = None) -> Augmenter:
    """The augmenter of ``specs``, each ``MODALITY=NAME:SEVERITY`` (``audio=noise:0.5``):
    augmentation ``NAME`` with the settings its :meth:`~Augmentation.corruption` gives for
    ``SEVERITY`` in ``(0, 1]``, applied to ``MODALITY`` (one of ``modalities``, default:
    the data set's); several for one modality apply in the order given.  Every mistake is a
    :class:`ConfigError` at ``--corrupt``."""
    registry = registry or _registry()
    chains: dict[str, list[Step]] = {}
    for text in specs:
        modality, name, severity = _parse(text)
        field = _field(dataset, modality, CORRUPT_KEY, what=f"{text!r}: ", modalities=modalities)
        _, cls = _load(registry, name, CORRUPT_KEY, what=f"{text!r}: ")
        if not has_corruption(cls):
            raise ConfigError(f"{text!r}: augmentation {name!r} defines no corruption severity",
                              key=CORRUPT_KEY, hint="corruptions for this modality: "
                              + (", ".join(applicable_corruptions(field, registry)) or "none"))
        try:
            settings = dict(cls.corruption(severity))
        except ConfigError as e:
            raise ConfigError(f"{text!r}: {e.message}", key=CORRUPT_KEY, hint=e.hint) from None
        chains.setdefault(modality, []).append(
            _step(registry, name, settings, modality, field, CORRUPT_KEY, CORRUPT_KEY,
                  what=f"{text!r}: ", owner=f"the corruption {text!r}"))
    return Augmenter(chains)


def applicable_corruptions(field: FieldSpec, registry: Registry | None = None) -> list[str]:
    """The names of the registered augmentations with a corruption that apply to inputs
    like ``field`` (short names where they are unambiguous), in registry order."""
    kind = input_kind(field)
    return _applicable(registry or _registry(), kind, corruption=True) if kind else []


# -- building --------------------------------------------------------------------------------

_EXAMPLE = ('e.g. [data.augment] with image = [{type = "affine", max_shift = 2}] and '
            'audio = [{type = "noise", snr_db = [10, 30]}]')


def _registry() -> Registry:
    from fusionjax.plugins import default_registry

    return default_registry()


def _names(registry: Registry) -> str:
    return ", ".join(registry.names("augmentation")) or "none (is a plugin missing or disabled?)"


def _field(dataset: Dataset, modality: Any, key: str, *, what: str = "",
           modalities: Sequence[str] | None = None) -> FieldSpec:
    """``modality``'s spec, if it is one of ``modalities`` (default: the data set's)."""
    whose = "the data set" if modalities is None else "the model"
    modalities = tuple(dataset.modalities if modalities is None else modalities)
    if modality not in modalities:
        raise ConfigError(f"{what}{whose} has no modality {shown(modality)}"
                          f"{did_you_mean(modality, modalities)}", key=key,
                          hint=f"its modalities are: {', '.join(modalities)}")
    return dataset.spec[modality]


def _load(registry: Registry, name: str, key: str, *, what: str = "") -> tuple[ComponentSpec, type]:
    try:
        spec = registry.resolve("augmentation", name)
        cls = spec.load()
    except ComponentError as e:
        raise ConfigError(f"{what}{e}", key=key) from None
    if not (isinstance(cls, type) and issubclass(cls, Augmentation)):
        raise ConfigError(f"{what}{spec.describe()} is registered as an augmentation but "
                          f"{getattr(cls, '__qualname__', cls)!r} does not subclass "
                          "fusionjax.interfaces.Augmentation", key=key)
    return spec, cls


def _applicable(registry: Registry, kind: str, *, corruption: bool = False) -> list[str]:
    """The registered augmentations whose ``applies_to`` holds ``kind`` (with a corruption,
    if ``corruption``): short names where they are unambiguous, in registry order."""
    specs = [s for s in registry if s.kind == "augmentation"]
    out = []
    for spec in specs:
        try:
            cls = spec.load()
        except ComponentError:  # a broken plugin's component: `plugins list` reports it
            continue
        if kind in getattr(cls, "applies_to", ()) and (has_corruption(cls) or not corruption):
            short = sum(s.name == spec.name for s in specs) == 1
            out.append(spec.name if short else spec.qualified_name)
    return out


def _step(registry: Registry, name: str, settings: dict[str, Any], modality: str,
          field: FieldSpec, key: str, type_key: str, *, what: str = "", owner: str | None = None
          ) -> Step:
    """Augmentation ``name`` bound to ``settings`` and built for ``modality`` (``field``)."""
    spec, cls = _load(registry, name, type_key, what=what)
    owner = owner or f"augmentation {spec.describe()}"
    kind, applies = input_kind(field), tuple(getattr(cls, "applies_to", ()))
    if kind not in applies:
        seen = f"{'an' if kind in ('image', 'audio') else 'a'} {kind} input" if kind else \
            "not an image, audio or text input"
        fits = _applicable(registry, kind) if kind else []
        raise ConfigError(
            f"{what}augmentation {spec.name!r} applies to {' and '.join(applies) or 'no'} inputs, "
            f"but modality {modality!r} ({field.dtype} {list(field.shape)}) is {seen}",
            key=type_key, hint=(f"augmentations for {kind} inputs: {', '.join(fits) or 'none'}"
                                if kind else "augment it in the data set itself"))
    params, _ = signature_params(cls)
    defaults = {meta: (value, f"the {modality} {meta} of the data set")
                for meta, value in (field.metadata or {}).items()}
    settings = with_defaults(settings, defaults, params, key, owner=owner, what=what)
    kwargs = bind(cls, settings, key, owner=owner)
    kwargs = {name: kwargs[name] for name in params if name in kwargs}  # the signature's order
    try:
        augmentation = cls(**kwargs)
    except ConfigError as e:
        e = e.under(key)
        raise ConfigError(f"{what}{e.message}", key=e.key, hint=e.hint) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what}{type(e).__name__}: {capped(str(e), 1000)} ({owner})",
                          key=key) from None
    return Step(key, spec, kwargs, augmentation)


def _parse(text: Any) -> tuple[str, str, float]:
    if not isinstance(text, str):
        raise ConfigError(f"expected {CORRUPT_FORM}, got {shown(text)}", key=CORRUPT_KEY,
                          hint=CORRUPT_EXAMPLE)
    modality, eq, rest = text.partition("=")
    name, colon, severity_text = rest.rpartition(":")
    if not (eq and colon and modality and name and severity_text):
        raise ConfigError(f"{text!r}: expected {CORRUPT_FORM}", key=CORRUPT_KEY, hint=CORRUPT_EXAMPLE)
    try:
        severity = float(severity_text)
    except ValueError:
        severity = math.nan
    if not 0.0 < severity <= 1.0:  # (NaN fails too)
        raise ConfigError(f"{text!r}: the severity must be a number in (0, 1], got "
                          f"{severity_text!r}", key=CORRUPT_KEY, hint=CORRUPT_EXAMPLE)
    return modality, name, severity
