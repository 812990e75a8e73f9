"""Research-run settings: Optax optimisers and schedules, gradient clipping, weight
decay, gradient accumulation inside the compiled step, and mixed precision."""

import collections
import copy
import dataclasses
import json
import math
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, TINY
from jax.extend import core

from fusionjax import fast_paths
from fusionjax.assembly import assemble
from fusionjax.config import apply_overrides
from fusionjax.errors import ConfigError
from fusionjax.parallel import data_mesh, shard_batch
from fusionjax.training.loop import train
from fusionjax.training.optim import make_optimizer
from fusionjax.training.step import LossScale, make_steps

LR = 0.1


def config_error(*overrides, config=TINY) -> str:
    with pytest.raises(ConfigError) as e:
        assemble(apply_overrides(copy.deepcopy(config), list(overrides)))
    return str(e.value)


def opt(steps=100, **section):
    return make_optimizer({"name": "sgd", "learning_rate": LR, **section}, steps=steps)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def first_batch(a, size=32):
    return next(a.dataset.batches("train", size, seed=0, shuffle=True, drop_remainder=True))


# --- schedules ------------------------------------------------------------------------


def test_warmup_then_cosine_matches_the_closed_form():
    lr = opt(steps=100, schedule={"warmup_steps": 10, "decay": "cosine",
                                  "final_lr_fraction": 0.1}).learning_rate
    for n in (0, 1, 5, 9):
        assert float(lr(n)) == pytest.approx(LR * n / 10)
    for n in (10, 30, 55, 80, 100):  # the decay spans train.steps - warmup_steps = 90 updates
        t = (n - 10) / 90
        assert float(lr(n)) == pytest.approx(LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))))
    assert float(lr(500)) == pytest.approx(LR * 0.1)  # holds the final value


def test_linear_and_constant_schedules():
    lr = opt(steps=50, schedule={"decay": "linear", "final_lr_fraction": 0.2}).learning_rate
    for n in (0, 10, 25, 50, 60):
        assert float(lr(n)) == pytest.approx(LR * (1 - 0.8 * min(n, 50) / 50))
    lr = opt(steps=50, schedule={"decay": "linear", "decay_steps": 10}).learning_rate
    assert float(lr(5)) == pytest.approx(LR / 2) and float(lr(10)) == 0.0
    lr = opt(steps=50, schedule={"warmup_steps": 4}).learning_rate  # decay = "constant"
    assert [float(lr(n)) for n in (0, 2, 4, 49)] == pytest.approx([0, LR / 2, LR, LR])
    assert float(opt().learning_rate(77)) == LR  # no schedule: the constant learning rate


def test_the_optimiser_applies_the_schedule():
    """SGD on loss = w: update n is exactly -learning_rate_at(n)."""
    o = opt(steps=20, schedule={"warmup_steps": 5, "decay": "cosine"})
    params = jnp.zeros(())
    state = o.transform.init(params)
    for n in range(20):
        updates, state = o.transform.update(jnp.ones(()), state, params)
        assert float(updates) == pytest.approx(-float(o.learning_rate(n)), abs=1e-7)


def test_assembly_exposes_the_learning_rate_of_each_update(tiny_config):
    a = assemble(apply_overrides(tiny_config, [
        "train.steps=100", "train.optimizer.schedule.warmup_steps=20",
        'train.optimizer.schedule.decay="linear"']))
    assert a.learning_rate_at(0) == 0.0 and a.learning_rate_at(10) == pytest.approx(5e-4)
    assert a.learning_rate_at(20) == pytest.approx(1e-3)
    assert a.learning_rate_at(60) == pytest.approx(5e-4)  # decays over train.steps by default
    assert a.learning_rate_at(100) == 0.0


# --- clipping and weight decay --------------------------------------------------------


def test_clip_norm_bounds_a_huge_gradient():
    grads = {"a": jnp.full((3,), 1e6), "b": jnp.full((4,), -1e6)}
    params = jax.tree.map(jnp.zeros_like, grads)
    for clip, bound in ((1.0, LR * 1.0), (None, 1e5)):
        tx = opt(clip_norm=clip).transform
        updates, _ = tx.update(grads, tx.init(params), params)
        norm = float(optax.tree.norm(updates))
        if clip is None:
            assert norm > bound  # unclipped: the gradient goes through
        else:
            assert norm == pytest.approx(bound, rel=1e-5)


