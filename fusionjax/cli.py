"""The ``fusionjax`` command: parse, call the library, print, exit.

Each command parses its arguments, calls the library (the same functions the Python
API offers) and prints.  Exit codes: 0 success; 2 a usage, config or run-directory
error (a message, no traceback); 1 a failure at run time (data, training).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from fusionjax.errors import ConfigError, DataError, FusionJaxError, RunError, TrainingError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # overrides after an option (`train CONFIG --output-dir X key=value`): argparse stops
    # taking positionals at the first option, so they are taken here, in their order
    if extra and isinstance(getattr(args, "overrides", None), list) \
            and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # --json output stays valid JSON whatever a plugin prints while it loads or runs:
    # everything else that goes to stdout goes to stderr, the JSON to the real stdout
    args.stdout = sys.stdout
    quiet = contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else _nothing()
    try:
        with quiet:
            return args.func(args) or 0
    except DataError as e:
        print(f"fusionjax: data error: {e}", file=sys.stderr)
        return 1
    except TrainingError as e:
        print(f"fusionjax: training stopped: {e}", file=sys.stderr)
        return 1
    except RunError as e:
        print(f"fusionjax: run directory error: {e}", file=sys.stderr)
        return 2
    except FusionJaxError as e:
        print(f"fusionjax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fusionjax: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fusionjax plugins list --json | head`
        sys.stderr.close()
        return 0


@contextlib.contextmanager
def _nothing():
    yield


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusionjax", description="Plugin-based modality fusion in JAX.")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train the model a config describes")
    _config_args(t)
    t.add_argument("--output-dir", help="run directory (default: train.output_dir, "
                                        "else runs/<config>-<time>)")
    _distributed_args(t)
    t.set_defaults(func=_train)

    r = sub.add_parser("resume", help="continue an unfinished run from its latest checkpoint, "
                                      "with its own config (config.json)")
    r.add_argument("run_dir", metavar="RUN_DIR")
    _distributed_args(r)
    r.set_defaults(func=_resume)

    e = sub.add_parser("evaluate", help="metrics of a trained run on a split")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--split", default=None, help="default: the run's train.eval_split")
    e.add_argument("--batch-size", type=_positive_int, default=None)
    absent = e.add_mutually_exclusive_group()
    absent.add_argument("--drop", action="append", default=[], metavar="MODALITY",
                        help="treat MODALITY as absent in every example (repeatable)")
    absent.add_argument("--sweep", action="store_true",
                        help="metrics with every modality, without each one, and with each one alone")
    absent.add_argument("--corruption-sweep", action="store_true",
                        help="the metric with each modality corrupted by each corruption that "
                             "applies to it, at severities 0.25, 0.5 and 1, beside the clean one")
    e.add_argument("--corrupt", action="append", default=[], metavar="MODALITY=NAME:SEVERITY",
                   help="corrupt MODALITY of every example with augmentation NAME at SEVERITY in "
                        "(0, 1], e.g. audio=noise:0.5 (repeatable)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_evaluate)

    pr = sub.add_parser("predict", help="answer for one example given as raw files / text")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("inputs", nargs="+", metavar="modality=VALUE",
                    help='a file path (image=digit.png, audio=seven.wav) or the text itself '
                         '(text="what is the sum"); modalities left out count as absent')
    pr.add_argument("--top", type=_positive_int, default=3, help="how many classes to list (>= 1)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=_predict)

    ex = sub.add_parser("export", help="the trained forward pass as a jax.export artifact, with a "
                                       "manifest and a standalone loader (jax + numpy only)")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("out", metavar="OUT", help="a new or empty folder (never overwritten)")
    ex.set_defaults(func=_export)

    sv = sub.add_parser("serve", help="answer over HTTP: POST /predict (multipart files and text, "
                                      "or JSON text), GET /info, GET /health, the page at /")
    sv.add_argument("run_dir", metavar="RUN_DIR")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, "
                                                        "this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="default: 8000 (0: any free port)")
    sv.add_argument("--max-batch", type=_positive_int, default=32,
                    help="the most requests answered by one compiled call (default: 32)")
    sv.add_argument("--batch-window-ms", type=float, default=5.0,
                    help="how long a request waits for others to share its batch (default: 5)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0,
                    help="the most megabytes (MiB) of one request's uploads (default: 10)")
    sv.set_defaults(func=_serve)

    pk = sub.add_parser("pack", help="decode a config's data set once into one ArrayRecord file "
                                     "per split, for epochs that decode nothing (type = \"packed\")")
    pk.add_argument("config", help="a config whose [data] section is the data set to pack")
    pk.add_argument("out_dir", metavar="OUT_DIR", help="a new or empty folder (or packed data, "
                                                       "with --overwrite)")
    pk.add_argument("overrides", nargs="*", metavar="key.path=value",
                    help="override a config value, e.g. data.decode=per_read")
    pk.add_argument("--split", action="append", dest="splits", metavar="NAME",
                    help="pack this split (repeatable; default: every split; train is always packed)")
    pk.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it holds packed data")
    pk.set_defaults(func=_pack)

    pt = sub.add_parser("plot", help="loss and metric curves of one or more runs, as a PNG")
    pt.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pt.add_argument("--out", metavar="FILE.png",
                    help="default: RUN_DIR/plot.png for one run, else plot.png here")
    pt.add_argument("--metrics", nargs="+", metavar="METRIC",
                    help="which metrics, one subplot each (default: all, loss first)")
    pt.set_defaults(func=_plot)

    c = sub.add_parser("config", help="work with config files").add_subparsers(
        required=True, metavar="ACTION")
    check = c.add_parser("check", help="validate a config and print the assembled model")
    _config_args(check)
    check.add_argument("--json", action="store_true", help="print the resolved config as JSON")
    check.add_argument("--params", action="store_true",
                       help="list every component's parameters (name, shape), the PyTorch tensors "
                            "each is made from where the component declares a layout, and the "
                            "init_from sources: what a weight file must hold")
    check.set_defaults(func=_config_check)

    pl = sub.add_parser("plugins", help="installed plugins").add_subparsers(
        required=True, metavar="ACTION")
    pl_list = pl.add_parser("list", help="name, package, version, status, components, error")
    pl_list.add_argument("--json", action="store_true")
    pl_list.set_defaults(func=_plugins_list)

    co = sub.add_parser("components", help="registered components").add_subparsers(
        required=True, metavar="ACTION")
    co_list = co.add_parser("list", help="every registered encoder, fusion, head, dataset and "
                                         "augmentation")
    co_list.add_argument("--kind", choices=["encoder", "fusion", "head", "dataset", "augmentation"])
    co_list.add_argument("--json", action="store_true")
    co_list.set_defaults(func=_components_list)
    return p


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a .toml, .yaml/.yml or .json config file")
    p.add_argument("overrides", nargs="*", metavar="key.path=value",
                   help="override a config value, e.g. train.steps=100")


def _distributed_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("multi-process runs (JAX's distributed runtime; see docs/distributed.md)")
    d.add_argument("--distributed", action="store_true",
                   help="join a multi-process run, detecting the cluster (SLURM, Cloud TPU, ...)")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    d.add_argument("--num-processes", type=int, metavar="N")
    d.add_argument("--process-id", type=int, metavar="I")


def _assemble(args, *, read_sources: bool = True):
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config

    return assemble(load_config(args.config, args.overrides), read_sources=read_sources)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


def _train(args) -> int:
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise ConfigError("--coordinator, --num-processes and --process-id go together",
                          hint="or pass --distributed to let JAX detect the cluster")
    if args.distributed or args.coordinator:
        from fusionjax.parallel import initialize_distributed

        initialize_distributed(*explicit)
    # a run resumed from a checkpoint does not read its init_from sources again
    assembly = _assemble(args, read_sources=not getattr(args, "has_checkpoint", False))
    import jax

    main_process = jax.process_index() == 0
    if main_process:
        _print_summary(args.config, assembly)
    from fusionjax.training.loop import train

    out = args.output_dir or assembly.train.output_dir
    if out is None:
        out = Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    train(assembly, out, log=(lambda s: print(s, flush=True)) if main_process else (lambda s: None),
          progress=sys.stdout if main_process else None)
    return 0


def _resume(args) -> int:
    from fusionjax.rundir import RunDir

    run = RunDir(args.run_dir)
    config = run.read_config()  # NotARunError where there is no run
    args.config, args.overrides, args.output_dir = str(run.config_file), [], str(run.path)
    args.has_checkpoint = run.has_checkpoint()
    try:
        return _train(args)
    except ConfigError as e:  # e.g. a plugin the run used is no longer installed
        raise ConfigError(f"{e}{run.plugin_hint(e, config)}") from None


def _export(args) -> int:
    from fusionjax.export import MANIFEST_FILE, check_out_dir, export_run

    check_out_dir(Path(args.out))  # refused before the run loads
    written = export_run(args.run_dir, args.out)
    manifest = json.loads((Path(args.out) / MANIFEST_FILE).read_text())
    print(f"exported {args.run_dir} -> {args.out} (platforms: {', '.join(manifest['platforms'])}; "
          f"batch dimension symbolic)")
    for path in written:
        print(f"  {path}  {path.stat().st_size:,} bytes")
    print(f"run it: python {Path(args.out) / 'fusionjax_export_loader.py'} {args.out} INPUTS.npz")
    return 0


def _pack(args) -> int:
    from fusionjax.config import load_config
    from fusionjax.data.packing import build_dataset, check_out_dir, pack
    from fusionjax.data.pipeline import PipelineSettings
    from fusionjax.reference import config_value

    if "=" in args.out_dir and not Path(args.out_dir).exists():
        raise ConfigError(f"{args.out_dir!r} looks like an override, not a folder",
                          hint="the folder comes first: fusionjax pack CONFIG OUT_DIR key.path=value")
    check_out_dir(args.out_dir, args.overwrite)  # refused before the data set is built
    config = load_config(args.config, args.overrides)
    section = config.get("data")
    if section is None:
        raise ConfigError("missing section [data] (the data set to pack)", key="data")
    dataset, resolved = build_dataset(section)
    pipeline = PipelineSettings(**{k: v for k, v in section.items() if k in PipelineSettings.KEYS})
    try:
        meta = pack(dataset, args.out_dir, splits=args.splits, config=resolved,
                    overwrite=args.overwrite, workers=pipeline.workers,
                    log=lambda s: print(s, flush=True))
    except ConfigError as e:
        if e.key != "splits":
            raise
        raise ConfigError(f"--split: {e.message}", hint=e.hint) from None
    if meta["problem_count"]:
        print(f"skipped {meta['problem_count']} unreadable examples (listed in packed.json), "
              f"e.g. {meta['problems'][0]}")
    lines = ["[data]", 'type = "packed"', f"path = {json.dumps(str(Path(args.out_dir).resolve()))}"]
    if pipeline.workers:
        lines.append(f"workers = {pipeline.workers}")
    if pipeline.augment:
        lines.append(f"augment = {config_value(pipeline.augment)}")
    print("train from it with this [data] section:\n\n" + "\n".join(lines))
    return 0


def _plot(args) -> int:
    from fusionjax.plot import plot_runs

    run_dirs = [Path(d) for d in args.run_dirs]
    if args.out:
        out = Path(args.out)
    else:
        out = run_dirs[0] / "plot.png" if len(run_dirs) == 1 else Path("plot.png")
    print(plot_runs(run_dirs, out, args.metrics))
    return 0


def _evaluate(args) -> int:
    from fusionjax.evaluation import check_modalities
    from fusionjax.rundir import load_run

    run = load_run(args.run_dir)
    try:
        check_modalities(args.drop, run.model.modalities)
    except ConfigError as e:
        raise ConfigError(f"--drop: {e.message}", hint=e.hint) from None
    split = args.split or run.assembly.train.eval_split
    try:
        run.assembly.dataset.check_split(split, name=run.assembly.data_part.spec.qualified_name)
    except ConfigError as e:
        raise ConfigError(f"--split: {e.message}", hint=e.hint) from None
    size = run.assembly.dataset.size(split)
    if args.corrupt and (args.sweep or args.corruption_sweep):
        raise ConfigError("goes with a plain evaluation (and --drop), not with --sweep or "
                          "--corruption-sweep", key="--corrupt")
    if args.sweep:
        return _print_sweep(run.path, split, size, run.sweep(split, batch_size=args.batch_size),
                            args.stdout if args.json else None)
    if args.corruption_sweep:
        from fusionjax.evaluation import corruption_sweep_run

        return _print_corruption_sweep(run.path, split, size,
                                       corruption_sweep_run(run, split, batch_size=args.batch_size),
                                       args.stdout if args.json else None)
    from fusionjax.augmentation import corruptions
    from fusionjax.evaluation import evaluate_run

    augment = (corruptions(args.corrupt, run.assembly.dataset, modalities=run.model.modalities)
               if args.corrupt else None)
    drop = tuple(dict.fromkeys(args.drop))
    try:
        metrics, scored = evaluate_run(run, split, batch_size=args.batch_size, drop=drop,
                                       augment=augment)
    except ConfigError as e:
        if e.key in ("--batch-size", "train.eval_batch_size"):
            raise
        raise ConfigError(f"--drop: {e.message}", hint=e.hint) from None
    if args.json:
        print(json.dumps({"run": str(run.path), "split": split, "dropped": list(drop),
                          **({"corrupted": list(args.corrupt)} if args.corrupt else {}),
                          "examples": scored, **metrics}), file=args.stdout)
    else:
        what = f"{size} examples" if scored == size else f"{scored} of {size} examples"
        what += f", without {', '.join(drop)}" if drop else ""
        what += f", corrupted {' '.join(args.corrupt)}" if args.corrupt else ""
        print(f"{run.path} [{split}, {what}]: " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def _print_sweep(path, split: str, size: int, rows, json_out) -> int:
    if json_out is not None:
        print(json.dumps([{"condition": r.condition.name, "dropped": list(r.condition.drop),
                           "examples": r.examples, **r.metrics} for r in rows]), file=json_out)
        return 0
    names = list(rows[0].metrics)
    table = [["condition", *names, "examples"]]
    table += [[r.condition.name, *(f"{r.metrics[k]:.4f}" for k in names), str(r.examples)]
              for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    print(f"{path} [{split}, {size} examples]")
    for line in table:
        print("  ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])])
              .rstrip())
    return 0


def _print_corruption_sweep(path, split: str, size: int, rows, json_out) -> int:
    """One table: the head's first metric other than the loss, clean and under each
    modality's corruptions at each severity (``--json``: every row with every metric)."""
    if json_out is not None:
        print(json.dumps([{"modality": r.modality, "corruption": r.corruption, "severity": r.severity,
                           "examples": r.examples, **r.metrics} for r in rows]), file=json_out)
        return 0
    clean, corrupted = rows[0], rows[1:]
    metric = next((k for k in clean.metrics if k != "loss"), "loss")
    severities = list(dict.fromkeys(r.severity for r in corrupted))
    cells: dict[tuple, dict[float, float]] = {}
    for r in corrupted:
        cells.setdefault((r.modality, r.corruption), {})[r.severity] = r.metrics[metric]
    table = [["modality", "corruption", "clean", *(f"{s:g}" for s in severities)]]
    table += [[m, c, f"{clean.metrics[metric]:.4f}", *(f"{v[s]:.4f}" for s in severities)]
              for (m, c), v in cells.items()]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    print(f"{path} [{split}, {size} examples]: {metric} under corruption (severity 1 is the strongest)")
    for line in table:
        print("  ".join([c.ljust(w) for c, w in zip(line[:2], widths[:2])]
                        + [c.rjust(w) for c, w in zip(line[2:], widths[2:])]).rstrip())
    if not corrupted:
        print("(no registered corruption applies to the model's modalities)")
    return 0


