"""The compiled train and eval steps.

The model is split once into a static graph definition and array state
(``nnx.split``); the steps are pure functions of that state under ``jax.jit``,
merging the model back inside the trace.  This keeps NNX's Python-side graph
traversal out of the per-step cost.  The batch arrives split over the mesh's
data axis; the state is replicated and XLA inserts the gradient all-reduce.  With
``shard_params`` (``train.shard_params``) every large array of the state is split
over the same axis instead (:func:`fusionjax.parallel.state_shardings`): a step
gathers the parameters whole for the forward and backward pass, and each device
updates only its blocks of them and of the optimiser state.  The layout is fixed
once, here, for the initial state and both steps' in and out shardings, so a step
never changes it and never recompiles for it.

Gradient accumulation (``grad_accumulation = k``): the step receives the whole
batch, splits it into ``k`` micro-batches along the batch axis and runs forward and
backward on one micro-batch at a time inside a ``lax.scan`` (so only one
micro-batch's activations are alive at once), summing the gradients; then it applies
one optimiser update with their mean.  Micro-batch ``i`` holds rows ``i, i + k,
i + 2k, ...``: with the batch split over ``n`` devices in contiguous blocks, every
device then holds ``batch / (k n)`` rows of every micro-batch, and nothing moves
between devices.

Mixed precision (``precision``): the parameters and the optimiser state stay
float32.  Inside the differentiated function the step casts the floating
parameters, and the floating inputs of every encoder that does not ask for
``full_precision_input``, to the compute dtype before ``nnx.merge``, so the model
runs in that dtype; the head's predictions are cast back to float32 before the loss
and the metrics, and the gradients arrive in float32 through the casts.  ``float16``
adds a dynamic loss scale (:class:`LossScale`).  Evaluation always runs in float32.

Training-only randomness (SpecAugment's masks): the forward pass of the train step runs
inside :func:`fusionjax.training.randomness.training`, with the key of the step (and of
the micro-batch, under gradient accumulation) from ``seed``; the eval step does not, so a
component that asks for its key gets None there.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fusionjax.config.schema import TrainConfig
from fusionjax.interfaces import LABEL, Batch
from fusionjax.model import FusionModel
from fusionjax.parallel import DATA_AXIS, batch_sharding, replicated, state_shardings
from fusionjax.training import randomness
from fusionjax.training.modality_dropout import drop_modalities, dropout_key

PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
LOSS_SCALE_INIT = 2.0 ** 15  # float16 loss scale at step 0
LOSS_SCALE_PERIOD = 2000  # consecutive finite steps before the loss scale doubles
LOSS_SCALE_MIN = 1.0


class LossScale(NamedTuple):
    """The dynamic loss scale of ``precision = "float16"``.

    The loss is multiplied by ``scale`` before the backward pass (so that small
    gradients do not flush to zero in float16) and the gradients divided by it in
    float32.  A step whose gradients are not all finite is skipped (parameters,
    optimiser state and model state unchanged; the step counter still advances) and
    halves the scale (not below ``LOSS_SCALE_MIN``); after ``period`` finite steps in a
    row the scale doubles."""

    scale: jax.Array  # float32 []
    good_steps: jax.Array  # int32 []: finite steps since the scale last changed

    @classmethod
    def initial(cls, scale: float = LOSS_SCALE_INIT) -> LossScale:
        return cls(jnp.asarray(scale, jnp.float32), jnp.zeros((), jnp.int32))

    def next(self, finite: jax.Array, period: int = LOSS_SCALE_PERIOD) -> LossScale:
        grow = finite & (self.good_steps + 1 >= period)
        scale = jnp.where(finite, jnp.where(grow, self.scale * 2, self.scale),
                          jnp.maximum(self.scale / 2, LOSS_SCALE_MIN))
        return LossScale(scale, jnp.where(finite & ~grow, self.good_steps + 1, 0))


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree of arrays)."""

    step: jax.Array
    params: Any  # nnx.State of the nnx.Param variables (always float32)
    rest: Any  # every other variable (e.g. RNG counters, batch statistics)
    opt_state: Any
    loss_scale: LossScale | None = None  # only with precision = "float16"


class Steps(NamedTuple):
    graphdef: Any
    init: TrainState
    train: Any  # (TrainState, Batch) -> (TrainState, metric stats)
    eval: Any  # (TrainState, Batch, weights) -> metric stats
    merge: Any  # TrainState -> FusionModel


