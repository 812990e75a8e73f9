"""The benchmark configs build the peers' networks.

Cheap: assembly is abstract (``nnx.eval_shape``, nothing allocated or trained).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


workload_data = _load("workload_data")


@pytest.mark.parametrize("workload, params", [("small", 1_320_202), ("large", 20_612_234)])
def test_workload_config_has_the_peers_parameter_count(workload, params):
    assembly = workload_data.assemble_workload(workload)
    assert sum(assembly.param_counts().values()) == params == workload_data.PEER_PARAMS[workload]
    assert assembly.train.batch_size == {"small": 64, "large": 1024}[workload]


def test_large_inputs_are_the_reference_shapes():
    assembly = workload_data.assemble_workload("large")
    shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in assembly.example_batch(2).items()}
    assert shapes == {"image": ((2, 64, 64, 3), "float32"), "text": ((2, 128), "int32"),
                      "audio": ((2, 16000), "float32"), "label": ((2,), "int32")}
    # the model is bundled components only; the data set just declares the shapes
    assert {p.spec.origin.plugin for p in assembly.parts} == {
        "cnn_image", "lstm_text", "spectrogram_audio", "basic_fusions", "classification"}
    batch = next(assembly.dataset.batches("train", 4, seed=0, shuffle=False, drop_remainder=True))
    assert batch["image"].shape == (4, 64, 64, 3) and batch["text"].max() < 32000
    assert (batch["text"][:, 0] != 0).all()  # every row has a real token