def _predict(args) -> int:
    from fusionjax.prediction import Predictor, answer_kind, read_example
    from fusionjax.rundir import RunDir, load_run

    given = {}
    for item in args.inputs:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"input {item!r}: expected modality=VALUE",
                              hint='e.g. image=digit.png audio=seven.wav text="what is the sum"')
        given[name] = value
    run_dir = RunDir(args.run_dir)
    assembly = run_dir.assemble()
    example = read_example(assembly, given)  # every input checked before the model loads
    kind = answer_kind(assembly)  # a head without a single-example answer says so before it loads
    predictor = Predictor(load_run(run_dir.path, assembly=assembly), kind=kind)
    answer = predictor.answer_many([example], top=args.top)[0]
    if args.json:
        print(json.dumps(answer.to_json()), file=args.stdout)
    else:
        print("\n".join(answer.lines()))
    return 0


def _serve(args) -> int:
    from fusionjax.serving import create_app, listen, serve

    if not 0 < args.max_upload_mb <= 2 ** 20:
        raise ConfigError(f"must be a number of MiB in (0, 1048576], got {args.max_upload_mb!r}",
                          key="--max-upload-mb")
    listener = listen(args.host, args.port)  # a port in use is an error before the run loads
    # the run loads and compiles here: a bad RUN_DIR is an error before anything is served
    app = create_app(args.run_dir, max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
                     max_upload_bytes=int(args.max_upload_mb * 2 ** 20))
    return serve(app, listener,
                 on_ready=lambda url: print(f"fusionjax: serving {args.run_dir} at {url}", flush=True))


