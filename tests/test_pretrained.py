"""A network nobody here trained: silero-vad's pretrained 16 kHz voice-activity network,
whose weights the silero-vad wheel ships, as the example plugin ``examples/silero_vad``.

The plugin is pip-installed for real (``--no-deps --no-build-isolation --no-index
--target``, a copy of it, as in test_third_party_plugin.py) and seen by subprocesses
through ``PYTHONPATH`` only.  The CLI finds the weights inside the installed silero-vad
distribution (``init_from``'s ``package``) and refuses 8 kHz data with the fix; the
plugin's own tests, run against the install, check the network against silero's ONNX
model through onnxruntime and against its tinygrad port, per chunk, to 1e-4, and train it
frozen in a fusion with an image encoder.

Needs the dev dependencies ``onnxruntime`` and ``silero-vad`` (its weights; the plugin
never imports it, nor torch); skipped without them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import ROOT, install_copy, plugin_environment

PLUGIN = ROOT / "examples" / "silero_vad"
CONFIG = "examples/silero_vad/avdigits_silero.toml"  # relative to ROOT, as in its README
PLUGIN_TESTS = ("test_contract", "test_needs_16_khz_and_says_how", "test_matches_silero_onnx_model",
                "test_matches_silero_tinygrad_port_on_the_packaged_file",
                "test_fused_with_an_image_encoder_it_helps_and_stays_frozen")


def _missing() -> str | None:
    try:
        metadata.distribution("silero-vad")
    except metadata.PackageNotFoundError:
        return "silero-vad is not installed (pip install --no-deps silero-vad==6.2.3)"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """``(copy of the plugin, the install target)``."""
    src, target = install_copy(PLUGIN, tmp_path_factory.mktemp("silero_vad"))
    assert (target / "fusionjax_silero_vad" / "encoder.py").exists()
    return src, target


def _fusionjax(*args: str, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionjax", *args], capture_output=True, text=True,
                          env=plugin_environment(site), cwd=ROOT, timeout=300)


def test_config_check_finds_the_weights_inside_the_package(installed):
    r = _fusionjax("config", "check", CONFIG, site=installed[1])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "silero_vad" in r.stdout and "OK" in r.stdout


def test_8_khz_data_is_refused_with_the_fix(installed):
    r = _fusionjax("config", "check", CONFIG, "data.sample_rate=8000", "data.num_samples=6000",
                   site=installed[1])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "model.encoders.audio.sample_rate" in r.stderr and "data.sample_rate=16000" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_plugins_own_tests_pass_against_the_install(installed, tmp_path):
    """The ONNX check, the tinygrad check and the frozen fusion run, each PASSED (none
    skipped: the weights and onnxruntime are there).  ``-P``: the package comes from the
    install only."""
    src, site = installed
    r = subprocess.run([sys.executable, "-P", "-m", "pytest", "-v", "-s", "-p", "no:cacheprovider",
                        "--basetemp", str(tmp_path / "pytest"), str(src / "tests")],
                       capture_output=True, text=True, env=plugin_environment(site), cwd=tmp_path,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    for test in PLUGIN_TESTS:
        assert f"tests/test_silero.py::{test} " in r.stdout, r.stdout[-4000:]
    assert " skipped" not in r.stdout and " failed" not in r.stdout, r.stdout[-4000:]
    # what they measured (-s): the JAX network against silero's two implementations
    assert "max |JAX - onnxruntime|" in r.stdout and "max |JAX - tinygrad|" in r.stdout
