"""The benchmark configs build the peers' networks, and the GPU table's MFU arithmetic.

Cheap: assembly is abstract (``nnx.eval_shape``, nothing allocated or trained).
"""

from __future__ import annotations

import importlib.util
import json
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
mfu_table = _load("mfu_table")


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
        "encoders", "fusions", "heads"}
    batch = next(assembly.dataset.batches("train", 4, seed=0, shuffle=False, drop_remainder=True))
    assert batch["image"].shape == (4, 64, 64, 3) and batch["text"].max() < 32000
    assert (batch["text"][:, 0] != 0).all()  # every row has a real token


def _line(impl, policy, step_ms, **extra):
    return {"impl": impl, "workload": "large", "device": "gpu", "dtype": policy, "batch": 1024,
            "steps": 20, "compile_s": 30.0, "samples_per_s": 1024 / (step_ms / 1000),
            "step_ms_median": step_ms, "repeats": 3, "policy": policy, "run": impl, **extra}


def test_mfu_table(tmp_path):
    rows = [_line("torch-eager", "float32", 50.0),
            _line("fusionjax", "float32", 100.0, flops_per_step=4e12, flops_per_step_as_run=4.1e12,
                  flops_per_step_xla=3.5e12),
            _line("fusionjax", "bfloat16", 20.0, flops_per_step=4e12)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "matmul_peak.json").write_text(json.dumps(
        {"impl": "matmul-bf16", "device_kind": "NVIDIA H200", "n": 8192, "iters": 50,
         "repeats": 5, "tflops": 800.0, "tflops_max": 810.0}) + "\n")
    (tmp_path / "status.jsonl").write_text(
        json.dumps({"impl": "torch-compile", "policy": "tf32", "status": "timeout",
                    "reason": "after 200s", "seconds": 200}) + "\n")
    mfu_table.main([str(tmp_path)])
    text = (tmp_path / "table.md").read_text()
    body = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    # 4e12 FLOP / 0.1 s = 40 TFLOP/s = 5% of 800; fusionjax first, float32 before bfloat16
    assert body[0].startswith("| fusionjax | float32 | 10240.0 | 100.0 | 30.0 | 40.00 | 5.00% |")
    assert body[1].startswith("| fusionjax | bfloat16 |") and "| 200.00 | 25.00% |" in body[1]
    # a peer borrows fusionjax's float32 count (marked), a failed run still gets its row
    assert body[2].startswith("| torch-eager | float32 |") and "| 80.00 | 10.00% ¹ |" in body[2]
    assert body[3].startswith("| torch-compile | tf32 | timeout: after 200s")
    assert "800.0 TFLOP/s" in text and "4.00 TFLOP at batch 1024" in text
