"""The generated parts of the config reference, docs/config.md: the ``[train]`` table, the
``[data]`` section's own keys (``PipelineSettings``) and one section per bundled
component, rendered from the code so that they cannot drift.

Parameter types and defaults come from the signatures (the same ones config binding
checks); what a parameter means comes from the class docstring, in a section::

    Parameters:
        channels: Output channels of each convolution (one conv + ReLU per entry). At least
            one entry, all ``>= 1``.
        kernel_size: Square kernel size ...

one entry per parameter, ``name: text``, continued on more deeply indented lines.  The
rest of the docstring is the component's description.  A bundled component (package
``fusionjax``) and ``TrainConfig`` must describe every parameter and nothing else;
a third-party component may lack the section (its parameters then read "(undocumented)").

In docs/config.md the generated parts lie between ``<!-- BEGIN GENERATED: NAME -->`` and
``<!-- END GENERATED: NAME -->`` (NAME: ``train``, ``data``, ``components``)::

    python -m fusionjax.reference docs/config.md          # rewrite them in place
    python -m fusionjax.reference --check docs/config.md  # exit 1 if the file is stale

Nothing in the core imports this module.
"""

from __future__ import annotations

import argparse
import collections.abc as cabc
import dataclasses
import inspect
import json
import re
import sys
import typing
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath
from typing import Any

from fusionjax.config.validation import as_config_value, signature_params, type_name
from fusionjax.errors import FusionJaxError

BUNDLED_PACKAGE = "fusionjax"
KIND_TITLES = {"encoder": "Encoder", "fusion": "Fusion", "head": "Head", "dataset": "Dataset",
               "augmentation": "Augmentation"}
# What assembly passes (fusionjax/assembly.py, the ``_part`` calls): ``injected`` are set by
# fusionjax itself, ``defaults`` are taken from the data set (an encoder's from its
# modality's metadata, which the bundled data sets fill with these names; an augmentation's
# likewise, fusionjax/augmentation.py).
INJECTED = {"encoder": ("input_shape",), "fusion": ("in_features", "token_features"),
            "head": ("in_features", "label_shape")}
FROM_DATA = {"encoder": ("vocab_size", "sample_rate"), "head": ("num_classes",),
             "augmentation": ("vocab_size", "sample_rate")}
SECTION = "Parameters:"
UNDOCUMENTED = "(undocumented)"
BLOCKS = ("train", "data", "components")
_BLOCK = re.compile(r"<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n(?P<body>.*?)"
                    r"<!-- END GENERATED: (?P=name) -->", re.S)
_ENTRY = re.compile(r"(?P<name>[A-Za-z_]\w*):(?:\s+(?P<text>.*))?$")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_ROOT = Path(__file__).resolve().parent.parent  # the checkout, for paths in test settings


