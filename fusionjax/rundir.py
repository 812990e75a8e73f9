"""The run directory: the one module that knows its layout.

::

    <run>/
      config.json       the resolved config (every default filled in, qualified names)
      run.json          how the numbers were made: versions, devices, processes, plugins,
                        fast paths, malloc settings; skipped examples and absent inputs
      metrics.jsonl     one JSON object per log or evaluation event
      tensorboard/      the same metrics as TensorBoard scalars
      checkpoints/<N>/  Orbax checkpoints of the whole train state, for an exact resume
      final_model/      the final parameters, an Orbax checkpoint; written last, so its
                        presence marks a finished run
      ...               what the data set needs to read new inputs (e.g. vocab.json)

:class:`RunDir` creates a run, reopens an unfinished one to resume it, finishes it
(the final model) and reads it back; :func:`load_run` gives the trained model ready
to evaluate and answer.  Each way a directory can be wrong is its own error
(:class:`~fusionjax.errors.RunError` and its subclasses), naming the directory and
what to do.  Only process 0 of a multi-process run writes files; saving the final
model is collective (every process calls :meth:`RunDir.save_model`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionjax.errors import (
    ConfigError,
    CorruptRunError,
    FinishedRunError,
    NotARunError,
    RunConfigMismatch,
    UnfinishedRunError,
)

if TYPE_CHECKING:
    from fusionjax.answers import Answer
    from fusionjax.assembly import Assembly
    from fusionjax.evaluation import Evaluation, SweepRow
    from fusionjax.model import FusionModel
    from fusionjax.prediction import Predictor

CONFIG = "config.json"
FACTS = "run.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
MODEL = "final_model"
LAYOUT = (CONFIG, FACTS, METRICS, TENSORBOARD, CHECKPOINTS, MODEL)
# keys of the resolved config that may differ between a run and its resume
_RESUME_MAY_CHANGE = ("train.output_dir", "data.workers", "data.decode")  # same examples


class RunDir:
    """A run directory (which need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- the layout --------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def facts_file(self) -> Path:
        return self.path / FACTS

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def checkpoints_dir(self) -> Path:
        return self.path.absolute() / CHECKPOINTS

    @property
    def model_dir(self) -> Path:
        return self.path.absolute() / MODEL

    def is_run(self) -> bool:
        return self.config_file.is_file()

    def is_finished(self) -> bool:
        return self.model_dir.is_dir()

    def has_checkpoint(self) -> bool:
        """Whether training wrote a checkpoint here (a finished step's folder: Orbax names
        one being written otherwise)."""
        return self.checkpoints_dir.is_dir() and any(
            p.name.isdigit() for p in self.checkpoints_dir.iterdir())

    # -- creating and resuming ---------------------------------------------------------

    def open_for_training(self, resolved: Mapping[str, Any], *, write: bool,
                          facts: Mapping[str, Any], dataset) -> bool:
        """Make this a new run of the config ``resolved``, or find an unfinished run of
        the same config here (to resume it).  Returns True when resuming.  ``write``:
        whether this process writes files (process 0); ``facts`` go to ``run.json``,
        ``dataset.save`` writes what reading new inputs needs."""
        if self.path.exists() and not self.path.is_dir():
            raise NotARunError("is a file, not a directory", path=self.path,
                               hint="give a new or an existing run directory (--output-dir or "
                                    "train.output_dir)")
        if self.is_finished():
            raise FinishedRunError("already holds a finished run", path=self.path,
                                   hint="choose a new directory (--output-dir or train.output_dir), "
                                        "or remove the old run; fusionjax never overwrites a run")
        if self.is_run():
            changed = _differences(self.read_config(), dict(resolved))
            if changed:
                listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed[:5])
                raise RunConfigMismatch(
                    f"holds an unfinished run of another config ({listing})", path=self.path,
                    hint="resume it with its own config (`fusionjax resume RUN_DIR`), or train "
                         "this config into a new directory")
            return True
        if write:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise NotARunError(f"cannot be created: {e.strerror or e}", path=self.path) from None
            _write_json(self.config_file, dict(resolved))
            _write_json(self.facts_file, dict(facts))
            dataset.save(self.path)
        return False

    # -- reading -----------------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        """The run's resolved config."""
        if not self.is_run():
            what = "does not exist" if not self.path.exists() else f"holds no {CONFIG}"
            raise NotARunError(f"not a fusionjax run directory (it {what})", path=self.path,
                               hint="give the directory `fusionjax train` wrote (it printed its path)")
        return _read_json(self.config_file, dict)

    def read_facts(self) -> dict[str, Any]:
        """``run.json`` (empty when the run has none)."""
        if not self.facts_file.is_file():
            return {}
        return _read_json(self.facts_file, dict)

    def add_facts(self, facts: Mapping[str, Any]) -> None:
        """Merge ``facts`` into ``run.json`` (process 0 only)."""
        _write_json(self.facts_file, {**self.read_facts(), **facts})

    # -- the final model ---------------------------------------------------------------

    def save_model(self, params: Any) -> None:
        """Write the final parameters (an ``nnx.State``), which finishes the run.
        Collective: every process calls it (each writes its own blocks of split
        arrays); Orbax writes into a temporary folder and renames it when complete."""
        import orbax.checkpoint as ocp
        from flax import nnx

        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            checkpointer.save(self.model_dir, args=ocp.args.StandardSave(nnx.to_pure_dict(params)))

    def final_arrays(self) -> dict[str, Any]:
        """The final parameters as saved, flat: ``{"encoders/image/convs/0/kernel": array}``."""
        import orbax.checkpoint as ocp

        if not self.is_finished():
            raise UnfinishedRunError(
                f"has no final model ({MODEL}/): the run has not finished", path=self.path,
                hint=f"resume it (`fusionjax resume {self.path}`) and let it finish")
        _quiet_abandoned_reads()
        try:
            with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
                found = checkpointer.restore(self.model_dir)
        except Exception as e:  # noqa: BLE001 - any unreadable file of the checkpoint
            raise CorruptRunError(f"the final model ({MODEL}/) cannot be read: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300] if str(e) else ''}",
                                  path=self.path) from None
        return flatten(found) if isinstance(found, dict) else {}

    def restore_params(self, params: Any) -> Any:
        """The final parameters, into the ``nnx.State`` ``params`` (whose arrays give the
        expected shapes: a saved model must fit the run's config)."""
        import numpy as np
        from flax import nnx

        got = self.final_arrays()
        shapes = {k: np.shape(v) for k, v in flatten(nnx.to_pure_dict(params)).items()}
        if {k: np.shape(v) for k, v in got.items()} != shapes:
            diff = sorted(set((k, np.shape(v)) for k, v in got.items()) ^ set(shapes.items()))[:3]
            raise CorruptRunError(f"the final model ({MODEL}/) does not fit the model of {CONFIG} "
                                  f"(first differences, path and shape: {diff})", path=self.path)
        return fill(params, got)

    def assemble(self) -> Assembly:
        """The finished run's assembly, its data set ready to read new inputs (the files
        it saved restored), and no parameters loaded: enough to check inputs first."""
        from fusionjax.assembly import assemble

        config = self.read_config()
        try:
            assembly = assemble(config, read_sources=False)  # its parameters are its own
        except ConfigError as e:
            raise ConfigError(f"{e}{self.plugin_hint(e, config)}") from None
        self.check_plugins(assembly)
        if not self.is_finished():
            self.restore_params(None)  # raises UnfinishedRunError
        assembly.dataset.restore(self.path)
        return assembly

    # -- plugins -----------------------------------------------------------------------

    def check_plugins(self, assembly: Assembly) -> None:
        """Every component the run used comes from the package that provided it when the
        run was trained (``run.json``): a plugin name never silently means other code."""
        used = (_quiet(self.read_facts) or {}).get("plugins", {})
        for part in [assembly.data_part, *assembly.parts]:
            then = used.get(part.spec.origin.plugin) if isinstance(used, dict) else None
            now = part.spec.origin.package
            if isinstance(then, dict) and then.get("package") not in (None, now):
                raise ConfigError(
                    f"this run used plugin {part.spec.origin.plugin!r} from package "
                    f"{then['package']} {then.get('version', '?')}, but it now comes from package "
                    f"{now}", key=f"{part.key}.type",
                    hint=f"install {then['package']} (and remove {now}) to load this run")

    def plugin_hint(self, error: ConfigError, config: Mapping[str, Any] | None = None) -> str:
        """Which plugin and package the run used, when a component no longer resolves."""
        if not error.key or not error.key.endswith(".type"):
            return ""
        node: Any = config if config is not None else _quiet(self.read_config)
        for part in error.key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        plugin = node.partition("/")[0] if isinstance(node, str) and "/" in node else None
        info = (_quiet(self.read_facts) or {}).get("plugins", {}).get(plugin)
        if not isinstance(info, dict) or "package" not in info:
            return ""
        return (f"\n  this run used plugin {plugin!r} from package {info['package']} "
                f"{info.get('version', '?')}: install it (pip install {info['package']}) and try again")


