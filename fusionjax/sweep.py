"""The modality sweep: a trained model's metrics as modalities go missing.

For modalities ``m1 .. mN`` the sweep evaluates ``2N + 1`` conditions: ``all``
(every modality as the data has it), ``-m`` (``m`` absent from every example) for
each modality, and ``only m`` (every other modality absent) for each modality.
Absence is data -- the batch's ``mask/<modality>`` entries -- so every condition
runs through the same compiled evaluation step: the sweep compiles once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from fusionjax.errors import ConfigError
from fusionjax.training.loop import evaluate_split


class Condition(NamedTuple):
    name: str  # "all", "-image", "only image"
    drop: tuple[str, ...]  # the modalities marked absent


class SweepRow(NamedTuple):
    condition: Condition
    metrics: dict[str, float]
    examples: int  # examples scored (an example left with no modality is not)


def sweep_conditions(modalities: Sequence[str]) -> list[Condition]:
    """``all``, then ``-m`` for each modality, then ``only m`` for each modality."""
    if len(modalities) < 2:
        raise ConfigError(f"a sweep needs two or more modalities; the model has "
                          f"{len(modalities)} ({', '.join(modalities)})")
    return ([Condition("all", ())]
            + [Condition(f"-{m}", (m,)) for m in modalities]
            + [Condition(f"only {m}", tuple(o for o in modalities if o != m)) for m in modalities])


def sweep(steps, state, assembly, split: str, batch_size: int, mesh) -> list[SweepRow]:
    """Evaluate ``split`` under every condition of :func:`sweep_conditions`."""
    rows = []
    for condition in sweep_conditions(tuple(assembly.encoders)):
        result = evaluate_split(steps, state, assembly, split, batch_size, mesh, drop=condition.drop)
        rows.append(SweepRow(condition, result.metrics, result.examples))
    return rows
