import pytest

from fusionjax.errors import ComponentError
from fusionjax.registry import ComponentSpec, PluginOrigin, Registry


class A:
    pass


class B:
    pass


def spec(kind, name, plugin, target=A, package=None, version=None):
    return ComponentSpec(kind, name, target, PluginOrigin(plugin, package, version))


def test_short_and_qualified_names_resolve():
    reg = Registry()
    reg.add(spec("fusion", "concat", "basic", package="pkg-a", version="1.0"))
    assert reg.resolve("fusion", "concat").load() is A
    assert reg.resolve("fusion", "basic/concat").load() is A
    assert reg.names("fusion") == ["concat", "basic/concat"]


def test_collision_is_never_silent():
    reg = Registry()
    reg.add(spec("fusion", "concat", "basic", A, "pkg-a", "1.0"))
    reg.add(spec("fusion", "concat", "fancy", B, "pkg-b", "2.3"))
    # the first registration was not overwritten, and qualified names still work
    assert reg.resolve("fusion", "basic/concat").load() is A
    assert reg.resolve("fusion", "fancy/concat").load() is B
    with pytest.raises(ComponentError) as e:
        reg.resolve("fusion", "concat")
    msg = str(e.value)
    assert "ambiguous" in msg
    assert "pkg-a 1.0" in msg and "pkg-b 2.3" in msg
    assert "'basic'" in msg and "'fancy'" in msg
    # the short name is not offered as a choice any more
    assert reg.names("fusion") == ["basic/concat", "fancy/concat"]


def test_same_plugin_registering_twice_is_an_error():
    reg = Registry()
    reg.add(spec("head", "cls", "p"))
    with pytest.raises(ComponentError, match="twice"):
        reg.add(spec("head", "cls", "p"))


def test_unknown_name_suggests_and_lists():
    reg = Registry()
    reg.add(spec("encoder", "cnn_image", "img"))
    reg.add(spec("encoder", "lstm_text", "txt"))
    with pytest.raises(ComponentError) as e:
        reg.resolve("encoder", "cnn_imag")
    msg = str(e.value)
    assert "did you mean 'cnn_image'" in msg
    assert "lstm_text" in msg  # what is available
    with pytest.raises(ComponentError, match="unknown component kind 'widget'"):
        reg.resolve("widget", "x")


def test_lazy_target_import_failure_names_plugin_and_package():
    reg = Registry()
    reg.add(spec("encoder", "broken", "brk", "no_such_module_xyz:Thing", "brk-pkg", "0.1"))
    with pytest.raises(ComponentError) as e:
        reg.resolve("encoder", "broken").load()
    assert "brk-pkg 0.1" in str(e.value) and "no_such_module_xyz" in str(e.value)