@dataclass
class Run:
    """A finished run, loaded: its assembly and its model with the trained parameters.

    ::

        run = fj.load_run("runs/digit_qa")
        run.evaluate("test").metrics            # {"loss": ..., "accuracy": ...}
        run.predict(image="seven.png", audio="three.wav", text="what is the sum")
    """

    dir: RunDir
    assembly: Assembly
    model: FusionModel

    @property
    def path(self) -> Path:
        return self.dir.path

    def evaluate(self, split: str | None = None, *, batch_size: int | None = None,
                 drop: Sequence[str] = ()) -> Evaluation:
        """Metrics over ``split`` (default: the run's ``train.eval_split``), with the
        modalities in ``drop`` treated as absent in every example."""
        from fusionjax.evaluation import evaluate_run

        return evaluate_run(self, split, batch_size=batch_size, drop=drop)

    def sweep(self, split: str | None = None, *, batch_size: int | None = None) -> list[SweepRow]:
        """Metrics with every modality, without each one, and with each one alone."""
        from fusionjax.evaluation import sweep_run

        return sweep_run(self, split, batch_size=batch_size)

    def predictor(self, *, max_batch: int = 32) -> Predictor:
        """A compiled forward pass that answers raw inputs, for many questions (batches
        padded to powers of two up to ``max_batch``)."""
        from fusionjax.prediction import Predictor

        return Predictor(self, max_batch=max_batch)

    def predict(self, *, top: int = 3, **inputs: str) -> Answer:
        """The answer for one example given as raw inputs: a file path per modality, or
        the text itself; modalities left out count as absent."""
        return self.predictor()(inputs, top=top)