class ReferenceDocError(FusionJaxError):
    """The code's documentation is incomplete or inconsistent, or the page lacks its markers.
    ``problems``: one line each."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def command(path: str | PurePath = "docs/config.md") -> str:
    """The command that regenerates ``path``."""
    return f"python -m fusionjax.reference {path}"


# -- docstrings --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Docstring:
    """A docstring split into its description and its ``Parameters:`` section."""

    description: str
    parameters: dict[str, str]  # name -> meaning, one line
    has_section: bool
    malformed: tuple[str, ...] = ()  # lines of the section that are not ``name: text``


def parse_docstring(doc: str | None) -> Docstring:
    lines = inspect.cleandoc(doc or "").splitlines()
    description: list[str] = []
    params: dict[str, list[str]] = {}
    malformed: list[str] = []
    has_section, i = False, 0
    while i < len(lines):
        if lines[i].rstrip() != SECTION:
            description.append(lines[i])
            i += 1
            continue
        has_section, i = True, i + 1
        entry_indent, current = None, None
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
            line = lines[i]
            i += 1
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            entry_indent = indent if entry_indent is None else entry_indent
            match = _ENTRY.match(line.strip())
            if indent == entry_indent and match:
                current = match["name"]
                if current in params:
                    malformed.append(f"{current!r} is described twice")
                params[current] = [match["text"] or ""]
            elif indent > entry_indent and current is not None:
                params[current].append(line.strip())
            else:
                malformed.append(f"cannot read {line.strip()!r} (want `name: text`)")
    text = "\n".join(description).strip()
    meanings = {name: " ".join(t for t in parts if t).strip() for name, parts in params.items()}
    return Docstring(re.sub(r"\n{3,}", "\n\n", text), meanings, has_section, tuple(malformed))


def _doc_of(obj: Any) -> str | None:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if dataclasses.is_dataclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
        return None  # the signature dataclasses write when a class has no docstring
    return doc


# -- markdown ----------------------------------------------------------------------------

def markdown(text: str) -> str:
    """Docstring markup as markdown: ````x```` and ``:role:`x``` become ```x```."""
    text = _ROLE.sub(r"``\1``", text).replace("``", "`")
    return re.sub(r"(\S) ?::$", r"\1:", text, flags=re.M)  # "Example::" opens a literal block


def _cell(text: str) -> str:
    return markdown(text).replace("|", "\\|")


def _type(annotation: Any) -> str:
    if annotation in (dict, cabc.Mapping):
        return "table"
    return type_name(annotation)


def _relative(value: str) -> str:
    path = PurePath(value)
    if path.is_absolute() and path.is_relative_to(_ROOT):
        return path.relative_to(_ROOT).as_posix()
    return value


def config_value(value: Any) -> str:
    """``value`` as a TOML config writes it (none: the YAML/JSON ``null``)."""
    value = as_config_value(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(_relative(value))
    if isinstance(value, list):
        return "[" + ", ".join(config_value(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = (k if re.fullmatch(r"[A-Za-z0-9_-]+", str(k)) else json.dumps(str(k)) for k in value)
        return "{" + ", ".join(f"{k} = {config_value(v)}" for k, v in zip(keys, value.values())) + "}"
    return repr(value)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A markdown table whose columns but the last are padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells):
        return "| " + " | ".join([*(c.ljust(w) for c, w in zip(cells, widths)), cells[-1]]) + " |"

    return [line(header), line(tuple("-" * w for w in widths) + ("-------",)), *map(line, rows)]


def _field(spec: Any) -> str:
    text = f"`{spec.dtype} {list(spec.shape)}`"
    if spec.metadata:
        text += " (" + ", ".join(f"`{k} = {config_value(v)}`" for k, v in spec.metadata.items()) + ")"
    return text


# -- components --------------------------------------------------------------------------

def is_bundled(spec: Any) -> bool:
    return spec.origin.package == BUNDLED_PACKAGE


def _where(spec: Any, obj: Any) -> str:
    name = f"{obj.__module__}.{getattr(obj, '__qualname__', obj.__name__)}"
    return f"{spec.kind} {spec.qualified_name} ({name}, module {obj.__module__})"


def _problems(owner: str, params: Iterable[str], doc: Docstring) -> list[str]:
    params = list(params)
    out = [f"{owner}: the docstring's {SECTION} section: {m}" for m in doc.malformed]
    out += [f"{owner}: parameter {name!r} has no description (add `{name}: ...` under "
            f"`{SECTION}` in the docstring)" for name in params if name not in doc.parameters]
    out += [f"{owner}: the docstring describes {name!r}, which is not a parameter of the "
            f"signature (parameters: {', '.join(params) or 'none'})"
            for name in doc.parameters if name not in params]
    return out


def component_problems(spec: Any) -> list[str]:
    """What a bundled component's docstring lacks or gets wrong ([] for others)."""
    if not is_bundled(spec):
        return []
    obj = spec.load()
    params, _ = signature_params(obj)
    return _problems(_where(spec, obj), params, parse_docstring(_doc_of(obj)))


def _default(kind: str, name: str, param: Any) -> str:
    if name in INJECTED.get(kind, ()):
        return "*injected*"
    if name in FROM_DATA.get(kind, ()):
        return "*from the data set*" + ("" if param.required else f", else {_shown(param.default)}")
    return "required" if param.required else _shown(param.default)


def _shown(default: Any) -> str:
    return "none" if default is None else f"`{config_value(default)}`"


def component_markdown(spec: Any) -> str:
    """The section of one component: heading, names, description, parameters, test settings."""
    obj = spec.load()
    params, var_kw = signature_params(obj)
    doc = parse_docstring(_doc_of(obj))
    summary = spec.summary.strip()
    origin = "" if is_bundled(spec) else f" ({spec.origin.describe()})"
    head = f"`{spec.qualified_name}`{origin}" + (f": {summary}" if summary else "")
    out = [f"### {KIND_TITLES.get(spec.kind, spec.kind.capitalize())} `{spec.name}`", "",
           head if head.endswith((".", "!", "?")) else head + "."]
    if doc.description:
        out += ["", markdown(doc.description)]
    rows = [(f"`{name}`", _cell(f"``{_type(p.annotation)}``"), _default(spec.kind, name, p),
             _cell(doc.parameters.get(name, UNDOCUMENTED))) for name, p in params.items()]
    if var_kw:
        rows.append(("any other", "any", "", "Passed on as keyword arguments (`**kwargs`)."))
    out += [""] + (_table(("Parameter", "Type", "Default", "Meaning"), rows) if rows
                   else ["No parameters."])
    tested = _tested_with(obj)
    if tested:
        out += ["", tested]
    return "\n".join(out)


def _tested_with(obj: Any) -> str:
    settings = getattr(obj, "test_settings", None)
    test_input, test_labels = getattr(obj, "test_input", None), getattr(obj, "test_labels", None)
    if settings is None and test_input is None and test_labels is None:
        return ""
    parts = []
    if settings is not None:
        parts.append(", ".join(f"`{k} = {config_value(v)}`" for k, v in settings.items())
                     or "the defaults")
    if test_input is not None:
        parts.append(f"input {_field(test_input)}")
    if test_labels is not None:
        parts.append(f"labels {_field(test_labels)}")
    return "Tested with: " + "; ".join(parts) + "."


