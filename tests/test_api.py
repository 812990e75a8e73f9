"""The Python API, as a notebook uses it: the README's snippet runs exactly as written,
and ``fj.train`` is the function whatever was imported first."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- python-api:[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert found, "README.md lost its <!-- python-api --> block"
    return found.group(1)


def test_the_readme_snippet_runs_as_written(tmp_path):
    code = readme_snippet()
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # its paths are the repository's
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    metrics, answer = out.stdout.strip().splitlines()[-2:]
    assert "'accuracy'" in metrics
    assert answer.startswith("{'kind': 'class', 'answer': ") and "'absent': []" in answer
    assert (tmp_path / "runs" / "notebook" / "final_model").is_dir()


def test_fj_train_is_the_function_after_any_import_order():
    code = ("import fusionjax.training.loop, fusionjax.training.step\n"
            "import fusionjax as fj\n"
            "from fusionjax import training\n"
            "assert callable(fj.train) and fj.train.__module__ == 'fusionjax.training.loop', fj.train\n"
            "assert fj.load_run.__module__ == 'fusionjax.rundir'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
