"""Research-run guarantees: a run killed at any point resumes to exactly the result of
an uninterrupted one; a kill during a checkpoint write loses nothing; a diverging run
stops with the step and its last good checkpoint; early stopping keeps the best model."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, TINY, run_cli

from fusionjax.assembly import assemble
from fusionjax.errors import ConfigError, TrainingError
from fusionjax.rundir import RunDir
from fusionjax.training.loop import train

RESUMABLE = {**TINY, "train": {**TINY["train"], "steps": 80, "log_every": 10, "checkpoint_every": 20,
                               "eval_every": 20, "eval_batch_size": 128},
             "data": {**TINY["data"], "augment": {"image": [{"type": "affine", "max_shift": 2}],
                                                  "audio": [{"type": "noise", "snr_db": [10, 30]}]}}}


def _records(run):
    """metrics.jsonl without the wall-clock throughput."""
    return [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _final(run):
    """The final model's arrays, as bytes (so that a comparison is bitwise)."""
    import jax
    import orbax.checkpoint as ocp

    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        tree = checkpointer.restore(RunDir(run).model_dir)
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _train(config_file, run, *extra, env=None, wrapper=None):
    args = [sys.executable, *(["-c", wrapper] if wrapper else ["-m", "fusionjax"]),
            "train", str(config_file), "--output-dir", str(run), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}, cwd=ROOT)


def _steps(run):
    folder = run / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    cfg = tmp / "tiny.json"
    cfg.write_text(json.dumps(RESUMABLE))
    out = run_cli("train", str(cfg), "--output-dir", str(tmp / "run"))
    assert out.returncode == 0, out.stderr
    return cfg, tmp / "run"


def test_sigkill_at_an_arbitrary_step_then_resume_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    """With augmentation on, and a worker process reading the data (the reference run read
    it in its own process): the data depend only on their position, and the pipeline's
    state in the checkpoint continues it."""
    _, reference = uninterrupted
    cfg = tmp_path / "workers.json"
    cfg.write_text(json.dumps({**RESUMABLE, "data": {**RESUMABLE["data"], "workers": 1}}))
    run = tmp_path / "run"
    proc = _train(cfg, run)
    deadline = time.time() + 240
    while not [s for s in _steps(run) if s >= 40] and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)  # somewhere after the checkpoint of step 40
    proc.wait()
    assert not RunDir(run).is_finished()

    out = run_cli("train", str(cfg), "--output-dir", str(run))  # the same command resumes
    assert out.returncode == 0, out.stderr
    assert "resuming from the checkpoint of step" in out.stdout
    assert _records(run) == _records(reference)
    assert _final(run) == _final(reference)  # bitwise


