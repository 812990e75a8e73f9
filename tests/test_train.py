"""The compiled step (no recompilation, sharding) and learning on real signal."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import ROOT, TINY, run_cli

from fusionjax import rundir
from fusionjax.assembly import assemble
from fusionjax.config import apply_overrides
from fusionjax.parallel import data_mesh, shard_batch
from fusionjax.rundir import RunDir
from fusionjax.training.loop import train
from fusionjax.training.step import make_steps


def test_steps_compile_once(tiny_config):
    a = assemble(tiny_config)
    mesh = data_mesh()
    steps = make_steps(a.build(), a.optimizer, mesh)
    state = steps.init
    batches = a.dataset.batches("train", 32, seed=0, shuffle=True, drop_remainder=True)
    losses = []
    for _ in range(4):
        state, stats = steps.train(state, shard_batch(next(batches), mesh))
        losses.append(float(stats["loss_sum"]))
    weights = jax.numpy.ones(32)
    for _ in range(2):
        steps.eval(state, shard_batch(next(batches), mesh), weights)
    assert steps.train._cache_size() == 1, "the train step recompiled after its first call"
    assert steps.eval._cache_size() == 1, "the eval step recompiled after its first call"
    assert int(state.step) == 4 and len(set(losses)) == 4


def test_learns_the_synthetic_task(tiny_config, tmp_path):
    """Three modalities, each carrying the label under noise: test accuracy must be high."""
    a = assemble(apply_overrides(tiny_config, ["data.noise=1.5"]))
    result = train(a, tmp_path / "run", log=lambda s: None)
    assert result.eval_metrics["accuracy"] >= 0.9, result.eval_metrics
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["loss"] > lines[-2]["loss"]  # training loss fell
    assert lines[-1]["split"] == "test" and lines[-1]["accuracy"] == result.eval_metrics["accuracy"]


def test_text_alone_is_learned_by_the_lstm(tiny_config, tmp_path):
    """Only the text carries the label (a keyword at a random position): the LSTM must find it."""
    cfg = apply_overrides(tiny_config, [
        'data.modalities=["text"]', "train.steps=150", "train.log_every=50",
        "train.optimizer.learning_rate=3e-3"])
    cfg["model"]["encoders"] = {"text": TINY["model"]["encoders"]["text"]}
    result = train(assemble(cfg), tmp_path / "run", log=lambda s: None)
    assert result.eval_metrics["accuracy"] >= 0.9, result.eval_metrics


# Eight CPU devices, in one subprocess (JAX starts once): data parallelism with the
# state replicated and with train.shard_params, against one device.  TINY, with the
# image encoder's dense layer and the LSTM wide enough (2**14 elements) that one kernel
# splits along its rows and one along its columns; every other leaf stays replicated.
EIGHT_DEVICES = textwrap.dedent("""
    import os, sys, json, shutil, copy, dataclasses
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    import jax, numpy as np
    tmp = Path({tmp!r})
    # the train() runs below compile what the "sharded" variant compiled: reuse it
    jax.config.update("jax_compilation_cache_dir", str(tmp / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    from conftest import TINY
    from fusionjax.assembly import assemble
    from fusionjax.parallel import bytes_per_device, data_mesh, shard_batch, to_host
    from fusionjax.evaluation import evaluate
    from fusionjax.rundir import RunDir, load_run
    from fusionjax.training.loop import train
    from fusionjax.training.step import make_steps
    assert jax.device_count() == 8
    cfg = copy.deepcopy(TINY)
    cfg["model"]["encoders"]["image"]["dense"] = 64  # kernel [256, 64]
    cfg["model"]["encoders"]["text"]["hidden"] = 64  # recurrent kernel [64, 256]
    a = assemble(cfg)
    out = {{}}
    for name, n, shard in (("one", 1, False), ("replicated", 8, False), ("sharded", 8, True)):
        mesh = data_mesh(jax.devices()[:n])
        steps = make_steps(a.build(), a.optimizer, mesh, dataclasses.replace(a.train, shard_params=shard))
        state, losses = steps.init, []
        for batch in a.dataset.batches("train", 32, seed=0, shuffle=True, drop_remainder=True):
            state, stats = steps.train(state, shard_batch(batch, mesh))
            losses.append(float(stats["loss_sum"]) / 32)
            if len(losses) == 6:
                break
        split = {{jax.tree_util.keystr(k): dict(spec=list(x.sharding.spec), shape=x.shape,
                                              shards=[s.data.shape for s in x.addressable_shards])
                 for k, x in jax.tree_util.tree_flatten_with_path(state)[0]
                 if x.sharding.spec != jax.sharding.PartitionSpec()}}
        out[name] = dict(losses=losses, split=split, bytes=bytes_per_device(state),
                         devices=len(jax.tree.leaves(state.params)[0].sharding.device_set),
                         eval=evaluate(steps, state, a, "test", 32, mesh).metrics["loss"],
                         params=[np.ravel(x)[:50].tolist() for x in jax.tree.leaves(to_host(state.params))])

    # A sharded run interrupted after its checkpoint of step 3 (a copy without the later
    # checkpoint and the final parameters) resumes to the uninterrupted run's result.
    cfg["train"].update(steps=6, log_every=3, checkpoint_every=3, shard_params=True)
    full = train(assemble(cfg), tmp / "full", log=lambda s: None)
    shutil.copytree(tmp / "full", tmp / "resumed")
    shutil.rmtree(tmp / "resumed" / "checkpoints" / "6")
    shutil.rmtree(RunDir(tmp / "resumed").model_dir)
    logged = []
    resumed = train(assemble(cfg), tmp / "resumed", log=logged.append)
    run = load_run(tmp / "full")  # as `fusionjax evaluate` loads it
    steps = make_steps(run.model, run.assembly.optimizer, data_mesh(), run.assembly.train)
    out["resume"] = dict(
        log=logged, full=full.eval_metrics, resumed=resumed.eval_metrics,
        loaded=evaluate(steps, steps.init, run.assembly, "test", 32, data_mesh()).metrics,
        specs=[list(x.sharding.spec) for x in jax.tree.leaves(resumed.state)],
        records=[[{{k: v for k, v in json.loads(line).items() if k != "examples_per_s"}}
                  for line in (tmp / r / "metrics.jsonl").read_text().splitlines()]
                 for r in ("full", "resumed")],
        same_params=all(np.array_equal(x, y) for x, y in zip(
            jax.tree.leaves(to_host(full.state.params)), jax.tree.leaves(to_host(resumed.state.params)))))
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eight_devices")
    script = tmp / "eight_devices.py"
    script.write_text(EIGHT_DEVICES.format(tests=str(ROOT / "tests"), tmp=str(tmp)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "involuntary full rematerialization" not in out.stderr.lower()
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_data_parallel_over_8_devices_matches_one(eight_devices):
    one, eight = eight_devices["one"], eight_devices["replicated"]
    assert one["devices"] == 1 and eight["devices"] == 8
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4, atol=1e-5)
    for p1, p8 in zip(one["params"], eight["params"]):
        np.testing.assert_allclose(p8, p1, rtol=1e-3, atol=1e-5)


def test_shard_params_splits_large_leaves_and_their_adam_moments(eight_devices):
    split = eight_devices["sharded"]["split"]
    kernels = {"['encoders']['image']['dense']['kernel']": ["data"],
               "['encoders']['text']['layers'][0][0]['rec']['kernel']": [None, "data"]}
    for path, spec in kernels.items():
        # the parameter and Adam's mu and nu: one layout, 1/8 of the array on each device
        leaves = {k: v for k, v in split.items() if path in k}
        assert len(leaves) == 3 and {".params", ".opt_state[0].mu", ".opt_state[0].nu"} == {
            k.split(path)[0] for k in leaves}, sorted(split)
        for leaf in leaves.values():
            assert leaf["spec"] == spec
            assert len(leaf["shards"]) == 8
            assert all(np.prod(s) * 8 == np.prod(leaf["shape"]) for s in leaf["shards"])
    assert len(split) == 6  # nothing else: small leaves and the step counts stay whole
    assert eight_devices["replicated"]["split"] == {}
    assert eight_devices["sharded"]["bytes"] < eight_devices["replicated"]["bytes"]


def test_shard_params_trains_like_replicated_and_one_device(eight_devices):
    one, rep, sharded = (eight_devices[k] for k in ("one", "replicated", "sharded"))
    np.testing.assert_allclose(sharded["losses"], rep["losses"], rtol=1e-4)
    np.testing.assert_allclose(sharded["losses"], one["losses"], rtol=1e-4)
    np.testing.assert_allclose(sharded["eval"], one["eval"], rtol=1e-4)
    for p1, p8 in zip(one["params"], sharded["params"]):
        np.testing.assert_allclose(p8, p1, rtol=1e-3, atol=1e-5)


def test_shard_params_checkpoint_resumes_exactly(eight_devices):
    res = eight_devices["resume"]
    assert any("resuming from the checkpoint of step 3" in line for line in res["log"])
    assert any("split over 8 devices" in line for line in res["log"])
    assert ["data"] in res["specs"] and [None, "data"] in res["specs"]  # restored as saved
    assert res["resumed"] == res["full"] and res["same_params"]  # bitwise
    full, resumed = res["records"]
    assert len(full) == 3 and resumed == full
    for k, v in res["full"].items():  # the saved run, loaded and evaluated sharded
        np.testing.assert_allclose(res["loaded"][k], v, rtol=1e-5)


def test_shard_spec_rule():
    from jax.sharding import PartitionSpec as P

    from fusionjax.parallel import SHARD_MIN_SIZE, shard_spec

    assert shard_spec((3520, 64), 8) == P("data")  # the largest dimension
    assert shard_spec((64, 256), 8) == P(None, "data")
    assert shard_spec((128, 128), 8) == P("data")  # a tie: the first
    assert shard_spec((4100, 64), 8) == P(None, "data")  # the largest that 8 divides
    assert shard_spec((3, 3, 16, 32), 8) == P()  # below SHARD_MIN_SIZE
    assert shard_spec((SHARD_MIN_SIZE,), 8) == P("data") and shard_spec((SHARD_MIN_SIZE - 8,), 8) == P()
    assert shard_spec((16411,), 8) == P()  # nothing divides: replicated, not padded
    assert shard_spec((3520, 64), 1) == P() and shard_spec((), 8) == P()


def test_cli_train_writes_a_run_and_never_overwrites_one(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    out = run_cli("train", str(cfg), "train.steps=4", "train.log_every=2", "--output-dir", str(run))
    assert out.returncode == 0, out.stderr
    assert "step      4/4" in out.stdout and "test: loss" in out.stdout
    assert {p.name for p in run.iterdir()} == set(rundir.LAYOUT)
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["train"]["steps"] == 4  # overrides and defaults are resolved
    assert resolved["model"]["fusion"]["type"] == "fusions/concat"
    assert sum(f.stat().st_size for f in RunDir(run).model_dir.rglob("*") if f.is_file()) > 10_000
    facts = json.loads((run / "run.json").read_text())  # how the numbers were computed
    assert facts["fast_paths"]["max_pool"] is True and facts["fast_paths"]["lstm"] is True
    # the resolved config is itself a valid config
    assert run_cli("config", "check", str(run / "config.json")).returncode == 0

    before = (run / "metrics.jsonl").read_bytes()
    again = run_cli("train", str(cfg), "train.steps=4", "--output-dir", str(run))
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    assert (run / "metrics.jsonl").read_bytes() == before
    (tmp_path / "a_file").write_text("keep me")
    onto_a_file = run_cli("train", str(cfg), "--output-dir", str(tmp_path / "a_file"))
    assert onto_a_file.returncode == 2 and "is a file, not a directory" in onto_a_file.stderr
    assert "Traceback" not in onto_a_file.stderr and (tmp_path / "a_file").read_text() == "keep me"


def test_two_processes_train_together_like_one(tmp_path):
    """Two `fusionjax train` processes on 127.0.0.1 (JAX's distributed runtime, CPU
    collectives) produce the same metrics as one process."""
    import socket

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    args = [str(cfg), "train.steps=6", "train.log_every=3"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "fusionjax", "train", *args, "--output-dir", str(tmp_path / "multi"),
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
        for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert "step      6/6" in outs[0][0] and "step" not in outs[1][0]  # only process 0 reports
    single = run_cli("train", *args, "--output-dir", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr

    def records(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "examples_per_s"} for x in lines]

    multi, one = records("multi"), records("single")
    assert len(multi) == len(one) == 3
    for m, o in zip(multi, one):
        assert m.keys() == o.keys()
        for k in m:
            if isinstance(m[k], str):
                assert m[k] == o[k]
            else:
                np.testing.assert_allclose(m[k], o[k], rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "multi" / "run.json").read_text())["processes"] == 2
