"""Plugin discovery and isolation, with real (temporary) installed distributions."""

import sys
import textwrap
import uuid
import warnings

import pytest
from conftest import run_cli

from fusionjax.errors import PluginError
from fusionjax.plugins import PluginWarning, discover, load_plugins

GOOD = """
from fusionjax.hookspecs import hookimpl

class Thing:
    pass

@hookimpl
def fusionjax_register_components(registrar):
    registrar.fusion("{component}", Thing)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Make fake installed distributions under a temporary site directory."""
    monkeypatch.syspath_prepend(str(tmp_path))
    tag = uuid.uuid4().hex[:8]  # unique module names: nothing leaks between tests
    made = []

    def make(package, plugin, body, version="1.0"):
        module = f"{plugin}_{tag}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
        info = tmp_path / f"{package.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[fusionjax.plugins]\n{plugin} = {module}\n")
        made.append(module)
        return module

    make.load = lambda **kw: load_plugins(discover(path=[str(tmp_path)]), **kw)
    yield make
    for m in made:
        sys.modules.pop(m, None)


def by_name(result):
    return {p.name: p for p in result.plugins}


def test_good_plugin_is_active(site):
    site("pkg-good", "good", GOOD.format(component="blend"), version="2.1")
    res = site.load(strict=False, disabled=[])
    info = by_name(res)["good"]
    assert (info.package, info.version, info.status) == ("pkg-good", "2.1", "active")
    assert info.components == ["fusion:blend"]
    assert res.registry.resolve("fusion", "good/blend").origin.package == "pkg-good"


def test_broken_plugins_are_isolated_and_named(site):
    site("pkg-good", "good", GOOD.format(component="blend"))
    site("pkg-imp", "imports_badly", "import no_such_dependency_abc\n", version="0.3")
    site("pkg-raise", "raises", """
        from fusionjax.hookspecs import hookimpl
        class T: pass
        @hookimpl
        def fusionjax_register_components(registrar):
            registrar.fusion("half_done", T)   # registered, then the hook fails
            raise RuntimeError("boom in hook")
        """)
    site("pkg-unknown", "unknown_hook", """
        from fusionjax.hookspecs import hookimpl
        class T: pass
        @hookimpl
        def fusionjax_register_components(registrar):
            registrar.fusion("sneaky", T)
        @hookimpl
        def fusionjax_register_widgets(registrar):
            pass
        """)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = site.load(strict=False, disabled=[])
    infos = by_name(res)
    assert infos["good"].status == "active"
    assert infos["imports_badly"].status == "error"
    assert "no_such_dependency_abc" in infos["imports_badly"].error
    assert infos["raises"].status == "error" and "boom in hook" in infos["raises"].error
    assert infos["unknown_hook"].status == "error"
    assert "fusionjax_register_widgets" in infos["unknown_hook"].error
    # all-or-nothing: nothing of a failed plugin is registered
    assert res.registry.names("fusion") == ["blend", "good/blend"]
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert len(messages) == 3
    assert any("'imports_badly'" in m and "pkg-imp 0.3" in m for m in messages)


def test_strict_mode_raises(site):
    site("pkg-imp", "imports_badly", "import no_such_dependency_abc\n")
    with pytest.raises(PluginError, match="imports_badly"):
        site.load(strict=True, disabled=[])


def test_disabled_plugins_are_never_imported(site):
    by_ep = site("pkg-one", "one", "raise SystemExit('must not be imported')\n")
    by_pkg = site("pkg-two", "two", "raise SystemExit('must not be imported')\n")
    res = site.load(strict=True, disabled=["one", "PKG_two"])  # names are normalised
    assert [p.status for p in res.plugins] == ["disabled", "disabled"]
    assert by_ep not in sys.modules and by_pkg not in sys.modules


def test_load_order_is_sorted(site):
    for name in ("zeta", "alpha", "mid"):
        site(f"pkg-{name}", name, GOOD.format(component=name))
    res = site.load(strict=False, disabled=[])
    assert [p.name for p in res.plugins] == ["alpha", "mid", "zeta"]


