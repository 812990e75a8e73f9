"""The fusion comparison of docs/fusions.md: every bundled fusion on two real tasks,
3 seeds each, the same encoders, head, optimiser and step budget for all.

    python benchmarks/fusion_zoo.py                 # every run (~75 min on 2 cores), then the report
    python benchmarks/fusion_zoo.py --only avdigits_noisy --fusions concat gated --seeds 0
    python benchmarks/fusion_zoo.py --speed         # step time of each fusion alone (quiet machine)
    python benchmarks/fusion_zoo.py --dropout-sweep # the sweep of concat trained with modality dropout
    python benchmarks/fusion_zoo.py --report --write-doc   # the tables, into docs/fusions.md

Tasks: ``avdigits_noisy`` (examples/avdigits.toml with data.noisy=true: an MNIST digit
with pixel noise and an occluding square + the same digit spoken under white noise
at -6 dB; neither modality alone is reliable) and ``digit_qa`` (examples/digit_qa.toml:
a written digit, a spoken digit and a question about both; all three modalities are
needed).  Full data sets from ``--data`` (default ../shared/data).

Per run: test accuracy, macro F1, trainable parameters (whole model and fusion),
steady-state training throughput (median of the logged windows after the first
step) and wall time.  Results are appended to a JSON-lines file as they finish, so
an interrupted comparison resumes where it stopped.  Afterwards the missing-modality
sweep (``fusionjax evaluate --sweep``) runs on seed 0 of the simplest fusion
(concat) and of the best one per task.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "fusion_zoo.jsonl"
SWEEPS = ROOT / "benchmarks" / "results" / "fusion_zoo_sweeps.jsonl"
SPEED = ROOT / "benchmarks" / "results" / "fusion_zoo_speed.jsonl"

# task -> (example config, overrides)
TASKS = {
    "avdigits_noisy": ("avdigits.toml", ["data.noisy=true", "train.steps=600", "train.log_every=100"]),
    "digit_qa": ("digit_qa.toml", ["train.steps=1000", "train.log_every=100"]),
}


def bundled_fusions() -> dict[str, dict]:
    """Every bundled fusion -> the settings it declares for this comparison
    (``benchmark_settings``: the defaults, except a choice a fusion needs made for it)."""
    from fusionjax.plugins import default_registry

    return {s.name: dict(s.load().benchmark_settings) for s in default_registry()
            if s.kind == "fusion" and s.origin.package == "fusionjax"}


DROPOUT = 0.3  # the modality dropout of the extra sweep: each modality hidden with this probability


def _config(task: str, fusion: str, seed: int, data: str, dropout: bool = False) -> dict:
    from fusionjax.config import load_config

    file, overrides = TASKS[task]
    cfg = load_config(ROOT / "examples" / file,
                      [*overrides, f"data.root={data}", f"train.seed={seed}", f"data.seed={seed}"])
    cfg["model"]["fusion"] = {"type": fusion, **bundled_fusions()[fusion]}
    if dropout:
        cfg["train"]["modality_dropout"] = {m: DROPOUT for m in cfg["model"]["encoders"]}
    return cfg


def run(task: str, fusion: str, seed: int, data: str, keep: Path | None = None,
        dropout: bool = False) -> dict:
    from fusionjax.assembly import assemble
    from fusionjax.training.loop import train

    assembly = assemble(_config(task, fusion, seed, data, dropout))
    counts = assembly.param_counts()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = keep or Path(tmp) / "run"
        result = train(copy.copy(assembly), run_dir, log=lambda s: None)
        rates = [r["examples_per_s"] for r in map(json.loads, (run_dir / "metrics.jsonl").open())
                 if r.get("split") == "train" and "examples_per_s" in r]
    return {"task": task, "fusion": fusion, "seed": seed, "steps": assembly.train.steps,
            "params": sum(counts.values()), "fusion_params": counts["model.fusion"],
            "examples_per_s": statistics.median(rates[1:] or rates),
            "wall_s": round(time.perf_counter() - t0, 1), **result.eval_metrics}


def sweep(task: str, fusion: str, data: str, dropout: bool = False) -> list[dict]:
    """Train seed 0 again, keep the run, and evaluate it with modalities removed."""
    from fusionjax.evaluation import sweep_run
    from fusionjax.rundir import load_run

    with tempfile.TemporaryDirectory() as tmp:
        run(task, fusion, 0, data, keep=Path(tmp) / "run", dropout=dropout)
        rows = sweep_run(load_run(Path(tmp) / "run"), "test", batch_size=250)
    name = f"{fusion} + modality dropout {DROPOUT}" if dropout else fusion
    return [{"task": task, "fusion": name, "condition": r.condition.name, "examples": r.examples,
             **r.metrics} for r in rows]


def speed(task: str, fusion: str, data: str, warmup: int = 10, timed: int = 60) -> dict:
    """Training throughput alone: ``timed`` steps after ``warmup``, on a quiet machine
    (the accuracy runs' own rates are kept too, but they share the CPU with whatever
    else runs)."""
    import jax

    from fusionjax.assembly import assemble
    from fusionjax.parallel import data_mesh, shard_batch
    from fusionjax.training.loop import _epochs
    from fusionjax.training.step import make_steps

    assembly = assemble(_config(task, fusion, 0, data))
    mesh = data_mesh()
    steps = make_steps(assembly.build(), assembly.optimizer, mesh, assembly.train)
    batches = [shard_batch(b, mesh) for b, _ in zip(_epochs(assembly, assembly.train.batch_size, 0),
                                                     range(8))]
    state = steps.init
    t0 = time.perf_counter()
    for i in range(warmup + timed):
        if i == warmup:
            jax.block_until_ready(state)
            t0 = time.perf_counter()
        state, _ = steps.train(state, batches[i % len(batches)])
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    return {"task": task, "fusion": fusion, "step_ms": round(1000 * seconds / timed, 2),
            "examples_per_s": round(timed * assembly.train.batch_size / seconds, 1)}


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _by_fusion(rows: list[dict], task: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["task"] == task:
            out.setdefault(r["fusion"], []).append(r)
    return out


def best(rows: list[dict], task: str) -> str | None:
    groups = _by_fusion(rows, task)
    return max(groups, key=lambda f: statistics.mean(r["accuracy"] for r in groups[f])) if groups else None


def report(path: Path = OUT, sweeps: Path = SWEEPS) -> str:
    rows, sweep_rows = _load(path), _load(sweeps)
    quiet = {(r["task"], r["fusion"]): r for r in _load(SPEED)}
    out = []
    for task in TASKS:
        groups = _by_fusion(rows, task)
        if not groups:
            continue
        steps = next(iter(groups.values()))[0]["steps"]
        out += [f"### {task} ({steps} steps, batch 64, seeds: "
                f"{', '.join(str(r['seed']) for r in next(iter(groups.values())))})", "",
                "| fusion | test accuracy % (mean ± sd) | min..max | macro F1 | params (fusion) | "
                "step ms | train ex/s | wall s / run |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        order = sorted(groups, key=lambda f: -statistics.mean(r["accuracy"] for r in groups[f]))
        for f in order:
            rs = groups[f]
            acc = [100 * r["accuracy"] for r in rs]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            out.append(
                f"| {f} | {statistics.mean(acc):.2f} ± {sd:.2f} | {min(acc):.2f}..{max(acc):.2f} | "
                f"{statistics.mean(r['macro_f1'] for r in rs):.3f} | {rs[0]['params']:,} "
                f"({rs[0]['fusion_params']:,}) | {_speed(quiet, task, f, rs)} | "
                f"{statistics.median(r['wall_s'] for r in rs):.0f} |")
        out.append("")
        task_sweeps = [r for r in sweep_rows if r["task"] == task]
        if task_sweeps:
            conditions = list(dict.fromkeys(r["condition"] for r in task_sweeps))
            fusions = list(dict.fromkeys(r["fusion"] for r in task_sweeps))
            out += [f"Missing modalities ({task}, seed 0, test accuracy %; `-m`: modality m absent "
                    "from every test example, `only m`: every other one absent):", "",
                    "| fusion (training) | " + " | ".join(conditions) + " |",
                    "| --- |" + " --- |" * len(conditions)]
            for f in fusions:
                acc = {r["condition"]: 100 * r["accuracy"] for r in task_sweeps if r["fusion"] == f}
                out.append(f"| {f} | " + " | ".join(f"{acc[c]:.1f}" for c in conditions) + " |")
            out.append("")
    return "\n".join(out)


def _speed(quiet: dict, task: str, fusion: str, rows: list[dict]) -> str:
    """Step time and rate from the quiet-machine pass, else the runs' own median rate."""
    if (task, fusion) in quiet:
        q = quiet[task, fusion]
        return f"{q['step_ms']:.1f} | {q['examples_per_s']:.0f}"
    return f"– | {statistics.median(r['examples_per_s'] for r in rows):.0f}*"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=list(TASKS), help="tasks")
    p.add_argument("--fusions", nargs="+", choices=list(bundled_fusions()))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--dropout-sweep", action="store_true",
                   help=f"only the sweep of concat trained with modality dropout {DROPOUT}")
    p.add_argument("--speed", action="store_true",
                   help="only time the training step of each fusion (run it on a quiet machine)")
    p.add_argument("--report", action="store_true", help="print the tables of --out and exit")
    p.add_argument("--write-doc", action="store_true", help="with --report: also rewrite docs/fusions.md")
    args = p.parse_args()
    if args.report:
        print(report(args.out))
        if args.write_doc:
            write_doc(report(args.out))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.speed:
        for task in args.only or TASKS:
            for fusion in args.fusions or bundled_fusions():
                r = speed(task, fusion, args.data)
                print(json.dumps(r), flush=True)
                with SPEED.open("a") as f:
                    f.write(json.dumps(r) + "\n")
        return
    if args.dropout_sweep:
        for task in args.only or TASKS:
            with SWEEPS.open("a") as f:
                for row in sweep(task, "concat", args.data, dropout=True):
                    f.write(json.dumps(row) + "\n")
        return
    done = {(r["task"], r["fusion"], r["seed"]) for r in _load(args.out)}
    for task in args.only or TASKS:
        for fusion in args.fusions or bundled_fusions():
            for seed in args.seeds:
                if (task, fusion, seed) in done:
                    continue
                r = run(task, fusion, seed, args.data)
                print(json.dumps(r), flush=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    if not args.no_sweep:
        swept = {(r["task"], r["fusion"]) for r in _load(SWEEPS)}
        for task in args.only or TASKS:
            for fusion in dict.fromkeys(["concat", best(_load(args.out), task)]):
                if fusion and (task, fusion) not in swept:
                    with SWEEPS.open("a") as f:
                        for row in sweep(task, fusion, args.data):
                            f.write(json.dumps(row) + "\n")
    print(report(args.out))
    write_doc(report(args.out))


DOC = ROOT / "docs" / "fusions.md"
BEGIN, END = "<!-- fusion_zoo:begin -->", "<!-- fusion_zoo:end -->"


def write_doc(tables: str) -> None:
    """Replace the generated part of docs/fusions.md."""
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    stamp = f"_Generated {time.strftime('%Y-%m-%d')} by `benchmarks/fusion_zoo.py`._"
    DOC.write_text(f"{head}{BEGIN}\n{stamp}\n\n{tables}\n{END}{tail}")


if __name__ == "__main__":
    main()
