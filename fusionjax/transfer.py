"""Starting a component from what was learned: ``init_from`` in its config section.

::

    [model.encoders.image]
    type = "cnn_image"
    init_from = "runs/image-only"                   # that run's component at the same key path
    # init_from = {run = "runs/qa", key = "model.encoders.image"}   # or at a named one
    # init_from = {orbax = "ckpt/params", prefix = "encoders/image/"}        # an Orbax checkpoint
    # init_from = {safetensors = "cnn.safetensors", layout = "pytorch"}     # a PyTorch state dict
    # init_from = {safetensors = "silero_vad/data/silero_vad_16k.safetensors",
    #              package = "silero-vad", layout = "pytorch", ignore = ["decoder.*"]}
    trainable = false                               # and, e.g., frozen (fusionjax.assembly.Training)

Sources:

* ``run``: a finished run's final model (``final_model/``), the component at ``key``
  (default: the target's own key path);
* ``orbax``: an Orbax checkpoint of a parameter tree (``StandardCheckpointHandler``, as
  ``orbax.checkpoint.StandardCheckpointer().save`` writes it), tensors named by their
  path (``encoders/image/convs/convs/0/kernel``);
* ``safetensors``: a safetensors file, tensors named as the file names them.

``package``: the file lies inside this installed distribution (``pip show -f`` lists
it), found without importing it; weights a package ships in its wheel are read this way.

For the two files, the component's tensors are those whose names start with ``prefix``
(which is cut off), less those matching an ``ignore`` pattern (``fnmatch``: tensors
deliberately left unused, e.g. another network's classifier), renamed by ``rename =
{"old" = "new"}``.  With ``layout = "fusionjax"`` (the default) the names are then the
component's parameter names; with ``layout = "pytorch"`` they are a PyTorch state dict's,
converted by the layout the component declares (:mod:`fusionjax.layouts`).

Everything is read as arrays: nothing is executed or unpickled (safetensors and Orbax's
array formats hold no code).  Checked when the config is assembled, against the abstract
component, before any compute: a source that cannot be read, a tensor the component
needs and the source lacks, a tensor of the source the component does not use, another
shape, or a dtype that is not a float of 32 bits or fewer is a
:class:`~fusionjax.errors.ConfigError` at ``<section>.init_from`` naming the component,
the tensor and both shapes.  The arrays replace the component's random initialisation
when the model is built for training (:meth:`Assembly.build`).
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fusionjax.errors import ConfigError, RunError, did_you_mean, shown

Kind = Literal["run", "orbax", "safetensors"]
LAYOUTS = ("fusionjax", "pytorch")
_KEYS: dict[str, frozenset[str]] = {
    "run": frozenset({"run", "key"}),
    "orbax": frozenset({"orbax", "prefix", "ignore", "rename", "package"}),
    "safetensors": frozenset({"safetensors", "prefix", "ignore", "rename", "layout", "package"}),
}
# what a safetensors tensor may hold: floats a float32 parameter takes without loss
_FILE_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_SHOWN = 5  # names listed in an error


@dataclass(frozen=True)
class InitFrom:
    """Where a component's initial parameters come from (see the module docstring)."""

    kind: Kind
    path: str
    key: str | None = None  # run: the component's key path in the source (None: the target's)
    prefix: str = ""
    ignore: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    layout: str = "fusionjax"
    package: str | None = None

    @classmethod
    def from_config(cls, value: Any, key: str) -> InitFrom:
        where = f"{key}.init_from"
        if isinstance(value, str) and value:
            return cls("run", value)
        hint = ('a run directory ("runs/image-only"), {run = "DIR", key = "model.encoders.image"}, '
                '{orbax = "DIR", prefix = "..."} or {safetensors = "FILE", layout = "pytorch"}')
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a run directory or a table naming a source, got {shown(value)}",
                              key=where, hint=hint)
        kinds = [k for k in _KEYS if k in value]
        if len(kinds) != 1:
            raise ConfigError(f"must name exactly one source (run, orbax or safetensors), got "
                              f"{', '.join(map(repr, kinds)) or 'none'}", key=where, hint=hint)
        kind = kinds[0]
        for name in value:
            if name not in _KEYS[kind]:
                raise ConfigError(f"unknown key {shown(name)} for a {kind} source"
                                  f"{did_you_mean(name, _KEYS[kind])}", key=f"{where}.{name}",
                                  hint=f"a {kind} source takes {', '.join(sorted(_KEYS[kind]))}")

        def text(name: str, default: Any = None) -> Any:
            got = value.get(name, default)
            if got is not default and not (isinstance(got, str) and (got or name == "prefix")):
                raise ConfigError(f"must be a non-empty string, got {shown(got)}", key=f"{where}.{name}")
            return got

        ignore = value.get("ignore", [])
        if not isinstance(ignore, list) or not all(isinstance(p, str) and p for p in ignore):
            raise ConfigError(f"must be a list of name patterns, got {shown(ignore)}",
                              key=f"{where}.ignore", hint='e.g. ignore = ["classifier.*"]')
        rename = value.get("rename", {})
        if not isinstance(rename, Mapping) or not all(isinstance(v, str) and v for v in rename.values()):
            raise ConfigError(f"must be a table of old = new names, got {shown(rename)}",
                              key=f"{where}.rename", hint='e.g. rename = {"fc.weight" = "dense.weight"}')
        layout = text("layout", "fusionjax")
        if layout not in LAYOUTS:
            raise ConfigError(f"must be one of {', '.join(LAYOUTS)}, got {shown(layout)}"
                              f"{did_you_mean(layout, LAYOUTS)}", key=f"{where}.layout")
        return cls(kind, text(kind), key=text("key"), prefix=text("prefix", ""), ignore=tuple(ignore),
                   rename=tuple(rename.items()), layout=layout, package=text("package"))

    def resolved(self) -> str | dict[str, Any]:
        """As the resolved config records it (the short form where there is one)."""
        if self.kind == "run":
            return self.path if self.key is None else {"run": self.path, "key": self.key}
        out: dict[str, Any] = {self.kind: self.path}
        for name, value, default in (("package", self.package, None), ("prefix", self.prefix, ""),
                                     ("ignore", list(self.ignore), []), ("rename", dict(self.rename), {}),
                                     ("layout", self.layout, "fusionjax")):
            if value != default:
                out[name] = value
        return out

    def describe(self, target_key: str) -> str:
        if self.kind == "run":
            return f"run {self.path!r} at {self.key or target_key!r}"
        inside = f" of package {self.package!r}" if self.package else ""
        return f"{'Orbax checkpoint' if self.kind == 'orbax' else 'safetensors file'} {self.path!r}{inside}"

    # -- reading -------------------------------------------------------------------------

    def tensors(self, target_key: str) -> dict[str, np.ndarray]:
        """The source's tensors for the component at ``target_key``, named as the source
        names them after ``prefix``, ``ignore`` and ``rename`` (a run: its parameter names)."""
        where = f"{target_key}.init_from"
        if self.kind == "run":
            return self._from_run(target_key)
        path = self._file(where)
        found = _read_orbax(path) if self.kind == "orbax" else _read_safetensors(path)
        if isinstance(found, str):  # the reason it cannot be read
            raise ConfigError(f"{self.describe(target_key)} cannot be read: {found}", key=where)
        chosen = {k[len(self.prefix):]: v for k, v in found.items() if k.startswith(self.prefix)}
        if not chosen:
            raise ConfigError(f"no tensor of {self.describe(target_key)} starts with prefix "
                              f"{self.prefix!r}", key=f"{where}.prefix",
                              hint=f"its tensors: {_listing(found)}")
        chosen = {k: v for k, v in chosen.items() if not any(fnmatch.fnmatchcase(k, p) for p in self.ignore)}
        # a tensor that is no parameter (an int64 step counter, a float64 statistic) is
        # refused only if it is still chosen: ignore = ["*.num_batches_tracked"] leaves it out
        bad = sorted(k for k, v in chosen.items() if isinstance(v, _NotAFloat))
        if bad:
            dtype = chosen[bad[0]].dtype
            raise ConfigError(
                f"{self.describe(target_key)}: tensor {bad[0]!r} is {dtype} ({len(bad)} of {len(chosen)} "
                f"chosen tensors are not {', '.join(_FILE_DTYPES)}); parameters are floats of 32 bits or "
                f"fewer{' and a 64-bit float would lose precision' if dtype in ('F64', 'float64') else ''}",
                key=where, hint="convert those tensors to float32, or leave them out with "
                                'ignore = ["pattern*"] if the component does not need them')
        for old, new in self.rename:
            if old not in chosen:
                raise ConfigError(f"renames {old!r}, which {self.describe(target_key)} does not have "
                                  f"(after prefix and ignore){did_you_mean(old, chosen)}",
                                  key=f"{where}.rename")
            chosen[new] = chosen.pop(old)
        return chosen

    def _from_run(self, target_key: str) -> dict[str, np.ndarray]:
        source, where = self.key or target_key, f"{target_key}.init_from"
        try:
            found = _final_arrays(self.path)
        except RunError as e:
            raise ConfigError(f"{e}", key=where) from None
        prefix = "/".join(source.split(".")[1:]) + "/"
        arrays = {k[len(prefix):]: v for k, v in found.items() if k.startswith(prefix)}
        if not arrays:
            components = sorted({"model." + ".".join(k.split("/")[:2 if k.startswith("encoders/") else 1])
                                 for k in found})
            raise ConfigError(f"run {self.path!r} has no component at {source!r}", key=where,
                              hint=f"its components: {', '.join(components)}")
        return arrays

    def _file(self, where: str) -> Path:
        if self.package is None:
            path = Path(self.path)
        else:
            from importlib import metadata

            try:
                path = Path(metadata.distribution(self.package).locate_file(self.path))
            except metadata.PackageNotFoundError:
                raise ConfigError(f"package {self.package!r} is not installed", key=f"{where}.package",
                                  hint=f"pip install {self.package}") from None
        if not path.exists():
            raise ConfigError(f"{self.describe('')} does not exist ({path})", key=f"{where}.{self.kind}",
                              hint="a path relative to the working directory"
                                   + (f", or inside package {self.package}" if self.package else ""))
        return path

    # -- fitting onto the component ------------------------------------------------------

    def arrays(self, target_key: str, abstract_module: Any, owner: str) -> dict[str, np.ndarray]:
        """The component's parameters from the source, by parameter name, every one checked
        against the abstract component (its names, shapes and a float dtype)."""
        where = f"{target_key}.init_from"
        target = _flat_params(abstract_module)
        if not target:  # a component without parameters (e.g. concat) starts the same anywhere
            return {}
        source = self.tensors(target_key)
        if self.layout == "pytorch":
            source = self._convert_torch(source, abstract_module, owner, where)
        missing = sorted(set(target) - set(source))
        extra = sorted(set(source) - set(target))
        if missing or extra:
            listing = "; ".join(part for part in (
                f"{owner} needs {_listing(missing, target)}, which the source lacks" if missing else "",
                f"the source has {_listing(extra, source)}, which {owner} does not use" if extra else "")
                if part)
            raise ConfigError(f"the tensors of {self.describe(target_key)} do not match the parameters "
                              f"of {owner}: {listing}", key=where, hint=self._fit_hint(missing, extra))
        for name in sorted(target):
            want, got = tuple(target[name].shape), tuple(np.shape(source[name]))
            if want != got:
                raise ConfigError(f"parameter {name!r} of {owner} has shape {want}, but the "
                                  f"{self.describe(target_key)} gives {got}", key=where,
                                  hint="the source must hold the same component with the same settings "
                                       "(widths, vocabulary size, input shape)")
        return source

    def _fit_hint(self, missing: list[str], extra: list[str]) -> str:
        if self.kind == "run":
            return "init_from a run needs the same component with the same settings"
        if self.layout == "fusionjax" and extra and all("." in n for n in extra):
            return 'these look like a PyTorch state dict: layout = "pytorch"'
        return ("select the component's tensors with prefix, leave the others out with "
                'ignore = ["pattern*"], and map names with rename = {"old" = "new"}')

    def _convert_torch(self, source: dict[str, np.ndarray], module: Any, owner: str,
                       where: str) -> dict[str, np.ndarray]:
        declare = getattr(module, "torch_layout", None)
        if declare is None:
            raise ConfigError(f"{owner} declares no PyTorch layout", key=f"{where}.layout",
                              hint="its plugin can add a torch_layout() method (fusionjax.layouts); or "
                                   'use layout = "fusionjax" with rename')
        rules = declare()
        needed = sorted({s for rule in rules.values() for s in rule.sources} - set(source))
        if needed:
            raise ConfigError(f"the PyTorch layout of {owner} needs {_listing(needed)}, which "
                              f"{self.describe('')} lacks", key=where,
                              hint=f"the file's tensors (after prefix): {_listing(source)}; "
                                   f"map names with rename, choose the component's with prefix")
        unused = sorted(set(source) - {s for rule in rules.values() for s in rule.sources})
        if unused:
            raise ConfigError(f"{self.describe('')} has {_listing(unused, source)}, which the PyTorch "
                              f"layout of {owner} does not use", key=where,
                              hint='leave them out with ignore = ["pattern*"] or choose with prefix')
        out = {}
        for name, rule in rules.items():
            try:
                out[name] = rule(*(source[s] for s in rule.sources))
            except ValueError as e:  # a tensor of the wrong rank or size for the conversion
                shapes = ", ".join(f"{s} {tuple(source[s].shape)}" for s in rule.sources)
                raise ConfigError(f"parameter {name!r} of {owner} is made from {shapes} ({rule.what}), "
                                  f"which fails: {e}", key=where) from None
        return out


