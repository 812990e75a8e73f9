"""Export a finished run: its forward pass as StableHLO, to run without fusionjax.

``fusionjax export RUN_DIR OUT`` (or :func:`export_run`) writes::

    OUT/
      model.jaxexport             the forward pass ``batch -> head outputs``, serialised with
                                  ``jax.export``; the batch dimension is symbolic (``b``)
      manifest.json               inputs (shape, dtype, input kind, preprocessing), mask keys,
                                  output, answer kind and label names, versions, the run's config
      vocab.json ...              the files the data set saved for reading text (vocabularies)
      fusionjax_export_loader.py  a standalone loader: jax and numpy only

**Parameters are baked into the module as constants**, not passed as a second input: the
artifact is then one file that needs nothing but ``jax`` to call (no pytree of parameters
to keep in step, no checkpoint library), and XLA can fold the constants.  The price is
that new weights need a new export, and the file is as large as the parameters (a few MB
for the bundled models; ``jax.export`` has no 2 GB limit of its own, but very large models
would want the parameters as an argument instead).

The module is exported for ``cpu`` and ``cuda`` (:data:`PLATFORMS`): ``jax.export``
lowers for a platform without its hardware (the export is traced once, so the fast paths
it takes are those of the exporting backend; every one gives the plain formulation's
values).  Where the installed jax cannot lower for ``cuda`` the export falls back to
``cpu`` alone, and the manifest's ``platforms`` says which it holds.

What the artifact does *not* do is read files: images and audio are decoded, resized,
resampled and normalised by the consumer, with the settings ``manifest.json`` gives per
modality (``preprocessing``); text is tokenised by the loader's ``tokenize`` with the
exported vocabulary (the same rule as :mod:`fusionjax.data.text`).  See docs/export.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fusionjax.errors import ConfigError

FORMAT = "fusionjax-export"
FORMAT_VERSION = 1
MODEL_FILE = "model.jaxexport"
MANIFEST_FILE = "manifest.json"
LOADER_FILE = "fusionjax_export_loader.py"
PLATFORMS = ("cpu", "cuda")
BATCH = "b"  # the symbolic batch dimension


def export_run(run_dir: str | Path, out_dir: str | Path, *,
               platforms: tuple[str, ...] = PLATFORMS) -> list[Path]:
    """Export the finished run in ``run_dir`` into ``out_dir`` (new, or an empty folder);
    returns the files written.  Run-directory problems raise the usual
    :class:`~fusionjax.errors.RunError`; an ``out_dir`` that holds anything is refused
    (:class:`~fusionjax.errors.ConfigError`) before the run is loaded."""
    out = Path(out_dir)
    check_out_dir(out)

    import jax
    from flax import nnx

    import fusionjax
    from fusionjax.interfaces import mask_key
    from fusionjax.rundir import RunDir, load_run

    run_path = RunDir(run_dir).path
    head_type = RunDir(run_path).read_config().get("model", {}).get("head", {}).get("type")
    run = load_run(run_path)
    model, dataset = run.model, run.assembly.dataset
    if not type(model.head).answer_from_outputs:
        raise ConfigError(f"the {head_type} head of {run_path} answers by a search that runs its "
                          "parameters again (e.g. a decoder's beam search), and an export holds "
                          "the forward pass only", hint="serve the run instead: fusionjax serve RUN_DIR")
    modalities = model.modalities
    graphdef, state = nnx.split(model)

    def forward(batch):  # the parameters are closed over: constants of the module
        return _flat_outputs(nnx.merge(graphdef, state)(batch))

    (b,) = jax.export.symbolic_shape(BATCH)
    specs = {}
    for m in modalities:
        field = dataset.spec[m]
        specs[m] = jax.ShapeDtypeStruct((b, *field.shape), np.dtype(field.dtype))
        specs[mask_key(m)] = jax.ShapeDtypeStruct((b,), np.dtype(bool))
    exported, fallback = None, None
    tries = [tuple(platforms)] + ([("cpu",)] if tuple(platforms) != ("cpu",) else [])
    for plats in tries:
        try:
            exported = jax.export.export(jax.jit(forward), platforms=plats)(specs)
            break
        except Exception as e:  # noqa: BLE001 - any lowering failure: retry for the CPU alone
            if plats == tries[-1]:
                raise
            fallback = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    blob = exported.serialize()
    jax.export.deserialize(blob)  # what a consumer does: fails now, not there, if it cannot

    # written into a hidden folder beside OUT, renamed to OUT when complete
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        (tmp / MODEL_FILE).write_bytes(blob)
        files = _copy_saved_files(run, tmp)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fusionjax_version": fusionjax.__version__,
            "jax_version": jax.__version__,
            "trained_with": run.dir.read_facts().get("versions"),
            "run_dir": str(run.path.absolute()),
            "model_file": MODEL_FILE,
            "platforms": list(exported.platforms),
            "platform_fallback": fallback,  # why cuda is missing, when it is
            "batch_dim": BATCH,
            "inputs": {m: _input_spec(dataset, m, tmp, files) for m in modalities},
            "masks": {m: mask_key(m) for m in modalities},
            "output": _output_spec(exported),
            "answer": _answer_spec(run, exported),
            "dataset": {"type": run.assembly.data_part.spec.qualified_name,
                        "resolved_settings": _jsonable(dataset.resolved_settings()),
                        "files": files},
            "config": run.dir.read_config(),
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.copyfile(Path(__file__).with_name("export_loader.py"), tmp / LOADER_FILE)
        tmp.chmod(0o755)  # mkdtemp's 0700 is not what a folder handed to others wants
        check_out_dir(out)  # still new or empty
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / name for name in (MODEL_FILE, *files, MANIFEST_FILE, LOADER_FILE)]


def check_out_dir(out: Path) -> None:
    """Refuse an ``out`` that is a file or a folder holding anything: an export never
    overwrites (or mixes with) other files."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "exists and is not empty"
        raise ConfigError(f"export folder {str(out)!r} {what}; fusionjax export never overwrites",
                          hint="give a new (or an empty) folder")


