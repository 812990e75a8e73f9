"""Evaluation: a model's metrics over a whole split, with modalities taken away at will,
and the modality sweep.

The same functions serve ``train``'s periodic and final evaluations, ``fusionjax
evaluate`` and the Python API (:meth:`fusionjax.rundir.Run.evaluate`).  Metrics add up
exactly over batches and devices: the compiled eval step returns each batch's additive
statistics (:meth:`Head.metric_stats`), their totals become metrics on the host
(:meth:`Head.finalize_metrics`).  The last short batch is padded with weight-0 rows.

Absence is data (the batch's ``mask/<modality>`` entries), so every condition of a
sweep runs through the same compiled step: it compiles once.  For modalities
``m1 .. mN`` the sweep evaluates ``2N + 1`` conditions: ``all`` (every modality as the
data has it), ``-m`` (``m`` absent from every example) for each modality, and
``only m`` (every other modality absent) for each modality.

The corruption sweep (:func:`corruption_sweep`) measures robustness instead: the clean
metrics, then each modality under each registered corruption that applies to it
(:func:`fusionjax.augmentation.applicable_corruptions`) at each of :data:`SEVERITIES`, every
test example corrupted with a generator seeded by its index (every evaluation of a
corruption sees the same data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.augmentation import SEVERITIES, applicable_corruptions, corruptions
from fusionjax.errors import ConfigError, did_you_mean
from fusionjax.interfaces import LABEL, mask_key
from fusionjax.parallel import shard_batch

if TYPE_CHECKING:
    from fusionjax.assembly import Assembly
    from fusionjax.registry import Registry
    from fusionjax.rundir import Run
    from fusionjax.training.step import Steps, TrainState


class Evaluation(NamedTuple):
    metrics: dict[str, float]
    examples: int  # examples scored: those left with at least one present modality


class Condition(NamedTuple):
    name: str  # "all", "-image", "only image"
    drop: tuple[str, ...]  # the modalities marked absent


class SweepRow(NamedTuple):
    condition: Condition
    metrics: dict[str, float]
    examples: int  # examples scored (an example left with no modality is not)


class CorruptionRow(NamedTuple):
    modality: str | None  # the corrupted modality; None: the clean evaluation
    corruption: str | None  # the augmentation's name; None: clean
    severity: float  # in (0, 1]; 0.0: clean
    metrics: dict[str, float]
    examples: int


# one example {key: array} and its generator -> the altered example (an Augmenter)
Augment = Callable[[dict, np.random.Generator], dict]


def evaluate(steps: Steps, state: TrainState, assembly: Assembly, split: str, batch_size: int,
             mesh, *, drop: Sequence[str] = (), augment: Augment | None = None) -> Evaluation:
    """Metrics over the whole of ``split``.

    ``drop`` names modalities to treat as absent in every example (their masks turn
    False; the model zeroes their inputs).  Every batch carries a mask for every
    modality (all True where the data set has none), so whatever ``drop`` is, the
    batches have one structure and ``steps.eval`` compiles once.  An example left with
    no modality at all (it lacked the ones that ``drop`` keeps) is not scored: it gets
    weight 0, and its own masks back so that the forward pass sees a valid input.

    ``augment`` (e.g. :func:`fusionjax.augmentation.corruptions`) alters every example
    before it is batched, with ``np.random.default_rng([0, 0, index])``."""
    modalities = tuple(assembly.encoders)
    check_modalities(drop, modalities)
    drop = frozenset(drop)
    if drop >= set(modalities):
        raise ConfigError("dropping every modality leaves the model nothing to read",
                          hint=f"keep at least one of: {', '.join(modalities)}")
    totals, scored = [], 0
    from fusionjax.data.pipeline import one_pass

    for batch in one_pass(assembly.dataset, split, batch_size, seed=0, shuffle=False,
                          drop_remainder=False, augment=augment):
        n = len(batch[LABEL])
        batch = dict(batch)
        weights = np.zeros(batch_size, np.float32)
        weights[:n] = 1.0
        if n < batch_size:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - n, 0)])
                     for k, v in batch.items()}
        given = {m: np.asarray(batch.get(mask_key(m), np.ones(batch_size, bool)), bool)
                 for m in modalities}
        kept = {m: given[m] & (m not in drop) for m in modalities}
        anything = np.any([kept[m] for m in modalities], axis=0)
        for m in modalities:
            batch[mask_key(m)] = np.where(anything, kept[m], given[m])
        weights *= anything
        scored += int(weights.sum())
        totals.append(steps.eval(state, shard_batch(batch, mesh), jnp.asarray(weights)))
    metrics = type(steps.merge(state).head).finalize_metrics(sum_stats(jax.device_get(totals)))
    return Evaluation(metrics, scored)


def sweep_conditions(modalities: Sequence[str]) -> list[Condition]:
    """``all``, then ``-m`` for each modality, then ``only m`` for each modality."""
    if len(modalities) < 2:
        raise ConfigError(f"a sweep needs two or more modalities; the model has "
                          f"{len(modalities)} ({', '.join(modalities)})")
    return ([Condition("all", ())]
            + [Condition(f"-{m}", (m,)) for m in modalities]
            + [Condition(f"only {m}", tuple(o for o in modalities if o != m)) for m in modalities])


def sweep(steps: Steps, state: TrainState, assembly: Assembly, split: str, batch_size: int,
          mesh) -> list[SweepRow]:
    """Evaluate ``split`` under every condition of :func:`sweep_conditions`."""
    rows = []
    for condition in sweep_conditions(tuple(assembly.encoders)):
        result = evaluate(steps, state, assembly, split, batch_size, mesh, drop=condition.drop)
        rows.append(SweepRow(condition, result.metrics, result.examples))
    return rows


def corruption_sweep(steps: Steps, state: TrainState, assembly: Assembly, split: str,
                     batch_size: int, mesh, *, severities: Sequence[float] = SEVERITIES,
                     registry: Registry | None = None) -> list[CorruptionRow]:
    """The clean evaluation of ``split``, then one per modality of the model, corruption
    that applies to it and severity, in that order."""
    clean = evaluate(steps, state, assembly, split, batch_size, mesh)
    rows = [CorruptionRow(None, None, 0.0, clean.metrics, clean.examples)]
    for m in assembly.encoders:
        for name in applicable_corruptions(assembly.dataset.spec[m], registry):
            for severity in severities:
                augment = corruptions([f"{m}={name}:{severity}"], assembly.dataset, registry)
                result = evaluate(steps, state, assembly, split, batch_size, mesh, augment=augment)
                rows.append(CorruptionRow(m, name, float(severity), result.metrics, result.examples))
    return rows


# -- a finished run ------------------------------------------------------------------------

def evaluate_run(run: Run, split: str | None = None, *, batch_size: int | None = None,
                 drop: Sequence[str] = (), augment: Augment | None = None, mesh=None) -> Evaluation:
    """:func:`evaluate` on a loaded run (see :func:`fusionjax.rundir.load_run`): ``split``
    defaults to its ``train.eval_split``, ``batch_size`` to its evaluation batch size."""
    steps, split, batch_size, mesh = _prepare(run, split, batch_size, mesh)
    return evaluate(steps, steps.init, run.assembly, split, batch_size, mesh, drop=tuple(drop),
                    augment=augment)


def sweep_run(run: Run, split: str | None = None, *, batch_size: int | None = None,
              mesh=None) -> list[SweepRow]:
    """:func:`sweep` on a loaded run."""
    steps, split, batch_size, mesh = _prepare(run, split, batch_size, mesh)
    return sweep(steps, steps.init, run.assembly, split, batch_size, mesh)


def corruption_sweep_run(run: Run, split: str | None = None, *, batch_size: int | None = None,
                         severities: Sequence[float] = SEVERITIES, mesh=None) -> list[CorruptionRow]:
    """:func:`corruption_sweep` on a loaded run."""
    steps, split, batch_size, mesh = _prepare(run, split, batch_size, mesh)
    return corruption_sweep(steps, steps.init, run.assembly, split, batch_size, mesh,
                            severities=severities)


def _prepare(run: Run, split: str | None, batch_size: int | None, mesh):
    from fusionjax.parallel import data_mesh
    from fusionjax.training.step import make_steps

    cfg = run.assembly.train
    split = split or cfg.eval_split
    run.assembly.dataset.check_split(split, key="split", name=run.assembly.data_part.spec.qualified_name)
    mesh = mesh or data_mesh()
    batch_size = cfg.eval_batch(mesh.devices.size, batch_size)
    steps = make_steps(run.model, run.assembly.optimizer, mesh, cfg)
    return steps, split, batch_size, mesh


# -- helpers ---------------------------------------------------------------------------------

def check_modalities(names: Iterable[str], modalities: Sequence[str]) -> None:
    """A :class:`ConfigError` (with a did-you-mean) for a name that is no modality."""
    for name in names:
        if name not in modalities:
            raise ConfigError(f"the model has no modality {name!r}{did_you_mean(name, modalities)}",
                              hint=f"its modalities are: {', '.join(modalities)}")


def absent_summary(absent: Mapping[str, Sequence[str]]) -> str:
    """``"image 2, caption 1"``: how many examples lack each modality."""
    return ", ".join(f"{m} {len(v)}" for m, v in absent.items() if v)


def sum_stats(stats: list[dict]) -> dict[str, np.ndarray]:
    """Element-wise totals of additive statistics (scalars or per-class vectors)."""
    return {k: np.sum([np.asarray(s[k]) for s in stats], axis=0) for k in stats[0]} if stats else {}
