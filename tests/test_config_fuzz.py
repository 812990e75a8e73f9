"""Hostile configs: the valid tiny config and the examples, corrupted at random, are
always answered by ``fusionjax config check`` with exit 2 and a short message (or exit
0 when the corruption happens to leave a valid config), never a traceback, and fast.

Corruptions: wrong types, non-string keys, huge strings and keys, deeply nested values,
unknown section/parameter/component names, misspelt keys, non-finite floats, ints
outside int64, deleted keys, and YAML alias bombs and self-referencing aliases.  Each
case is written as a TOML, YAML or JSON file by the flow writer below (every format can
hold every corruption it writes, raw nesting included) and checked in-process; a few
run through a real ``python -m fusionjax`` as well.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TINY, run_cli

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fusionjax.cli import main  # noqa: E402
from fusionjax.config import load_config  # noqa: E402

MAX_STDERR = 4096 + 200  # ConfigError caps its message at 4 kB; the CLI adds its prefix
# A refused config takes milliseconds; a valid one is assembled (~1-2 s alone, 9 s seen
# with three test workers on 2 cores): bounds against a hang or a compute, not timings
REFUSED_SECONDS, VALID_SECONDS = 8.0, 30.0
BASES = {"tiny": TINY, **{p.stem: load_config(p) for p in sorted((ROOT / "examples").glob("*.toml"))}}
FORMATS = ("toml", "yaml", "json")


# ---------------------------------------------------------------- writing any format

@dataclass(frozen=True)
class Raw:
    """Text written as it is (per format): nesting too deep for a recursive writer, and
    YAML anchors and aliases."""

    toml: str | None
    yaml: str
    json: str | None


def _yaml_float(x: float) -> str:
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    text = repr(x)
    if "e" in text and "." not in text.split("e")[0]:  # PyYAML's floats need a dot
        text = text.replace("e", ".0e", 1)
    return text


def _scalar(x: Any, fmt: str) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if x is None:
        assert fmt != "toml"
        return "null"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if fmt == "yaml":
            return _yaml_float(x)
        if math.isfinite(x):
            return repr(x)
        return {"toml": {"inf": "inf", "-inf": "-inf", "nan": "nan"},
                "json": {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}}[fmt][repr(x)]
    assert isinstance(x, str)
    return json.dumps(x, ensure_ascii=fmt == "json")  # TOML and YAML: no surrogate-pair escapes


def dump(value: Any, fmt: str) -> str:
    """``value`` in flow syntax: JSON, a YAML flow mapping, or TOML inline tables."""
    if isinstance(value, Raw):
        text = getattr(value, fmt)
        assert text is not None, fmt
        return text
    if isinstance(value, dict):
        sep = " = " if fmt == "toml" else ": "
        items = []
        for k, v in value.items():
            assert isinstance(k, str) or fmt == "yaml", (k, fmt)
            key = _scalar(k, fmt)
            if fmt == "yaml" and len(key) > 1000:  # YAML: an implicit key is at most 1024 chars
                key = f"? {key} "
            items.append(key + sep + dump(v, fmt))
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dump(v, fmt) for v in value) + "]"
    return _scalar(value, fmt)


def write(config: dict, fmt: str, path: Path) -> Path:
    if fmt == "toml":  # a document of top-level keys, each an inline value
        text = "".join(f"{_scalar(k, fmt)} = {dump(v, fmt)}\n" for k, v in config.items())
    else:
        text = dump(config, fmt) + "\n"
    path = path.with_suffix(f".{fmt}")
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- corruptions

def deep(depth: int, kind: str) -> Raw:
    if kind == "list":
        text = "[" * depth + "0" + "]" * depth
        return Raw(text, text, text)
    json_text = '{"a": ' * depth + "1" + "}" * depth
    return Raw("{a = " * depth + "1" + "}" * depth, json_text, json_text)


def alias_bomb(levels: int, width: int, tag: str) -> Raw:
    """A billion-laughs value: ``width ** (levels + 1)`` strings from a few hundred bytes."""
    text = f"&{tag}0 [" + ", ".join(["lol"] * width) + "]"
    for i in range(1, levels + 1):
        text = f"&{tag}{i} [{text}" + f", *{tag}{i - 1}" * (width - 1) + "]"
    return Raw(None, text, None)


def self_alias(tag: str) -> Raw:
    return Raw(None, f"&{tag} [1, *{tag}]", None)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in ``node`` (tables, list items, leaves), parents first."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


names = st.text(st.characters(whitelist_categories=("L", "N", "Pc", "Pd")), min_size=1, max_size=12)
texts = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")), max_size=20)
plain = st.one_of(st.booleans(), st.none(), st.integers(-(2**63), 2**63 - 1),
                  st.floats(allow_nan=False, allow_infinity=False), texts)
values = st.recursive(plain, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(names, inner, max_size=3)),
                      max_leaves=6)
big_ints = st.one_of(st.integers(2**63, 2**200), st.integers(-(2**200), -(2**63) - 1),
                     st.sampled_from([10**300, -(10**300)]))
non_finite = st.sampled_from([math.inf, -math.inf, math.nan])
non_str_keys = st.one_of(st.integers(-5, 2**70), st.booleans(), st.none(),
                         st.floats(allow_nan=False, allow_infinity=False))
CORRUPTIONS = ("wrong_type", "non_string_key", "huge_string", "huge_key", "deep", "unknown_section",
               "unknown_parameter", "unknown_component", "misspelt_key", "non_finite", "huge_int",
               "delete", "alias_bomb", "self_alias", "none")  # none: a valid config, checked whole
YAML_ONLY = {"non_string_key", "alias_bomb", "self_alias"}


def _group(x: Any) -> str:
    return "none" if x is None else type(x).__name__


_anchors = itertools.count()  # YAML anchor names are unique in a document


def corrupt(draw, config: dict, what: str, fmt: str) -> None:
    """Apply the corruption ``what`` in place, somewhere ``draw`` chooses."""
    all_paths = paths(config)
    tables = [p for p in all_paths if isinstance(get(config, p), dict)]
    leaves = [p for p in all_paths if p and not isinstance(get(config, p), dict | list)]
    table = draw(st.sampled_from(tables))
    where = get(config, table)

    def put(value):  # at a leaf, or as a new key of a table
        if leaves and draw(st.booleans()):
            path = draw(st.sampled_from(leaves))
            get(config, path[:-1])[path[-1]] = value
        else:
            where[draw(names)] = value

    if what == "wrong_type":
        path = draw(st.sampled_from([p for p in all_paths if p]))
        old = get(config, path)
        new = draw(values.filter(lambda v: _group(v) != _group(old)))
        get(config, path[:-1])[path[-1]] = new
    elif what == "non_string_key":
        key = draw(non_str_keys)
        if where and draw(st.booleans()):  # rename an existing key, keeping its value
            old = draw(st.sampled_from(list(where)))
            where[key] = where.pop(old)
        else:
            where[key] = draw(values)
    elif what == "huge_string":  # the last size is over the 2 MB file limit
        put("x" * draw(st.sampled_from([5_000, 300_000, 1_500_000, 2_500_000])))
    elif what == "huge_key":
        where["k" * draw(st.sampled_from([257, 100_000, 1_000_000]))] = 1
    elif what == "deep":  # beyond MAX_DEPTH (32), and beyond the parsers' recursion
        depth = draw(st.sampled_from([20, 33, 60, 400, 1500, 5000]))
        put(deep(depth, draw(st.sampled_from(["list", "table"]))))
    elif what == "unknown_section":
        config[draw(names.filter(lambda n: n not in ("model", "data", "train")))] = draw(values)
    elif what == "unknown_parameter":
        where[draw(names) + "_zz"] = draw(values)
    elif what == "unknown_component":
        sections = [p for p in tables if "type" in get(config, p)]
        section = get(config, draw(st.sampled_from(sections)))
        section["type"] = draw(st.one_of(texts, st.just("x" * 100_000), st.just("concta")))
    elif what == "misspelt_key":
        keys = [k for k in where if isinstance(k, str) and len(k) > 1]
        if keys:
            key = draw(st.sampled_from(sorted(keys)))
            where[key[1:] + key[0]] = where.pop(key)
        else:
            where["tpye"] = "x"
    elif what == "non_finite":
        put(draw(non_finite))
    elif what == "huge_int":
        put(draw(big_ints))
    elif what == "delete":
        path = draw(st.sampled_from([p for p in all_paths if p]))
        get(config, path[:-1]).pop(path[-1])
    elif what == "alias_bomb":
        put(alias_bomb(draw(st.integers(3, 9)), draw(st.integers(2, 10)), f"b{next(_anchors)}_"))
    elif what == "self_alias":
        put(self_alias(f"r{next(_anchors)}"))
    elif what == "none":
        pass
    else:
        raise AssertionError(what)


def none_to_text(node: Any) -> Any:
    """TOML has no null: write None as a string (still the wrong type almost everywhere)."""
    if node is None:
        return "null"
    if isinstance(node, dict):
        return {k: none_to_text(v) for k, v in node.items()}
    if isinstance(node, list):
        return [none_to_text(v) for v in node]
    return node


def check(path: Path, capsys) -> tuple[int, str, float]:
    capsys.readouterr()
    start = time.perf_counter()
    rc = main(["config", "check", str(path)])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc in (0, 2), (rc, err[:2000])
    assert "Traceback" not in err, err[:4000]
    assert len(err) <= MAX_STDERR, (len(err), err[:300])
    assert (rc == 0) == (err == ""), err[:500]
    if rc == 2:
        assert err.startswith("fusionjax: error: ") and err.count("\n") <= 12, err[:500]
    assert seconds < (REFUSED_SECONDS if rc == 2 else VALID_SECONDS), (seconds, err[:300])
    return rc, err, seconds


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])
@given(data=st.data())
def test_corrupted_configs_fail_cleanly(data, tmp_path_factory, capsys):
    base = data.draw(st.sampled_from(sorted(BASES)), label="base")
    whats = data.draw(st.lists(st.sampled_from(CORRUPTIONS), min_size=1, max_size=3), label="corruptions")
    yaml_only = bool(YAML_ONLY & set(whats))
    fmt = "yaml" if yaml_only else data.draw(st.sampled_from(FORMATS), label="format")
    config = copy.deepcopy(BASES[base])
    for what in whats:
        corrupt(data.draw, config, what, fmt)
    if fmt == "toml":
        config = none_to_text(config)
    path = write(config, fmt, tmp_path_factory.mktemp("fuzz") / "config")
    check(path, capsys)


# ---------------------------------------------------------------- the hostile tester's cases

def _case(tmp_path, name: str, config: dict, fmt: str = "yaml") -> Path:
    return write(config, fmt, tmp_path / name)


def _tiny(**changes) -> dict:
    config = copy.deepcopy(TINY)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = config
        for p in parents:
            node = node[p]
        node[last] = value
    return config


def _with_key(path: tuple, key: Any, value: Any = 1) -> dict:
    config = copy.deepcopy(TINY)
    get(config, path)[key] = value
    return config


@pytest.mark.parametrize("config, expected", [
    (_with_key(("model", "encoders"), 1, {"type": "cnn_image"}),
     "model.encoders: key 1 (int) is not a string"),
    (_with_key((), True), "key true (bool) is not a string"),
    (_with_key(("data",), None, 20), "data: key null (NoneType) is not a string"),
    (_with_key(("model", "encoders", "image"), 5), "model.encoders.image: key 5 (int) is not a string"),
], ids=["int-modality", "true-top-level", "null-data-key", "int-parameter"])
def test_non_string_keys(tmp_path, capsys, config, expected):
    rc, err, _ = check(_case(tmp_path, "keys", config), capsys)
    assert rc == 2 and err.startswith(f"fusionjax: error: {expected}"), err
    assert "quote it" in err


@pytest.mark.parametrize("levels, width", [(8, 9), (9, 10), (30, 2)])
def test_yaml_alias_bomb_is_refused_fast(tmp_path, capsys, levels, width):
    config = _tiny(data__num_classes=alias_bomb(levels, width, "a"))
    path = _case(tmp_path, "bomb", config)
    assert path.stat().st_size < 2000  # the tiny config and a few hundred bytes of aliases
    rc, err, seconds = check(path, capsys)
    assert rc == 2 and "its YAML aliases expand it to more than 100,000 values" in err, err
    assert "bomb.yaml" in err and seconds < 1.0


def test_self_referencing_alias(tmp_path, capsys):
    rc, err, _ = check(_case(tmp_path, "rec", _tiny(data__num_classes=self_alias("r"))), capsys)
    assert rc == 2 and "holds an alias of itself" in err, err


@pytest.mark.parametrize("fmt", FORMATS)
def test_huge_string_is_not_echoed(tmp_path, capsys, fmt):
    rc, err, _ = check(_case(tmp_path, "s", _tiny(model__head__hidden="x" * 1_500_000), fmt), capsys)
    assert rc == 2 and err.startswith("fusionjax: error: model.head.hidden: expected list of int, got 'xxx")
    assert len(err) < 600, len(err)


@pytest.mark.parametrize("fmt", FORMATS)
def test_big_file_and_deep_nesting(tmp_path, capsys, fmt):
    rc, err, _ = check(_case(tmp_path, "big", _tiny(data__note="x" * 2_500_000), fmt), capsys)
    assert rc == 2 and "is larger than 2 MB" in err, err
    rc, err, _ = check(_case(tmp_path, "deep", _tiny(data__num_classes=deep(40, "list")), fmt), capsys)
    assert rc == 2 and "nests deeper than 32 levels" in err, err
    rc, err, _ = check(_case(tmp_path, "deeper", _tiny(data__num_classes=deep(5000, "list")), fmt), capsys)
    assert rc == 2 and ("too deeply" in err or "maximum nesting depth" in err), err


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_learning_rate(tmp_path, capsys, fmt, value):
    config = _tiny(train__optimizer={"name": "adam", "learning_rate": value})
    rc, err, _ = check(_case(tmp_path, "lr", config, fmt), capsys)
    assert rc == 2 and err.startswith("fusionjax: error: train.optimizer.learning_rate: must be a finite "
                                      f"number, got {value!r}"), err


@pytest.mark.parametrize("fmt", FORMATS)
def test_int_outside_int64(tmp_path, capsys, fmt):
    rc, err, _ = check(_case(tmp_path, "int", _tiny(train__steps=2**63), fmt), capsys)
    assert rc == 2 and err.startswith("fusionjax: error: train.steps: 9223372036854775808 is outside "
                                      "the int64 range"), err
    rc, err, _ = check(_case(tmp_path, "int", _tiny(model__encoders__image__dense=-(10**300)), fmt), capsys)
    assert rc == 2 and "model.encoders.image.dense: <an int of 301 digits> is outside" in err, err


def test_through_a_real_process(tmp_path):
    """The same answers from ``python -m fusionjax`` (the command a user runs)."""
    cases = {
        "model.encoders: key 1 (int) is not a string":
            _case(tmp_path, "keys", _with_key(("model", "encoders"), 1, {"type": "cnn_image"})),
        "its YAML aliases expand it to more than 100,000 values":
            _case(tmp_path, "bomb", _tiny(data__num_classes=alias_bomb(9, 10, "a"))),
        "model.head.hidden: expected list of int, got 'xxx":
            _case(tmp_path, "huge", _tiny(model__head__hidden="x" * 1_500_000), "json"),
    }
    for expected, path in cases.items():
        r = run_cli("config", "check", str(path))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert expected in r.stderr and len(r.stderr) < 1000, r.stderr[:500]
    r = run_cli("config", "check", str(ROOT / "examples" / "three_modality.toml"),
                "train.optimizer.learning_rate=inf")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("fusionjax: error: train.optimizer.learning_rate: must be a finite number")