def _flat_outputs(outputs: Any) -> Any:
    """An array stays an array; any other pytree (e.g. a named tuple) becomes a flat dict
    ``{"a/b": array}``, so that a consumer needs no fusionjax class to deserialise it."""
    import jax

    from fusionjax.rundir import flatten

    return outputs if isinstance(outputs, jax.Array) else flatten(outputs)


def _dims(shape) -> list[int | str]:
    import jax

    return [str(d) if jax.export.is_symbolic_dim(d) else int(d) for d in shape]


def _output_spec(exported) -> dict[str, Any]:
    import jax

    avals = [{"shape": _dims(a.shape), "dtype": str(a.dtype)} for a in exported.out_avals]
    tree = jax.tree.unflatten(exported.out_tree, range(len(avals)))
    if isinstance(tree, dict):
        return {"structure": "dict", "leaves": {k: avals[i] for k, i in tree.items()},
                "pytree": str(exported.out_tree)}
    return {"structure": "array", **avals[0], "pytree": str(exported.out_tree)}


def _answer_spec(run, exported) -> dict[str, Any]:
    """The head's answer kind (``class``, ``labels``, ``values``, ``text``; None for a head
    without one) and what turns the outputs into it, from a probe answer on zeros."""
    import jax

    head, names = run.model.head, run.assembly.dataset.label_names
    outputs = jax.tree.unflatten(exported.out_tree, [
        np.zeros([1 if isinstance(d, str) else d for d in _dims(a.shape)], a.dtype)
        for a in exported.out_avals])
    spec: dict[str, Any] = {"kind": None, "label_names": list(names) if names else None,
                            "head": run.dir.read_config().get("model", {}).get("head", {}).get("type")}
    try:
        probe = head.answer(outputs, label_names=names)[0]
    except ConfigError:  # e.g. a contrastive head: its outputs score examples against each other
        return spec
    spec["kind"] = probe.kind
    if hasattr(probe, "threshold"):
        spec["threshold"] = probe.threshold
    if hasattr(head, "vocabulary"):  # a sequence head's text: ids -> tokens, joined by the separator
        spec["vocabulary"], spec["separator"] = list(head.vocabulary), head.separator
    return spec


def _copy_saved_files(run, out: Path) -> list[str]:
    """The files the data set saved in the run for reading new inputs (its vocabularies),
    copied from the run directory: their names are those :meth:`Dataset.save` writes."""
    with tempfile.TemporaryDirectory() as tmp:
        run.assembly.dataset.save(Path(tmp))
        names = sorted(p.name for p in Path(tmp).iterdir() if p.is_file())
        for name in names:
            source = run.path / name
            shutil.copyfile(source if source.is_file() else Path(tmp) / name, out / name)
    return names