def test_import_fusionjax_loads_no_plugin_and_no_jax():
    import subprocess

    code = ("import sys, fusionjax; "
            "assert 'jax' not in sys.modules, 'jax imported'; "
            "assert not [m for m in sys.modules if m.startswith('fusionjax_plugins')]; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_cli_lists_bundled_plugins_and_honours_disable():
    import json

    out = run_cli("plugins", "list", "--json")
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    for name in ("encoders", "fusions", "heads", "datasets", "kernels"):
        assert plugins[name]["status"] == "active"
        assert plugins[name]["package"] == "fusionjax"
    assert "encoder:spectrogram_audio" in plugins["encoders"]["components"]
    assert "fast_path:lstm" in plugins["kernels"]["components"]

    out = run_cli("plugins", "list", "--json", env={"FUSIONJAX_DISABLE_PLUGINS": "fusions"})
    assert {p["name"]: p["status"] for p in json.loads(out.stdout)}["fusions"] == "disabled"
    out = run_cli("components", "list", "--json", env={"FUSIONJAX_DISABLE_PLUGINS": "fusions"})
    kinds = {c["kind"] for c in json.loads(out.stdout)}
    assert "fusion" not in kinds and "encoder" in kinds


def test_disable_env_var_tolerates_spaces(site, monkeypatch):
    site("pkg-one", "one", GOOD.format(component="x1"))
    site("pkg-two", "two", GOOD.format(component="x2"))
    monkeypatch.setenv("FUSIONJAX_DISABLE_PLUGINS", " one , Pkg-Two ")
    res = site.load(strict=False)
    assert [p.status for p in res.plugins] == ["disabled", "disabled"]


FAST = """
from fusionjax.hookspecs import hookimpl

@hookimpl
def fusionjax_register_components(registrar):
    registrar.fast_path("{name}", "a faster formulation", platforms=("cpu",))
    {after}
"""


def test_fast_path_failures_are_recorded_like_any_plugin_failure(site):
    """Fast paths come through the plugin hook: a plugin that fails after declaring one
    keeps none of them; a second declaration of a name is that plugin's error; both are
    listed with their package, and their fast paths are off."""
    site("pkg-fast", "fast", FAST.format(name="fused_op", after="pass"))
    site("pkg-broken", "broken", FAST.format(name="other_op", after="raise RuntimeError('boom')"))
    site("pkg-twice", "twice", FAST.format(name="fused_op", after="pass"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = site.load(strict=False, disabled=[])
    infos = by_name(res)
    assert infos["fast"].status == "active" and infos["fast"].components == ["fast_path:fused_op"]
    assert set(res.fast_paths) == {"fused_op"}
    assert res.fast_paths["fused_op"].origin.package == "pkg-fast"
    assert infos["broken"].status == "error" and "RuntimeError: boom" in infos["broken"].error
    assert infos["twice"].status == "error" and "already declares" in infos["twice"].error
    assert "pkg-fast" in infos["twice"].error
    assert sum(issubclass(w.category, PluginWarning) for w in caught) == 2
    with pytest.raises(PluginError, match="pkg-broken"):
        site.load(strict=True, disabled=["twice"])


def test_the_fast_paths_of_a_disabled_plugin_are_off(monkeypatch):
    from fusionjax import fast_paths, plugins

    monkeypatch.setenv("FUSIONJAX_DISABLE_PLUGINS", "kernels")
    plugins.reset()
    try:
        assert "lstm" not in fast_paths.declared() and not fast_paths.enabled("lstm")
        assert fast_paths.enabled("malloc")  # the core's own
    finally:
        monkeypatch.delenv("FUSIONJAX_DISABLE_PLUGINS")
        plugins.reset()
    assert fast_paths.enabled("lstm")


def test_a_package_cannot_displace_or_impersonate_a_bundled_plugin(site):
    """The identity rule: the bundled package owns its plugin names; two other packages
    with one name load neither, and `plugins list` says why."""
    site("evil-pkg", "fusions", GOOD.format(component="concat"))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        res = load_plugins(discover(), strict=False, disabled=[])  # every installed one, the impostor too
    rows = {p.package: p for p in res.plugins if p.name == "fusions"}
    assert {k: p.status for k, p in rows.items()} == {"fusionjax": "active", "evil-pkg": "error"}
    assert "belongs to the bundled plugin of package fusionjax" in rows["evil-pkg"].error
    assert res.registry.resolve("fusion", "fusions/concat").origin.package == "fusionjax"
    assert res.registry.resolve("fusion", "sum").origin.package == "fusionjax"

    # two third-party packages, one name: neither loads, both listed; disabling one settles it
    site("pkg-a", "shared", GOOD.format(component="alpha"))
    site("pkg-b", "shared", GOOD.format(component="beta"))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        res = site.load(strict=False, disabled=["evil-pkg"])
    shared = {p.package: p for p in res.plugins if p.name == "shared"}
    assert {p.status for p in shared.values()} == {"error"}
    assert "declared by package pkg-a and by pkg-b" in shared["pkg-a"].error
    res = site.load(strict=False, disabled=["evil-pkg", "pkg-b"])
    assert {s.origin.package for s in res.registry if s.origin.plugin == "shared"} == {"pkg-a"}


def test_json_output_survives_a_plugin_that_prints(site, monkeypatch, capsys):
    """--json stays valid JSON whatever a plugin prints; `plugins list` lists a broken
    plugin even in strict mode (it is the tool to diagnose one)."""
    import json

    from fusionjax import plugins
    from fusionjax.cli import main

    site("noisy-pkg", "noisy", "print('hello from a plugin')\n" + GOOD.format(component="loud"))
    site("broken-pkg", "broken", "raise ImportError('no such thing')\n")
    monkeypatch.setenv("FUSIONJAX_STRICT_PLUGINS", "1")
    plugins.reset()
    try:
        assert main(["plugins", "list", "--json"]) == 0
        out = capsys.readouterr()
        listed = {p["name"]: p for p in json.loads(out.out)}
        assert listed["noisy"]["status"] == "active" and "hello from a plugin" in out.err
        assert listed["broken"]["status"] == "error" and "no such thing" in listed["broken"]["error"]
        monkeypatch.delenv("FUSIONJAX_STRICT_PLUGINS")
        plugins.reset()
        assert main(["components", "list", "--kind", "fusion", "--json"]) == 0
        assert "noisy/loud" in {c["qualified_name"] for c in json.loads(capsys.readouterr().out)}
    finally:
        plugins.reset()


def test_a_lazy_target_that_fails_names_the_config_key(site, tiny_config):
    from fusionjax.assembly import assemble
    from fusionjax.errors import ConfigError

    site("lazy-pkg", "lazy", """
        from fusionjax.hookspecs import hookimpl

        @hookimpl
        def fusionjax_register_components(registrar):
            registrar.fusion("ghost", "no_such_module_anywhere:Ghost")
    """)
    res = load_plugins(discover(), strict=False, disabled=[])  # the bundled ones and this one
    tiny_config["model"]["fusion"] = {"type": "ghost"}
    with pytest.raises(ConfigError) as e:
        assemble(tiny_config, registry=res.registry)
    assert e.value.key == "model.fusion.type"
    assert "lazy/ghost" in str(e.value) and "package lazy-pkg" in str(e.value)
    assert "No module named 'no_such_module_anywhere'" in str(e.value)
