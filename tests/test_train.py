"""The compiled step (no recompilation, sharding) and learning on real signal."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
from conftest import ROOT, TINY, run_cli

from fusionjax.assembly import assemble
from fusionjax.config import apply_overrides
from fusionjax.parallel import data_mesh, shard_batch
from fusionjax.train.loop import train
from fusionjax.train.step import make_steps


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


SHARDED = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    from conftest import TINY
    from fusionjax.assembly import assemble
    from fusionjax.parallel import data_mesh, shard_batch
    from fusionjax.train.step import make_steps
    assert jax.device_count() == 8
    a = assemble(TINY)
    out = {{}}
    for n in (1, 8):
        mesh = data_mesh(jax.devices()[:n])
        steps = make_steps(a.build(), a.optimizer, mesh)
        state, losses = steps.init, []
        for batch in a.dataset.batches("train", 32, seed=0, shuffle=True, drop_remainder=True):
            state, stats = steps.train(state, shard_batch(batch, mesh))
            losses.append(float(stats["loss_sum"]) / 32)
            if len(losses) == 6:
                break
        leaf = jax.tree.leaves(state.params)[0]
        out[n] = dict(losses=losses, shards=len(leaf.sharding.device_set),
                      params=[np.asarray(x).ravel()[:50].tolist() for x in jax.tree.leaves(state.params)])
    print(json.dumps(out))
""")


def test_data_parallel_over_8_devices_matches_one(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED.format(tests=str(ROOT / "tests")))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    one, eight = res["1"], res["8"]
    assert one["shards"] == 1 and eight["shards"] == 8
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4, atol=1e-5)
    for p1, p8 in zip(one["params"], eight["params"]):
        np.testing.assert_allclose(p8, p1, rtol=1e-3, atol=1e-5)


def test_cli_train_writes_a_run_and_never_overwrites_one(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    out = run_cli("train", str(cfg), "train.steps=4", "train.log_every=2", "--output-dir", str(run))
    assert out.returncode == 0, out.stderr
    assert "step      4/4" in out.stdout and "test: loss" in out.stdout
    assert {p.name for p in run.iterdir()} == {"config.json", "run.json", "metrics.jsonl",
                                               "checkpoint", "checkpoints", "tensorboard"}
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["train"]["steps"] == 4  # overrides and defaults are resolved
    assert resolved["model"]["fusion"]["type"] == "basic_fusions/concat"
    assert (run / "checkpoint" / "params.msgpack").stat().st_size > 10_000
    # the resolved config is itself a valid config
    assert run_cli("config", "check", str(run / "config.json")).returncode == 0

    before = (run / "metrics.jsonl").read_bytes()
    again = run_cli("train", str(cfg), "train.steps=4", "--output-dir", str(run))
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    assert (run / "metrics.jsonl").read_bytes() == before


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