def check_fits(init: InitFrom, target_key: str, abstract_module: Any, owner: str) -> None:
    """The source has exactly the (abstract) component's parameters, of their shapes."""
    init.arrays(target_key, abstract_module, owner)


def apply(init: InitFrom, target_key: str, module: Any, owner: str) -> None:
    """Replace ``module``'s parameters by the source's (cast to each parameter's dtype)."""
    from flax import nnx

    from fusionjax.rundir import fill

    arrays = init.arrays(target_key, module, owner)
    nnx.update(module, fill(nnx.state(module, nnx.Param), arrays))


def parameter_listing(assembly: Any) -> list[str]:
    """``config check --params``: each component's parameters, the PyTorch tensors its
    declared layout makes them from, and its ``init_from`` source."""
    lines = []
    for part, module in assembly.components(assembly.abstract_model()):
        init = part.training.init_from
        lines.append(f"{part.key}  ({part.spec.qualified_name})"
                     + (f"  init_from: {init.describe(part.key)}" if init else ""))
        declare = getattr(module, "torch_layout", None)
        rules = declare() if declare is not None else {}
        params = _flat_params(module)
        width = max((len(n) for n in params), default=0)
        for name, value in sorted(params.items()):
            rule = rules.get(name)
            torch = f"  <- {', '.join(rule.sources)} ({rule.what})" if rule else ""
            shape = "x".join(map(str, value.shape)) or "scalar"
            lines.append(f"  {name:<{width}}  {shape:<12} {value.dtype}{torch}")
        if not params:
            lines.append("  (no parameters)")
    return lines


