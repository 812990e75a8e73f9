"""The plugin template (examples/plugin_template) as a user gets it: pip-installed
for real, then discovered, validated and trained through the ``fusionjax`` CLI, and its
own tests (``examples/plugin_template/tests``: the contract kit's ``check_plugin`` and a
short training run of its example config) run against the installed copy.

The package is installed once per module, with ``pip install --no-deps
--no-build-isolation --no-index --target <tmp>/site`` (no network: the build
backend, setuptools >= 77, comes from this environment), and made visible to each
subprocess with ``PYTHONPATH=<tmp>/site`` only.  pip builds in the source
directory (``build/``, ``*.egg-info``), so it installs a copy of the template:
concurrent test runs never share a build tree and the checkout stays clean.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, install_copy, plugin_environment

TEMPLATE = ROOT / "examples" / "plugin_template"
CONFIG = "examples/plugin_template/bow_text.toml"  # relative to ROOT, as in its README
PACKAGE = "fusionjax-bow-text"
VERSION = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())["project"]["version"]
# small and quick: a smoke test of the full train path, not of learning
SMALL = ["train.steps=3", "train.log_every=1", "data.train_size=64", "data.test_size=32",
         "train.batch_size=16"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """``(copy of the template, the install target)``."""
    src, target = install_copy(TEMPLATE, tmp_path_factory.mktemp("bow_text"))
    for module in ("__init__", "encoder", "fusion", "dataset"):
        assert (target / "fusionjax_bow_text" / f"{module}.py").exists()
    assert not (target / "tests").exists()  # the tests are not part of the package
    return src, target


@pytest.fixture(scope="module")
def site(installed) -> Path:
    return installed[1]


def environment(site: Path | None = None, **env: str) -> dict[str, str]:
    """This environment, seeing the plugin only via ``site``."""
    return plugin_environment(site, **env)


def fusionjax(*args: str, site: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """``python -m fusionjax ARGS`` from the repo root, seeing the plugin only via ``site``."""
    return subprocess.run([sys.executable, "-m", "fusionjax", *args], capture_output=True,
                          text=True, env=environment(site, **env), cwd=ROOT, timeout=300)


def plugins(site: Path | None = None, **env: str) -> dict[str, dict]:
    r = fusionjax("plugins", "list", "--json", site=site, **env)
    assert r.returncode == 0, r.stderr
    return {p["name"]: p for p in json.loads(r.stdout)}


# ---------------------------------------------------------------- discovery, end to end


def test_not_visible_without_the_install():
    listed = plugins()
    assert "encoders" in listed  # the listing itself works
    assert "bow_text" not in listed, (
        "fusionjax-bow-text is installed in this environment itself; uninstall it "
        "(pip uninstall fusionjax-bow-text), or this test proves nothing")


def test_plugins_list_shows_it_active(site):
    info = plugins(site)["bow_text"]
    assert info["package"] == PACKAGE
    assert info["version"] == VERSION
    assert info["status"] == "active"
    assert info["components"] == ["encoder:bow_text", "fusion:weighted_sum", "dataset:topics"]
    assert info["error"] is None


def test_components_list_finds_the_encoder(site):
    r = fusionjax("components", "list", "--kind", "encoder", "--json", site=site)
    assert r.returncode == 0, r.stderr
    specs = {c["name"]: c for c in json.loads(r.stdout)}
    assert {c["kind"] for c in specs.values()} == {"encoder"}
    bow = specs["bow_text"]
    assert bow["qualified_name"] == "bow_text/bow_text"
    assert (bow["plugin"], bow["package"], bow["version"]) == ("bow_text", PACKAGE, VERSION)
    assert bow["summary"]


def test_config_check(site):
    r = fusionjax("config", "check", CONFIG, site=site)
    assert r.returncode == 0, r.stderr
    assert "bow_text" in r.stdout
    assert "OK" in r.stdout


def test_bad_value_names_its_key_path(site):
    r = fusionjax("config", "check", CONFIG, "model.encoders.text.features=0", site=site)
    assert r.returncode == 2
    assert "model.encoders.text.features: must be >= 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_train(site, tmp_path):
    run = tmp_path / "run"
    r = fusionjax("train", CONFIG, *SMALL, "--output-dir", str(run), site=site)
    assert r.returncode == 0, r.stdout + r.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["split"] for x in records] == ["train", "train", "test"]  # steps 2, 3; then eval
    assert all(np.isfinite(x["loss"]) for x in records)
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["model"]["encoders"]["text"]["type"] == "bow_text/bow_text"
    facts = json.loads((run / "run.json").read_text())
    assert facts["plugins"]["bow_text"] == {"package": PACKAGE, "version": VERSION,
                                            "status": "active"}


@pytest.mark.parametrize("name", [PACKAGE, "bow_text", "FUSIONJAX_BOW_TEXT"])
def test_disabled_by_package_or_entry_point_name(site, name):
    info = plugins(site, FUSIONJAX_DISABLE_PLUGINS=f"nothing_else,{name}")["bow_text"]
    assert (info["status"], info["components"]) == ("disabled", [])


def test_config_fails_cleanly_when_disabled(site):
    r = fusionjax("config", "check", CONFIG, site=site, FUSIONJAX_DISABLE_PLUGINS=PACKAGE)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "model.encoders.text.type" in r.stderr
    assert "bow_text" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- the template's own tests


def test_the_templates_own_tests_pass_against_the_install(installed, tmp_path):
    """``pytest`` on the template's tests, as its author runs them: the contract kit's
    ``check_plugin("bow_text")`` and a short training run of ``topics.toml``.  ``-P`` keeps
    the working directory off ``sys.path``, so the package comes from the install only."""
    src, site = installed
    r = subprocess.run([sys.executable, "-P", "-m", "pytest", "-v", "-p", "no:cacheprovider",
                        "--basetemp", str(tmp_path / "pytest"), str(src / "tests")],
                       capture_output=True, text=True, env=environment(site), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    for test in ("test_contract", "test_example_config_trains"):
        assert f"tests/test_plugin.py::{test} PASSED" in r.stdout, r.stdout[-4000:]
    assert " failed" not in r.stdout and " skipped" not in r.stdout, r.stdout[-4000:]