def make_steps(model: FusionModel, tx: optax.GradientTransformation, mesh: Mesh,
               settings: TrainConfig | None = None, *,
               loss_scale_period: int = LOSS_SCALE_PERIOD) -> Steps:
    """The compiled steps of ``model`` under ``settings`` (the run's validated
    ``[train]`` section, :class:`~fusionjax.config.TrainConfig`; default: every default):
    ``modality_dropout`` hides modalities of random training examples, drawn from
    ``seed`` and the step number; ``grad_accumulation``, ``precision`` and
    ``shard_params`` as documented there.  The batch size must split over the mesh's
    devices (:meth:`TrainConfig.check_devices`, checked when the config is assembled)."""
    cfg = settings or TrainConfig()
    modality_dropout, seed = cfg.modality_dropout, cfg.seed
    grad_accumulation, precision, shard_params = cfg.grad_accumulation, cfg.precision, cfg.shard_params
    k, compute = grad_accumulation, PRECISIONS[precision]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss_scale = LossScale.initial() if precision == "float16" else None
    # an abstract model (ShapeDtypeStruct leaves, e.g. for the summary's FLOP count) gives
    # steps whose initial state is abstract too: they can be traced, not run
    abstract = any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))
    opt_state = jax.eval_shape(tx.init, params) if abstract else tx.init(params)
    state = TrainState(jnp.zeros((), jnp.int32), params, rest, opt_state, loss_scale)
    state_sharding = state_shardings(state, mesh, shard=shard_params)
    if not abstract:
        state = jax.device_put(state, state_sharding)
    data = batch_sharding(mesh)
    # Under shard_params the step gathers the split parameters whole once, before the
    # forward pass (FSDP's all-gather; once per step, not per micro-batch), and hands
    # the optimiser the gradients laid out like the parameters: the gradient reduction
    # then leaves each device only its block to update.  Left to itself, GSPMD carries
    # a parameter's split into the activations it meets and reshuffles them there
    # (XLA warns of "involuntary full rematerialization" on the CNN encoders).
    whole = jax.tree.map(lambda _: replicated(mesh), state.params)

    def gather(params):
        return jax.lax.with_sharding_constraint(params, whole) if shard_params else params

    def scatter(grads):
        return jax.lax.with_sharding_constraint(grads, state_sharding.params) if shard_params else grads
    # inputs cast to the compute dtype: every modality whose encoder does not keep float32
    cast_inputs = frozenset(m for m, enc in model.encoders.items()
                            if not getattr(enc, "full_precision_input", False))

    def run(params, rest, batch, dtype, key=None):
        """The merged model, run in ``dtype``; its predictions in float32.  ``key``: the
        training randomness (None: evaluation)."""
        if dtype != jnp.float32:
            params = _cast_floating(params, dtype)
            batch = {name: _cast_floating(v, dtype) if name in cast_inputs else v
                     for name, v in batch.items()}
        model = nnx.merge(graphdef, params, rest)
        with randomness.training(key, model) if key is not None else contextlib.nullcontext():
            predictions = model(batch)
        return _cast_floating(predictions, jnp.float32), model

    def forward(params, rest, batch, scale, key):
        predictions, model = run(params, rest, batch, compute, key)
        loss = model.head.loss(predictions, batch[LABEL])
        weights = jnp.ones(batch[LABEL].shape[:1], jnp.float32)
        stats = model.head.train_stats(predictions, batch[LABEL], weights)
        return loss * scale, (stats, nnx.state(model, nnx.Not(nnx.Param)))

    grad_fn = jax.value_and_grad(forward, has_aux=True)
    modalities, rates = model.modalities, dict(modality_dropout or {})
    micro_sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))

    def gradients(state: TrainState, batch: Batch):
        """Mean gradient over the batch (float32, unscaled), new model state, metric stats."""
        scale = 1.0 if state.loss_scale is None else state.loss_scale.scale
        params = gather(state.params)
        key = randomness.step_key(seed, state.step)
        if k == 1:
            (_, (stats, rest)), grads = grad_fn(params, state.rest, batch, scale, key)
        else:
            # [B, ...] -> [k, B / k, ...]: micro-batch i is rows i, i + k, i + 2k, ...
            micro = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), batch)
            micro = jax.lax.with_sharding_constraint(micro, micro_sharding)

            def accumulate(carry, xs):
                (total, rest), (mb, i) = carry, xs
                (_, (stats, rest)), grads = grad_fn(params, rest, mb, scale,
                                                    jax.random.fold_in(key, i))
                return (jax.tree.map(jnp.add, total, grads), rest), stats

            zeros = jax.tree.map(jnp.zeros_like, params)
            (grads, rest), stats = jax.lax.scan(accumulate, (zeros, state.rest),
                                                (micro, jnp.arange(k)))
            stats = jax.tree.map(lambda s: s.sum(axis=0), stats)
        if k != 1 or state.loss_scale is not None:
            grads = jax.tree.map(lambda g: g / (scale * k), grads)
        return scatter(grads), rest, stats

    def train_step(state: TrainState, batch: Batch):
        if any(rates.values()):
            key = jax.random.fold_in(dropout_key(seed), state.step)
            batch = drop_modalities(batch, rates, modalities, key)
        grads, rest, stats = gradients(state, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        loss_scale = state.loss_scale
        if loss_scale is not None:  # skip a step whose gradients overflowed
            finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
            rest = keep(rest, state.rest)
            loss_scale = loss_scale.next(finite, loss_scale_period)
        return TrainState(state.step + 1, params, rest, opt_state, loss_scale), stats

    def eval_step(state: TrainState, batch: Batch, weights: jax.Array):
        predictions, model = run(gather(state.params), state.rest, batch, jnp.float32)
        return model.head.metric_stats(predictions, batch[LABEL], weights)

    # The old state is dead after a step: donating it lets XLA update in place.
    stats_sharding = replicated(mesh)  # the metric statistics: small, read by the host
    train = jax.jit(train_step, in_shardings=(state_sharding, data),
                    out_shardings=(state_sharding, stats_sharding), donate_argnums=0)
    evaluate = jax.jit(eval_step, in_shardings=(state_sharding, data, data),
                       out_shardings=stats_sharding)
    return Steps(graphdef, state, train, evaluate,
                 lambda s: nnx.merge(graphdef, s.params, s.rest))


def _cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating array of ``tree`` as ``dtype``; integers and bools unchanged."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)