def _config_check(args) -> int:
    assembly = _assemble(args)
    if args.json:
        print(json.dumps(assembly.resolved_config(), indent=2), file=args.stdout)
    elif args.params:
        from fusionjax.transfer import parameter_listing

        print("\n".join(parameter_listing(assembly)), file=args.stdout)
    else:
        _print_summary(args.config, assembly)
    return 0


def _print_summary(config: str, assembly) -> None:
    ds = assembly.dataset
    print(f"config {config}: OK")
    print(f"data   {assembly.data_part.spec.qualified_name}: "
          + ", ".join(f"{s} {ds.size(s)}" for s in ("train", assembly.train.eval_split)))
    if ds.problems:
        print(f"       skipped {len(ds.problems)} unreadable examples, e.g. {ds.problems[0]}")
    if any(ds.absent_inputs.values()):
        from fusionjax.evaluation import absent_summary

        print(f"       absent inputs: {absent_summary(ds.absent_inputs)}")
    from fusionjax.summary import format_summary, summarize

    print("\n".join(format_summary(summarize(assembly))))


def _plugins_list(args) -> int:
    import warnings

    from fusionjax.plugins import PluginWarning, load_plugins

    with warnings.catch_warnings():  # the listing itself shows every failure, strict mode or not
        warnings.simplefilter("ignore", PluginWarning)
        infos = load_plugins(strict=False).plugins
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=2), file=args.stdout)
        return 0
    width = max((len(i.name) for i in infos), default=0)
    for i in infos:
        print(f"{i.name:<{width}}  {i.package or '?'} {i.version or '?':<10} {i.status:<8} "
              + (", ".join(i.components) if i.status == "active" else (i.error or "").split("\n")[0]))
    return 0


def _components_list(args) -> int:
    from fusionjax.plugins import default_registry

    specs = [s for s in default_registry() if args.kind in (None, s.kind)]
    if args.json:
        print(json.dumps([{"kind": s.kind, "name": s.name, "qualified_name": s.qualified_name,
                           "plugin": s.origin.plugin, "package": s.origin.package,
                           "version": s.origin.version, "summary": s.summary} for s in specs],
                         indent=2), file=args.stdout)
        return 0
    for s in specs:
        print(f"{s.kind:<12} {s.qualified_name:<40} {s.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