def load_run(path: str | Path, *, assembly: Assembly | None = None) -> Run:
    """The finished run in ``path``, ready to evaluate and answer (with the plugins
    whose components it used installed); ``assembly``: :meth:`RunDir.assemble`'s, when
    the caller already has it."""
    import jax
    from flax import nnx

    from fusionjax import tuning

    run_dir = RunDir(path)
    assembly = assembly or run_dir.assemble()
    # the formulations the run was trained with (fusionjax.tuning): the same values here
    tuning.use((_quiet(run_dir.read_facts) or {}).get("formulations") or {})
    # the model's structure from abstract initialisation, its arrays from the checkpoint:
    # nothing is initialised only to be overwritten (random init is most of a cold load)
    graphdef, params, rest = nnx.split(assembly.abstract_model(), nnx.Param, ...)
    if jax.tree.leaves(rest):  # other variables (e.g. RNG state) are not saved: make them
        model = assembly.build(init_from=False)  # its parameters are the run's own
        nnx.update(model, run_dir.restore_params(nnx.state(model, nnx.Param)))
    else:
        model = nnx.merge(graphdef, run_dir.restore_params(params), rest)
    return Run(run_dir, assembly, model)


def _differences(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    """Key paths where two resolved configs differ (those a resume may change aside)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            key = f"{prefix}.{k}" if prefix else k
            if key not in _RESUME_MAY_CHANGE:
                out += _differences(a.get(k), b.get(k), key)
        return out
    return [] if a == b else [(prefix, a, b)]


def _read_json(path: Path, kind: type) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CorruptRunError(f"{path.name} is unreadable ({type(e).__name__}: {e})",
                              path=path.parent) from None
    if not isinstance(data, kind):
        raise CorruptRunError(f"{path.name} holds a {type(data).__name__}, not a JSON object",
                              path=path.parent, hint="it was not written by fusionjax; restore it "
                                                      "from a copy of the run")
    return data


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically: a temporary file, then a rename."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _quiet_abandoned_reads() -> None:
    """After a failed restore, TensorStore still completes the reads Orbax abandoned, and
    their callbacks find Orbax's event loop closed: Python would print one "Event loop
    is closed" traceback per read after our clear error.  Those (and only those) are
    dropped."""
    import sys

    previous = sys.unraisablehook
    if getattr(previous, "fusionjax", False):
        return

    def hook(unraisable):
        e = unraisable.exc_value
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            return
        previous(unraisable)

    hook.fusionjax = True
    sys.unraisablehook = hook


def _quiet(read):
    try:
        return read()
    except Exception:  # noqa: BLE001 - only for hints
        return None


def path_name(keys) -> str:
    """A pytree leaf's path as ``a/b/0/kernel``: how saved parameters are named (Orbax
    stores integer keys as strings, so names, not keys, match across a save)."""
    return "/".join(str(next((getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)), k))
                    for k in keys)


def flatten(tree) -> dict[str, Any]:
    """``tree``'s leaves by :func:`path_name`."""
    import jax

    return {path_name(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def fill(params: Any, arrays: Mapping[str, Any]) -> Any:
    """The ``nnx.State`` ``params`` with every parameter replaced by ``arrays[name]`` (names
    from :func:`flatten`, shapes already checked), in the parameter's own dtype."""
    import jax
    import numpy as np
    from flax import nnx

    values = jax.tree_util.tree_map_with_path(
        lambda k, v: jax.numpy.asarray(arrays[path_name(k)], np.dtype(v.dtype)), nnx.to_pure_dict(params))
    nnx.replace_by_pure_dict(params, values)
    return params
