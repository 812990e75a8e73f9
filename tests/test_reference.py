"""docs/config.md's generated parts (the ``[train]`` table, the bundled components) are
what ``fusionjax.reference`` renders from the code, and the code documents every parameter."""

from __future__ import annotations

from conftest import ROOT

from fusionjax import reference
from fusionjax.registry import ComponentSpec, PluginOrigin

PAGE = ROOT / "docs" / "config.md"
BUNDLED = PluginOrigin("tiny_plugin", "fusionjax", "0.1.0")


def test_config_reference_is_generated_from_the_code():
    text = PAGE.read_text(encoding="utf-8")
    assert reference.update(text) == text, (
        "docs/config.md is out of date: run `python -m fusionjax.reference docs/config.md`")
    for block in reference.BLOCKS:  # the markers are there, once each, with content
        assert text.count(f"<!-- BEGIN GENERATED: {block} -->") == 1
    names = [spec.name for spec in reference.bundled_specs()]
    assert {"cnn_image", "concat", "transformer", "classification", "manifest"} <= set(names)
    for spec in reference.bundled_specs():
        assert f"`{spec.name}`" in text and f"`{spec.qualified_name}`" in text


def test_every_bundled_parameter_and_train_field_is_described():
    assert reference.problems() == []
    specs = reference.bundled_specs()
    assert {spec.kind for spec in specs} == set(reference.KIND_TITLES)
    text = reference.components_markdown(specs) + reference.train_markdown()
    assert reference.UNDOCUMENTED not in text
    assert "*injected*" in text and "*from the data set*" in text


class DescribesAMissingParameter:
    """A tiny fusion whose docstring describes ``depth``, which it does not take.

    Parameters:
        in_features: Encoder output width per modality.
        width: Output width.
        depth: Not a parameter at all.
    """

    def __init__(self, in_features: dict, *, width: int = 4, rngs=None):
        pass


class LacksADescription:
    """A tiny head that does not describe ``temperature``.

    Parameters:
        in_features: The fusion's output width.
    """

    test_settings = {"temperature": 2.0}

    def __init__(self, in_features: int, *, temperature: float = 1.0, rngs=None):
        pass


class ThirdParty:
    def __init__(self, input_shape: tuple[int, ...], *, size: int = 3, rngs=None):
        pass


def test_the_generator_catches_drift(tmp_path):
    extra = ComponentSpec("fusion", "tiny_fusion", DescribesAMissingParameter, BUNDLED, "tiny")
    lacking = ComponentSpec("head", "tiny_head", LacksADescription, BUNDLED, "tiny")
    (extra_problem,) = reference.component_problems(extra)
    (lacking_problem,) = reference.component_problems(lacking)
    for problem, name, cls in ((extra_problem, "depth", DescribesAMissingParameter),
                               (lacking_problem, "temperature", LacksADescription)):
        assert f"'{name}'" in problem and cls.__name__ in problem and __name__ in problem
    assert "tiny_plugin/tiny_fusion" in extra_problem and "not a parameter" in extra_problem
    assert "tiny_plugin/tiny_head" in lacking_problem and "no description" in lacking_problem
    try:
        reference.components_markdown([extra, lacking])
    except reference.ReferenceDocError as e:
        assert e.problems == [extra_problem, lacking_problem]
    else:
        raise AssertionError("an undocumented bundled parameter must stop the generator")

    # a third-party component need not document anything
    other = ComponentSpec("encoder", "other", ThirdParty, PluginOrigin("other", "other-pkg", "1"), "x")
    assert reference.component_problems(other) == []
    section = reference.component_markdown(other)
    assert "### Encoder `other`" in section and "| `input_shape` |" in section
    (row,) = [line for line in section.splitlines() if line.startswith("| `size`")]
    assert [c.strip() for c in row.strip("|").split("|")] == ["`size`", "`int`", "`3`",
                                                             reference.UNDOCUMENTED]

    # the command: a stale page fails --check with the command to run, and is rewritten
    page = tmp_path / "config.md"
    stale = PAGE.read_text(encoding="utf-8").replace("Number of optimiser steps.", "Steps.")
    page.write_text(stale, encoding="utf-8")
    said: list[str] = []
    assert reference.main(["--check", str(page)], out=said.append) == 1
    assert said == [f"{page} is out of date: run `python -m fusionjax.reference {page.as_posix()}`"]
    assert reference.main([str(page)], out=said.append) == 0
    assert page.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")
    assert reference.main(["--check", str(page)], out=said.append) == 0
    page.write_text("# no markers\n", encoding="utf-8")
    assert reference.main(["--check", str(page)], out=said.append) == 1
    assert "BEGIN GENERATED: train" in said[-1] and "Traceback" not in said[-1]