def _input_spec(dataset, m: str, out: Path, files: list[str]) -> dict[str, Any]:
    field = dataset.spec[m]
    spec: dict[str, Any] = {"shape": list(field.shape), "batch_shape": [BATCH, *field.shape],
                            "dtype": field.dtype,
                            "input_kind": dataset.input_kind(m),
                            "metadata": _jsonable(dict(field.metadata))}
    rank, floating = len(field.shape), np.issubdtype(np.dtype(field.dtype), np.floating)
    if spec["input_kind"] == "text":
        spec["preprocessing"] = _text_settings(dataset, m, out, files)
    elif floating and rank == 3:
        spec["preprocessing"] = _image_settings(dataset, m)
    elif floating and rank == 1 and "sample_rate" in field.metadata:
        spec["preprocessing"] = {"kind": "audio", "sample_rate": field.metadata["sample_rate"],
                                 "num_samples": field.shape[0], "align": getattr(dataset, "align", None),
                                 "mono": "mean of the channels",
                                 "scale": "integer PCM / 2**(bits - 1); 8-bit: (x - 128) / 128",
                                 "resample": "polyphase (scipy.signal.resample_poly)",
                                 "length": "crop or zero-pad to num_samples, keeping the middle "
                                           "(align center) or the start (align start)"}
    return spec


def _text_settings(dataset, m: str, out: Path, files: list[str]) -> dict[str, Any]:
    """Which exported vocabulary tokenises ``m``, checked: the tokenizer rule of
    :mod:`fusionjax.data.text` with that file gives the data set's own ids on probe texts
    (its words in mixed case and punctuation, an unknown word, more words than ``max_len``).
    ``vocab`` is None where no file does (e.g. a data set whose ``encode`` reads a file)."""
    from fusionjax.data.text import _WORD, PAD, UNK, Vocabulary

    max_len = dataset.spec[m].shape[0]
    settings: dict[str, Any] = {"kind": "text", "max_len": max_len, "vocab": None, "pad_id": PAD,
                                "unk_id": UNK, "lowercase": True, "word_pattern": _WORD.pattern,
                                "truncate": "the first max_len words; then pad_id"}
    for name in files:
        try:
            vocab = Vocabulary.load(out / name)
            words = vocab.itos[2:2 + 3 * max_len]
            probes = [" ".join(words[:3]).upper() + ", zzqx!", " ".join(words), "zzqx"]
            if all(np.array_equal(vocab.encode(t, max_len), dataset.encode(m, t)) for t in probes):
                return settings | {"vocab": name, "vocab_size": len(vocab)}
        except Exception:  # noqa: BLE001 - not a vocabulary, or not this modality's
            continue
    return settings


def _image_settings(dataset, m: str) -> dict[str, Any]:
    """Size and normalisation of an image modality; the normalisation ``(pixel / 255 -
    mean) / std`` per channel is measured: the data set's ``encode`` of a black, a white
    and a grey probe image (and checked affine on the grey one).  None where ``encode``
    does not read such images or is not affine."""
    from PIL import Image

    height, width, channels = dataset.spec[m].shape
    settings: dict[str, Any] = {"kind": "image", "height": height, "width": width, "channels": channels,
                                "color": "L (greyscale)" if channels == 1 else "RGB",
                                "resize": "bilinear (Pillow), when the size differs",
                                "scale": "pixel / 255", "mean": None, "std": None}
    levels = (0, 255, 51)  # 51 / 255 = 0.2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            encoded = []
            for level in levels:
                path = Path(tmp) / f"probe{level}.png"
                Image.new("L" if channels == 1 else "RGB", (width, height),
                          level if channels == 1 else (level,) * 3).save(path)
                encoded.append(np.asarray(dataset.encode(m, str(path)), np.float64).reshape(-1, channels))
    except Exception:  # noqa: BLE001 - a data set whose images are not plain image files
        return settings
    black, white, grey = (e.mean(axis=0) for e in encoded)
    if np.any(white <= black) or not all(np.allclose(e, e[:1], atol=1e-5) for e in encoded):
        return settings
    std = 1.0 / (white - black)
    mean = -black * std
    if not np.allclose(grey, (0.2 - mean) / std, atol=1e-4):
        return settings
    return settings | {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