def bundled_specs(registry: Any = None) -> list[Any]:
    """The bundled components of ``registry``, in registry order: by kind, then by name.
    Default: every installed plugin's, whatever ``FUSIONJAX_DISABLE_PLUGINS`` says, so
    that the page does not depend on the environment it is generated in."""
    if registry is None:
        from fusionjax.plugins import load_plugins

        registry = load_plugins(disabled=()).registry
    return [spec for spec in registry if is_bundled(spec)]


def components_markdown(specs: Iterable[Any]) -> str:
    """One section per component of ``specs``; a :class:`ReferenceDocError` when a
    bundled one is not completely documented."""
    specs = list(specs)
    problems = [p for spec in specs for p in component_problems(spec)]
    if problems:
        raise ReferenceDocError(problems)
    return "\n\n".join(component_markdown(spec) for spec in specs)


# -- [train], and the [data] section's own keys ---------------------------------------------

def _section_class(name: str) -> type:
    if name == "train":
        from fusionjax.config.schema import TrainConfig

        return TrainConfig
    from fusionjax.data.pipeline import PipelineSettings

    return PipelineSettings


def _fields(cls: type) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        fields[f.name] = (hints.get(f.name, f.type), default)
    return fields


def section_problems(name: str) -> list[str]:
    cls = _section_class(name)
    owner = f"the [{name}] section ({cls.__module__}.{cls.__qualname__}, module {cls.__module__})"
    return _problems(owner, _fields(cls), parse_docstring(_doc_of(cls)))


def section_markdown(name: str) -> str:
    """The table of ``[train]``'s fields (``name = "train"``) or of the ``[data]`` section's
    own keys (``"data"``); a :class:`ReferenceDocError` when one is undescribed."""
    problems = section_problems(name)
    if problems:
        raise ReferenceDocError(problems)
    cls = _section_class(name)
    doc = parse_docstring(_doc_of(cls))
    rows = [(f"`{field}`", _cell(f"``{_type(annotation)}``"),
             "required" if default is dataclasses.MISSING else _shown(default),
             _cell(doc.parameters[field])) for field, (annotation, default) in _fields(cls).items()]
    return "\n".join(_table(("Field", "Type", "Default", "Meaning"), rows))


def train_problems() -> list[str]:
    return section_problems("train")


def train_markdown() -> str:
    return section_markdown("train")


# -- the page ----------------------------------------------------------------------------

def problems(registry: Any = None) -> list[str]:
    """Everything :func:`update` would refuse: undocumented or unknown parameters of
    ``TrainConfig`` and of every bundled component."""
    return (section_problems("train") + section_problems("data")
            + [p for spec in bundled_specs(registry) for p in component_problems(spec)])


def generated_blocks(registry: Any = None) -> dict[str, str]:
    return {"train": section_markdown("train"), "data": section_markdown("data"),
            "components": components_markdown(bundled_specs(registry))}


def update(text: str, registry: Any = None, *, path: str | PurePath = "docs/config.md") -> str:
    """``text`` (the page) with every generated block replaced by a fresh rendering."""
    found = [m["name"] for m in _BLOCK.finditer(text)]
    wrong = [f"{path}: no block `<!-- BEGIN GENERATED: {name} -->` ... "
             f"`<!-- END GENERATED: {name} -->`" for name in BLOCKS if name not in found]
    wrong += [f"{path}: block {name!r} appears {found.count(name)} times"
              for name in BLOCKS if found.count(name) > 1]
    wrong += [f"{path}: unknown generated block {name!r} (known: {', '.join(BLOCKS)})"
              for name in dict.fromkeys(found) if name not in BLOCKS]
    if wrong:
        raise ReferenceDocError(wrong)
    blocks = generated_blocks(registry)
    note = ("<!-- Generated by `python -m fusionjax.reference` from the code's docstrings and "
            "signatures: edit those, not this block. -->")

    def fill(m: re.Match) -> str:
        name = m["name"]
        return (f"<!-- BEGIN GENERATED: {name} -->\n{note}\n\n{blocks[name]}\n\n"
                f"<!-- END GENERATED: {name} -->")

    return _BLOCK.sub(fill, text)


def main(argv: list[str] | None = None, *, out: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fusionjax.reference",
        description="Regenerate the generated blocks of the config reference (docs/config.md).")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the file is not what would be generated")
    parser.add_argument("path", type=Path, help="the page, e.g. docs/config.md")
    args = parser.parse_args(argv)
    say = out or (lambda line: print(line, file=sys.stderr))
    try:
        text = args.path.read_text(encoding="utf-8")
        new = update(text, path=args.path.as_posix())
    except (OSError, FusionJaxError) as e:
        say(f"{parser.prog}: error: {e}")
        return 1
    if args.check:
        if new != text:
            say(f"{args.path} is out of date: run `{command(args.path.as_posix())}`")
            return 1
        return 0
    if new != text:
        args.path.write_text(new, encoding="utf-8")
        say(f"{args.path}: regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
