"""The compiled train and eval steps.

The model is split once into a static graph definition and array state
(``nnx.split``); the steps are pure functions of that state under ``jax.jit``,
merging the model back inside the trace.  This keeps NNX's Python-side graph
traversal out of the per-step cost.  The batch arrives split over the mesh's
data axis; the state is replicated; XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from fusionjax.interfaces import LABEL, Batch
from fusionjax.model import FusionModel
from fusionjax.parallel import batch_sharding, replicated
from fusionjax.train.modality_dropout import drop_modalities, dropout_key


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree of arrays)."""

    step: jax.Array
    params: Any  # nnx.State of the nnx.Param variables
    rest: Any  # every other variable (e.g. RNG counters, batch statistics)
    opt_state: Any


class Steps(NamedTuple):
    graphdef: Any
    init: TrainState
    train: Any  # (TrainState, Batch) -> (TrainState, metric stats)
    eval: Any  # (TrainState, Batch, weights) -> metric stats
    merge: Any  # TrainState -> FusionModel


def make_steps(model: FusionModel, tx: optax.GradientTransformation, mesh: Mesh, *,
               modality_dropout: Mapping[str, float] | None = None, seed: int = 0) -> Steps:
    """``modality_dropout`` ({modality: probability}) hides modalities of random
    training examples, drawn from ``seed`` and the step number."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(jnp.zeros((), jnp.int32), params, rest, tx.init(params))
    state = jax.device_put(state, replicated(mesh))
    state_sharding, data = replicated(mesh), batch_sharding(mesh)

    def forward(params, rest, batch):
        model = nnx.merge(graphdef, params, rest)
        predictions = model(batch)
        return model.head.loss(predictions, batch[LABEL]), (predictions, model)

    modalities, rates = model.modalities, dict(modality_dropout or {})

    def train_step(state: TrainState, batch: Batch):
        if any(rates.values()):
            key = jax.random.fold_in(dropout_key(seed), state.step)
            batch = drop_modalities(batch, rates, modalities, key)
        grad_fn = jax.value_and_grad(forward, has_aux=True)
        (loss, (predictions, model)), grads = grad_fn(state.params, state.rest, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        weights = jnp.ones(batch[LABEL].shape[:1], jnp.float32)
        stats = model.head.metric_stats(predictions, batch[LABEL], weights)
        return TrainState(state.step + 1, params, rest, opt_state), stats

    def eval_step(state: TrainState, batch: Batch, weights: jax.Array):
        model = nnx.merge(graphdef, state.params, state.rest)
        return model.head.metric_stats(model(batch), batch[LABEL], weights)

    # The old state is dead after a step: donating it lets XLA update in place.
    train = jax.jit(train_step, in_shardings=(state_sharding, data),
                    out_shardings=(state_sharding, state_sharding), donate_argnums=0)
    evaluate = jax.jit(eval_step, in_shardings=(state_sharding, data, data),
                       out_shardings=state_sharding)
    return Steps(graphdef, state, train, evaluate,
                 lambda s: nnx.merge(graphdef, s.params, s.rest))