def _listing(names, shapes: Mapping[str, Any] | None = None) -> str:
    names = sorted(names)
    shown_names = [f"{n!r} {tuple(np.shape(shapes[n]))}" if shapes is not None else repr(n)
                   for n in names[:_SHOWN]]
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(shown_names) + more


def _flat_params(module: Any) -> dict[str, Any]:
    from flax import nnx

    from fusionjax.rundir import flatten

    return flatten(nnx.to_pure_dict(nnx.state(module, nnx.Param)))


@functools.lru_cache(maxsize=8)
def _final_arrays(run: str) -> dict[str, np.ndarray]:
    from fusionjax.rundir import RunDir

    source = RunDir(run)
    source.read_config()  # NotARunError where there is no run
    return {k: np.asarray(v) for k, v in source.final_arrays().items()}


def _stamp(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _read_safetensors(path: Path) -> dict[str, np.ndarray] | str:
    return _cached_safetensors(_stamp(path))


@functools.lru_cache(maxsize=4)
def _cached_safetensors(stamp: tuple[str, int, int]) -> dict[str, np.ndarray] | str:
    from safetensors import SafetensorError, safe_open

    path = stamp[0]
    if not Path(path).is_file():
        return "it is not a file"
    try:
        with safe_open(path, framework="numpy") as f:
            dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
            arrays: dict[str, Any] = {k: _NotAFloat(d) for k, d in dtypes.items() if d not in _FILE_DTYPES}
            arrays |= {k: f.get_tensor(k) for k, d in dtypes.items() if d in _FILE_DTYPES and d != "BF16"}
        if "BF16" in dtypes.values():  # numpy has no bfloat16; the flax reader gives it
            with safe_open(path, framework="flax") as f:
                arrays |= {k: np.asarray(f.get_tensor(k)) for k, d in dtypes.items() if d == "BF16"}
    except (SafetensorError, OSError) as e:
        return f"not a safetensors file ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
    return arrays


def _read_orbax(path: Path) -> dict[str, np.ndarray] | str:
    return _cached_orbax(_stamp(path))


@functools.lru_cache(maxsize=4)
def _cached_orbax(stamp: tuple[str, int, int]) -> dict[str, np.ndarray] | str:
    import orbax.checkpoint as ocp

    from fusionjax.rundir import _quiet_abandoned_reads, flatten

    if not Path(stamp[0]).is_dir():
        return "an Orbax checkpoint is a directory"
    _quiet_abandoned_reads()
    try:
        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            found = checkpointer.restore(stamp[0])
    except Exception as e:  # noqa: BLE001 - any unreadable file of the checkpoint
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    arrays = {k: np.asarray(v) for k, v in flatten(found).items()} if isinstance(found, dict) else {}
    if not arrays:
        return "it holds no arrays"
    return {k: v if v.dtype.name in _FILE_DTYPES.values() else _NotAFloat(v.dtype.name)
            for k, v in arrays.items()}


@dataclass(frozen=True)
class _NotAFloat:
    """A source tensor whose dtype no parameter takes (its values are never read)."""

    dtype: str