KILL_IN_WRITE = """
import os, signal, sys
from orbax.checkpoint._src.path import async_path
real = async_path.rename
async def rename(src, dst):  # the checkpoint is fully written to its temporary folder...
    if dst.name == os.environ["KILL_AT"]:
        os.kill(os.getpid(), signal.SIGKILL)  # ...and the process dies before the rename
    return await real(src, dst)
async_path.rename = rename
from fusionjax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_intact(uninterrupted, tmp_path):
    cfg, reference = uninterrupted
    run = tmp_path / "run"
    proc = _train(cfg, run, env={"KILL_AT": "40"}, wrapper=KILL_IN_WRITE)
    proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL
    assert _steps(run) == [20]  # the half-made 40 is not a checkpoint
    out = run_cli("resume", str(run))  # the directory alone is enough
    assert out.returncode == 0, out.stderr
    assert "checkpoint of step 20" in out.stdout
    assert _records(run) == _records(reference)
    assert _final(run) == _final(reference)


def test_resume_refuses_another_config_and_a_finished_run(uninterrupted, tmp_path):
    cfg, reference = uninterrupted
    before = (reference / "metrics.jsonl").read_bytes()
    out = run_cli("train", str(cfg), "--output-dir", str(reference))
    assert out.returncode == 2 and "already holds a finished run" in out.stderr
    assert (reference / "metrics.jsonl").read_bytes() == before

    run = tmp_path / "run"
    proc = _train(cfg, run, env={"KILL_AT": "20"}, wrapper=KILL_IN_WRITE)
    proc.communicate(timeout=240)
    out = run_cli("train", str(cfg), "train.steps=90", "--output-dir", str(run))
    assert out.returncode == 2
    assert "unfinished run of another config (" in out.stderr, out.stderr
    assert "train.steps: 80 -> 90" in out.stderr
    assert "fusionjax resume" in out.stderr
    # the directory alone resumes; a plugin it needs that is gone is named with its package
    out = run_cli("resume", str(run), env={"FUSIONJAX_DISABLE_PLUGINS": "fusions"})
    assert out.returncode == 2
    assert "this run used plugin 'fusions' from package fusionjax" in out.stderr


class _PoisonAfter:
    """An augmentation making the audio of training batch ``n`` on NaN (the pipeline reads
    examples in order when it has no workers)."""

    def __init__(self, n, batch_size):
        self._first, self._served = (n - 1) * batch_size, 0

    def resolved(self):
        return {}

    def __call__(self, example, rng):
        self._served += 1
        if self._served > self._first:
            example = dict(example, audio=np.full_like(example["audio"], np.nan))
        return example


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    config = copy.deepcopy(RESUMABLE)
    assembly = assemble(config)
    object.__setattr__(assembly, "augmenter", _PoisonAfter(46, assembly.train.batch_size))
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as e:
        train(assembly, run, log=lambda s: None)
    message = str(e.value)
    # NaN audio: the loss itself may stay finite (XLA:CPU's fused ReLU clamps NaN to 0),
    # but the weight gradients carry the NaN into the parameters, checked at each log point
    assert ("loss became NaN/Inf at step 46" in message
            or "parameters became NaN/Inf between steps 41 and 50" in message), message
    assert "last good checkpoint is step 40" in message
    assert _steps(run) == [20, 40] or _steps(run) == [40]  # nothing after 40 was saved
    assert not RunDir(run).is_finished()
    assert max(r["step"] for r in _records(run)) == 40


def test_early_stopping_keeps_the_best_evaluation(tmp_path):
    config = copy.deepcopy(RESUMABLE)
    config["train"].update(steps=200, eval_every=10, early_stopping={
        "metric": "accuracy", "patience": 2, "min_delta": 0.5})  # nothing beats the first by 0.5
    lines = []
    result = train(assemble(config), tmp_path / "run", log=lines.append)
    records = _records(tmp_path / "run")
    evals = [r for r in records if r["split"] == "test"]
    assert [r["step"] for r in evals] == [10, 20, 30, 30]  # 3 evaluations, then the final one
    assert any("early stopping at step 30" in line for line in lines)
    assert evals[-1] | {"step": 10} == evals[0]  # the final model is step 10's, restored
    assert result.eval_metrics == {k: v for k, v in evals[0].items() if k not in ("step", "split")}


def test_early_stopping_settings_are_checked(tmp_path):
    config = copy.deepcopy(RESUMABLE)
    config["train"]["early_stopping"] = {"metric": "acuracy"}
    with pytest.raises(ConfigError) as e:
        train(assemble(config), tmp_path / "run", log=lambda s: None)
    assert e.value.key == "train.early_stopping.metric" and "did you mean 'accuracy'" in str(e.value)
    config["train"]["early_stopping"] = {"patience": 3}
    del config["train"]["eval_every"]
    with pytest.raises(ConfigError) as e:
        assemble(config)
    assert e.value.key == "train.early_stopping" and "train.eval_every" in str(e.value)
    config["train"].update(eval_every=15)
    with pytest.raises(ConfigError) as e:
        assemble(config)
    assert e.value.key == "train.eval_every"


def test_a_run_killed_after_its_last_checkpoint_finishes_on_resume(uninterrupted, tmp_path):
    """Killed between the final checkpoint and the final parameters: resume trains no step."""
    import shutil

    cfg, reference = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(RunDir(run).model_dir)
    out = run_cli("resume", str(run))
    assert out.returncode == 0, out.stderr
    assert "checkpoint of step 80" in out.stdout
    assert _records(run) == _records(reference)
    assert _final(run) == _final(reference)