def test_adamw_decays_the_weights_and_adam_refuses_weight_decay():
    o = make_optimizer({"name": "adamw", "learning_rate": LR, "weight_decay": 0.5}, steps=10)
    params = {"w": jnp.array([2.0, -4.0])}
    updates, _ = o.transform.update({"w": jnp.zeros(2)}, o.transform.init(params), params)
    np.testing.assert_allclose(updates["w"], -LR * 0.5 * params["w"], rtol=1e-6)  # decoupled
    assert make_optimizer({"name": "lion", "learning_rate": LR}, steps=10).section["weight_decay"] \
        == 1e-3
    msg = config_error("train.optimizer.weight_decay=1e-4")
    assert msg.startswith("train.optimizer.weight_decay: optax.adam has no weight decay")
    assert 'use name = "adamw"' in msg
    msg = config_error('train.optimizer={name="sgd", learning_rate=0.1, weight_decay=1e-4}')
    assert "optax.sgd has no weight decay" in msg and "adamw, lion" in msg


# --- config errors and the resolved section -------------------------------------------


def test_config_errors_name_their_key_path():
    cases = {
        "train.optimizer.schedule.warmup_steps=900":
            "train.optimizer.schedule.warmup_steps: must be >= 0 and < train.steps (60), got 900",
        'train.optimizer.schedule.decay="cosin"':
            "train.optimizer.schedule.decay: expected 'constant' | 'linear' | 'cosine'",
        "train.optimizer.schedule.warmup=3":
            "train.optimizer.schedule.warmup: unknown parameter 'warmup' (did you mean "
            "'warmup_steps'?)",
        "train.optimizer.schedule.final_lr_fraction=0.1":
            "train.optimizer.schedule.final_lr_fraction: is 0.1, but decay = \"constant\"",
        "train.optimizer.schedule.decay_steps=0": "train.optimizer.schedule.decay_steps: must be >= 1",
        "train.optimizer.schedule=3": "train.optimizer.schedule: must be a table",
        "train.optimizer.clip_norm=-1": "train.optimizer.clip_norm: must be a number > 0, got -1",
        "train.optimizer.clipnorm=1.0":
            "train.optimizer.clipnorm: unknown parameter 'clipnorm' (did you mean 'clip_norm'?)",
        "train.optimizer.learning_rate=-0.1": "train.optimizer.learning_rate: must be > 0, got -0.1",
        "train.optimizer.b2=1.5": "train.optimizer.b2: must be in [0, 1), got 1.5",
        "train.grad_accumulation=5": "train.grad_accumulation: 5 micro-batches do not split "
                                     "train.batch_size (32) evenly",
        "train.grad_accumulation=0": "train.grad_accumulation: must be >= 1, got 0",
        'train.precision="bf16"': "train.precision: expected 'float32' | 'bfloat16' | 'float16'",
    }
    for override, expected in cases.items():
        assert config_error(override).startswith(expected), (override, config_error(override))
    msg = config_error('train.optimizer.schedule={decay="linear", final_lr_fraction=1.5}')
    assert msg.startswith("train.optimizer.schedule.final_lr_fraction: must be in [0, 1], got 1.5")


def test_resolved_section_holds_every_default_and_reassembles_the_same(tiny_config):
    a = assemble(apply_overrides(tiny_config, [
        'train.optimizer={name="adamw", learning_rate=3e-3, clip_norm=1.0}',
        "train.optimizer.schedule.warmup_steps=5", 'train.optimizer.schedule.decay="cosine"']))
    resolved = a.resolved_config()
    section = resolved["train"]["optimizer"]
    assert section == {"name": "adamw", "learning_rate": 3e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
                       "eps_root": 0.0, "mu_dtype": None, "weight_decay": 1e-4, "mask": None,
                       "nesterov": False, "clip_norm": 1.0,
                       "schedule": {"warmup_steps": 5, "decay": "cosine", "decay_steps": 55,
                                    "final_lr_fraction": 0.0}}
    assert resolved["train"]["grad_accumulation"] == 1 and resolved["train"]["precision"] == "float32"
    again = assemble(resolved)
    assert again.resolved_config() == resolved
    assert [again.learning_rate_at(n) for n in range(0, 70, 7)] == \
        [a.learning_rate_at(n) for n in range(0, 70, 7)]
    grads = {"w": jnp.array([3.0, -1.0, 0.5])}
    params = {"w": jnp.array([1.0, 2.0, -3.0])}
    outs = []
    for tx in (a.optimizer, again.optimizer):
        state, out = tx.init(params), []
        for _ in range(8):
            updates, state = tx.update(grads, state, params)
            out.append(updates["w"])
        outs.append(np.stack(out))
    np.testing.assert_array_equal(outs[0], outs[1])
    # a table without `name` is the default optimiser (adam) with its learning rate (1e-3);
    # a table that names an optimiser gives its learning rate itself
    assert make_optimizer({"clip_norm": 2.0}, steps=10).section["learning_rate"] == 1e-3
    with pytest.raises(ConfigError, match="train.optimizer.learning_rate: missing required"):
        make_optimizer({"name": "adam"}, steps=10)
    plain = assemble(copy.deepcopy(TINY)).resolved_config()["train"]["optimizer"]
    assert plain["clip_norm"] is None and plain["schedule"] == {
        "warmup_steps": 0, "decay": "constant", "decay_steps": 60, "final_lr_fraction": 1.0}


