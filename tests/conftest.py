"""Shared fixtures: small component settings and a tiny three-modality config."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Formulations are timed per machine at a run's first compile (fusionjax.tuning): the
# suite keeps the defaults, but tests/test_tuning.py, which switches it on
os.environ.setdefault("FUSIONJAX_TUNING", "off")
# Dozens of tests start `fusionjax train` in a new process, each compiling the same tiny
# steps: one persistent compilation cache for the session (and the processes it starts)
# compiles each once. A cached executable is the same program, so bitwise comparisons hold.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="fusionjax-tests-xla-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

ROOT = Path(__file__).resolve().parents[1]

# A three-modality config small enough to compile and train in seconds.
TINY = {
    "model": {
        "encoders": {
            "image": {"type": "cnn_image", "channels": [8, 16], "dense": 32},
            "text": {"type": "lstm_text", "embed_dim": 16, "hidden": 32},
            "audio": {"type": "spectrogram_audio", "n_fft": 128, "hop_length": 64, "n_mels": 32,
                      "channels": [8, 16], "dense": 32},
        },
        "fusion": {"type": "concat"},
        "head": {"type": "classification", "hidden": [32]},
    },
    "data": {"type": "synthetic", "train_size": 512, "test_size": 256, "image_size": 16,
             "seq_len": 12, "vocab_size": 100, "num_samples": 2000, "num_classes": 4},
    "train": {"steps": 60, "batch_size": 32, "log_every": 20, "seed": 0},
}


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(TINY)


def run_cli(*args: str, env: dict | None = None, cwd: Path = ROOT):
    """``python -m fusionjax ARGS`` in a subprocess (as a user runs it)."""
    import subprocess

    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-m", "fusionjax", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=300)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A small trained digit_qa run (30 steps, as `fusionjax train` writes it), trained once
    and shared by the tests that evaluate, predict, serve and show a run: read-only, so a
    test that damages a run copies it first."""
    run = tmp_path_factory.mktemp("runs") / "qa"
    out = run_cli("train", str(ROOT / "examples" / "digit_qa.toml"), "train.steps=30",
                  "train.log_every=10", "data.train_size=2000", "data.test_size=300",
                  "--output-dir", str(run))
    assert out.returncode == 0, out.stderr[-3000:]
    return run



def install_copy(plugin: Path, tmp: Path) -> tuple[Path, Path]:
    """A copy of the example plugin folder ``plugin`` pip-installed (no dependencies,
    offline, no build isolation) into a target folder of its own, as a user installs a
    third-party plugin: ``(copy, target)``.  Put ``target`` on the path with
    :func:`plugin_environment`."""
    import shutil
    import subprocess

    pytest.importorskip("setuptools", minversion="77",
                        reason="pip install --no-build-isolation needs setuptools >= 77")
    src = tmp / plugin.name
    shutil.copytree(plugin, src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    target = tmp / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--no-input", "-q",
         "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300, cwd=tmp,
    )
    assert r.returncode == 0, f"pip install failed:\n{r.stdout}\n{r.stderr}"
    return src, target


def plugin_environment(site: Path | None = None, **env: str) -> dict[str, str]:
    """This environment, seeing installed plugins only via ``site`` (none: only the
    bundled ones and what the venv has)."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "FUSIONJAX_DISABLE_PLUGINS", "FUSIONJAX_STRICT_PLUGINS")}
    full_env.setdefault("JAX_PLATFORMS", "cpu")
    if site is not None:
        full_env["PYTHONPATH"] = str(site)
    full_env.update(env)
    return full_env
