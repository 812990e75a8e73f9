"""Formulations chosen per machine (fusionjax.tuning): timed once per shape and cached on
disk, recorded in run.json, and a resumed run keeps its recorded choices whatever the
cache says now, so that it stays bitwise equal to the uninterrupted run."""

from __future__ import annotations

import copy
import json
import re
import shutil
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from conftest import TINY

from fusionjax import tuning
from fusionjax.assembly import assemble
from fusionjax.rundir import RunDir
from fusionjax.training.loop import train

CONFIG = {**TINY, "train": {**TINY["train"], "steps": 8, "log_every": 4, "checkpoint_every": 4}}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Tuning on, with a cache of its own, and one run that timed its formulations."""
    tmp = tmp_path_factory.mktemp("tuning")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tuning.ENV, "on")
        mp.setenv(tuning.CACHE_ENV, str(tmp / "cache.json"))
        lines: list[str] = []
        _train(tmp / "first", lines.append)
        yield tmp / "cache.json", tmp / "first", lines
    tuning.use({})


def _train(run, log=None):
    return train(assemble(copy.deepcopy(CONFIG)), run, log=log or (lambda s: None))


def _arrays(key):
    """The arrays (their shapes) of a choice's key, ``op f32[32,16,16,1] f32[3,3,1,8]``."""
    return [SimpleNamespace(shape=tuple(map(int, re.findall(r"\d+", a.partition("[")[2]))))
            for a in key.split(" ")[1:]]


def _final(run):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(RunDir(run).final_arrays())]


def test_choices_are_timed_once_per_machine_cached_and_recorded(tuned, tmp_path):
    cache_file, first, lines = tuned
    table = RunDir(first).read_facts()["formulations"]
    ops = {k.split(" ")[0] for k in table}
    assert ops == {"conv2d.forward", "conv2d.input_gradient", "conv2d.weight_gradient",
                   "lstm.recurrence", "max_pool.k2"}
    # the train step's convolutions (batch 32) and the eval step's (its own batch)
    assert any("[32," in k for k in table) and len(table) >= 3 * 4
    cache = json.loads(cache_file.read_text())
    (machine, timed), = cache.items()
    assert machine == tuning.machine() and "cores" in machine
    for key, choice in table.items():
        ms = timed[key]["ms"]
        op = tuning.declared()[key.split(" ")[0]]
        default = op.default_for(*_arrays(key))
        assert timed[key]["default"] == default
        assert set(ms) == set(op.candidates) and choice == tuning.best(op, ms, default)
        assert choice == default or ms[choice] < tuning.MARGIN * ms[default]
    assert any(line.startswith(f"timed the formulations of {len(table)} op shapes") for line in lines)

    again: list[str] = []
    _train(tmp_path / "again", again.append)  # the same shapes: nothing timed again
    assert not any("timed the formulations" in line for line in again)
    assert RunDir(tmp_path / "again").read_facts()["formulations"] == table


def test_a_resumed_run_keeps_its_recorded_choices_bitwise(tuned, tmp_path):
    cache_file, first, _ = tuned
    chosen = RunDir(first).read_facts()["formulations"]
    ops = tuning.declared()
    other = {k: next(c for c in ops[k.split(" ")[0]].candidates if c != v) for k, v in chosen.items()}

    def cache_says(table):
        entries = {k: {"choice": v, "ms": {c: float(c != v) for c in ops[k.split(" ")[0]].candidates}}
                   for k, v in table.items()}
        cache_file.write_text(json.dumps({tuning.machine(): entries}))

    cache_says(other)
    _train(tmp_path / "uninterrupted")
    assert RunDir(tmp_path / "uninterrupted").read_facts()["formulations"] == other
    assert _final(tmp_path / "uninterrupted") != _final(first)  # the choice shows in the bits

    cache_says(other)
    run = tmp_path / "resumed"
    _train(run)
    shutil.rmtree(run / "final_model")
    shutil.rmtree(run / "checkpoints" / "8")  # as if killed after the checkpoint of step 4
    cache_says(chosen)  # this machine would now choose otherwise
    _train(run)
    assert RunDir(run).read_facts()["formulations"] == other
    assert _final(run) == _final(tmp_path / "uninterrupted")


def test_a_choice_timed_among_other_candidates_is_timed_again(tmp_path, monkeypatch):
    """A cache entry from before an op gained a formulation does not hide the new one."""
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "cache.json"))
    op = tuning.Op("test.double", {"add": lambda x: x + x, "mul": lambda x: 2 * x}, default="add")
    key = f"test.double {tuning.signature(np.zeros(3, np.float32))}"
    found = {key: (op, (jax.ShapeDtypeStruct((3,), np.float32),))}
    old = {"choice": "add", "ms": {"add": 1.0}}  # timed when "add" was the only candidate
    (tmp_path / "cache.json").write_text(json.dumps({tuning.machine(): {key: old}}))
    lines: list[str] = []
    assert tuning.tune(found, log=lines.append) in ({key: "add"}, {key: "mul"})
    assert lines and lines[0].startswith("timed the formulations of 1 op shapes")
    entry = json.loads((tmp_path / "cache.json").read_text())[tuning.machine()][key]
    assert set(entry["ms"]) == {"add", "mul"}
    again: list[str] = []
    tuning.tune(found, log=again.append)  # now cached among both: not timed again
    assert not again