# --- gradient accumulation ------------------------------------------------------------


def test_accumulating_4_micro_batches_equals_one_full_batch(tiny_config):
    cfg = apply_overrides(tiny_config, [
        'train.optimizer={name="sgd", learning_rate=0.05, momentum=0.9}'])
    a = assemble(cfg)
    mesh = data_mesh()
    batches = a.dataset.batches("train", 32, seed=0, shuffle=True, drop_remainder=True)
    batches = [shard_batch(next(batches), mesh) for _ in range(3)]
    runs = {}
    for k in (1, 4):
        steps = make_steps(a.build(), a.optimizer, mesh, dataclasses.replace(a.train, grad_accumulation=k))
        state = steps.init
        step = steps.train.lower(state, batches[0]).compile()
        p0 = jax.device_get(state.params)
        params, stats = [], []
        for b in batches:
            state, s = step(state, b)
            params.append(jax.device_get(state.params))
            stats.append(jax.device_get(s))
        runs[k] = dict(p0=p0, params=params, stats=stats, step=int(state.step),
                       temp=step.memory_analysis().temp_size_in_bytes)
    one, four = runs[1], runs[4]
    assert four["step"] == 3  # one optimiser update per step, not per micro-batch
    update1 = flat(one["params"][0]) - flat(one["p0"])
    update4 = flat(four["params"][0]) - flat(four["p0"])
    scale = np.abs(update1).max()
    np.testing.assert_allclose(update4, update1, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(flat(four["params"][2]), flat(one["params"][2]), rtol=1e-5, atol=1e-6)
    for s1, s4 in zip(one["stats"], four["stats"]):  # metric stats summed over micro-batches
        assert s4["count"] == s1["count"] == 32 and s4["correct"] == s1["correct"]
        np.testing.assert_allclose(s4["loss_sum"], s1["loss_sum"], rtol=1e-5)
    # only one micro-batch's activations are alive at a time
    assert four["temp"] < one["temp"], (four["temp"], one["temp"])


ACCUMULATE_SHARDED = textwrap.dedent("""
    import os, sys, json, dataclasses
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    from conftest import ROOT, TINY
    from fusionjax.assembly import assemble
    from fusionjax.errors import ConfigError
    from fusionjax.parallel import data_mesh, shard_batch
    from fusionjax.training.step import make_steps
    a = assemble(TINY)
    out = {{}}
    for n, k in ((1, 1), (4, 2)):
        mesh = data_mesh(jax.devices()[:n])
        steps = make_steps(a.build(), a.optimizer, mesh, dataclasses.replace(a.train, grad_accumulation=k))
        state, batches = steps.init, a.dataset.batches("train", 32, seed=0, shuffle=True,
                                                        drop_remainder=True)
        for _ in range(2):
            state, stats = steps.train(state, shard_batch(next(batches), mesh))
        out[n] = [np.ravel(x).tolist() for x in jax.tree.leaves(jax.device_get(state.params))]
    try:  # checked once, when the config is assembled for the 4 devices at hand
        assemble({{**TINY, "train": {{**TINY["train"], "grad_accumulation": 16}}}})
    except ConfigError as e:
        out["error"] = str(e)
    print(json.dumps(out))
""")


def test_accumulation_over_4_devices_matches_one_device(tmp_path):
    """k = 2 micro-batches, each split over 4 devices, against k = 1 on one device."""
    script = tmp_path / "accumulate.py"
    script.write_text(ACCUMULATE_SHARDED.format(tests=str(ROOT / "tests")))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for p1, p4 in zip(res["1"], res["4"]):
        np.testing.assert_allclose(p4, p1, rtol=1e-4, atol=1e-6)
    assert res["error"].startswith("train.batch_size: 32 examples do not split into 16 "
                                   "micro-batches on each of 4 devices")
    assert "use a multiple of 64" in res["error"]


# --- mixed precision ------------------------------------------------------------------


def matmul_dtypes(fn, *args) -> collections.Counter:
    """(primitive, operand dtypes) of every matmul, convolution and FFT ``fn`` traces to."""
    out = collections.Counter()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated", "fft"):
                out[(eqn.primitive.name, *(str(v.aval.dtype) for v in eqn.invars))] += 1
            for param in eqn.params.values():
                for sub in param if isinstance(param, list | tuple) else [param]:
                    if isinstance(sub, core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, core.Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return out


def test_bfloat16_computes_in_bfloat16_except_the_audio_front_end(tiny_config):
    a = assemble(tiny_config)
    mesh = data_mesh()
    batch = shard_batch(first_batch(a), mesh)
    assert batch["text"].dtype == jnp.int32
    steps = make_steps(a.build(), a.optimizer, mesh,
                       dataclasses.replace(a.train, precision="bfloat16", grad_accumulation=2))
    ops = matmul_dtypes(steps.train, steps.init, batch)
    # the STFT and the mel filterbank (one matmul) stay float32 ...
    assert ops[("fft", "float32")] == 1 and ops[("dot_general", "float32", "float32")] == 1
    # ... every other matmul and convolution, forward and backward, runs in bfloat16
    # 4 conv layers: with the conv fast path, the forward passes of layers 2 and the input
    # gradient of each (XLA drops the first layers' unused ones later); the first layers'
    # forward passes (one input channel: `taps`, elementwise products of the bfloat16
    # values summed in float32, as a convolution accumulates) and every weight gradient
    # (dot_generals) are no convolutions; or plain autodiff's forward + weight gradient
    # each + input gradients of layers 2
    expected_convs = 6 if fast_paths.enabled("conv") else 10
    assert ops[("conv_general_dilated", "bfloat16", "bfloat16")] == expected_convs
    assert ops[("dot_general", "bfloat16", "bfloat16")] >= 15
    assert sum(ops.values()) == 2 + ops[("conv_general_dilated", "bfloat16", "bfloat16")] + \
        ops[("dot_general", "bfloat16", "bfloat16")], ops
    # evaluation runs in float32
    evaluated = matmul_dtypes(steps.eval, steps.init, batch, jnp.ones(32))
    assert {k[1] for k in evaluated} == {"float32"}


def test_bfloat16_trains_as_well_as_float32_and_keeps_float32_params(tiny_config, tmp_path):
    accuracy, loss = {}, {}
    for precision in ("float32", "bfloat16"):
        cfg = apply_overrides(tiny_config, ["data.noise=1.5", f'train.precision="{precision}"'])
        result = train(assemble(cfg), tmp_path / precision, log=lambda s: None)
        accuracy[precision] = result.eval_metrics["accuracy"]
        loss[precision] = result.train_metrics["loss"]
        assert {x.dtype for x in jax.tree.leaves(result.state.params)} == {jnp.dtype("float32")}
        leaves = jax.tree.leaves(result.state.opt_state)
        assert {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)} == \
            {jnp.dtype("float32")}
    print(accuracy, loss)
    assert loss["bfloat16"] != loss["float32"]  # the policy reached the loop's train step
    assert accuracy["float32"] >= 0.9, accuracy
    assert abs(accuracy["bfloat16"] - accuracy["float32"]) <= 0.05, accuracy


def test_float16_loss_scale_skips_overflowing_steps_and_adapts(tiny_config):
    a = assemble(tiny_config)
    mesh = data_mesh()
    batches = a.dataset.batches("train", 32, seed=0, shuffle=True, drop_remainder=True)
    steps = make_steps(a.build(), a.optimizer, mesh, dataclasses.replace(a.train, precision="float16"),
                       loss_scale_period=2)
    assert float(steps.init.loss_scale.scale) == 2.0 ** 15
    # a scale of 2^100 overflows float16 in the backward pass: the step is skipped
    state = steps.init._replace(loss_scale=LossScale.initial(2.0 ** 100))
    before = jax.device_get((state.params, state.opt_state))
    state, _ = steps.train(state, shard_batch(next(batches), mesh))
    after = jax.device_get((state.params, state.opt_state))
    jax.tree.map(np.testing.assert_array_equal, after, before)
    assert float(state.loss_scale.scale) == 2.0 ** 99 and int(state.step) == 1
    # a sane scale: the update happens; after `period` finite steps the scale doubles
    state = state._replace(loss_scale=LossScale.initial(2.0 ** 10))
    losses = []
    for expected in (2.0 ** 10, 2.0 ** 11, 2.0 ** 11):
        state, stats = steps.train(state, shard_batch(next(batches), mesh))
        losses.append(float(stats["loss_sum"]))
        assert float(state.loss_scale.scale) == expected
    assert np.all(np.isfinite(losses))
    assert not np.array_equal(flat(jax.device_get(state.params)), flat(before[0]))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
    # the scale never falls below 1
    low = LossScale.initial(1.0).next(jnp.asarray(False))
    assert float(low.scale) == 1.0 and int(low.good_steps) == 0
