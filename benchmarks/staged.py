"""The staged recipe of ``examples/staged_avdigits.toml`` against training from scratch, on
avdigits-noisy (full sets), 3 seeds, test split.  Every stage runs through the Python API with
the same overrides as the commands in the config's header; rows are appended to a JSON-lines
file as each stage finishes (an interrupted run keeps them); ``--table`` prints the summary.

Arms, per seed (``train.seed`` = ``data.seed`` = the seed, so every arm of a seed has the same
test set):

* ``staged``: 1a image only, 1b audio only, 2 fused with both encoders from stage 1 and
  frozen, 3 everything from stage 2 and trainable, encoders at ``lr_scale`` 0.1.
* ``scratch``: the fused model from random init for the staged arm's total steps.
* ``scratch_fused_steps``: the same for stages 2 + 3's steps only.

    python benchmarks/staged.py --data ../shared/data          # ~20-25 min on 2 cores
    python benchmarks/staged.py --seeds 0 --steps 100 50 50     # a quick check (own --out!)
    python benchmarks/staged.py --table

The table in docs/transfer.md was measured before the per-machine conv formulations
(fusionjax/tuning.py); ``FUSIONJAX_TUNING=off`` runs the same code (checked: stage 1a of seed 0
is bit-identical).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "staged_avdigits.toml"
OUT = ROOT / "benchmarks" / "results" / "staged.jsonl"
STEPS = (1500, 500, 1000)  # each unimodal stage, stage 2 (frozen), stage 3 (tuned)

# stage 1: the file's section of that modality alone replaces model.encoders (as in the header)
UNIMODAL = {
    "image": 'model.encoders={image={type="cnn_image",channels=[16,32],dense=64}}',
    "audio": 'model.encoders={audio={type="spectrogram_audio",n_fft=256,hop_length=128,'
             'n_mels=40,channels=[16,32],readout="flatten",dense=64}}',
}
ARMS = ("staged", "scratch", "scratch_fused_steps")
STAGES = ("1a_image", "1b_audio", "2_frozen", "3_tuned")


def stages(tmp: Path, steps: tuple[int, int, int]) -> dict[str, dict[str, list[str]]]:
    """arm -> stage -> overrides (run directories under ``tmp``)."""
    uni, frozen, tuned = steps
    d = {s: str(tmp / s) for s in STAGES}
    return {
        "staged": {
            "1a_image": [UNIMODAL["image"], f"train.steps={uni}"],
            "1b_audio": [UNIMODAL["audio"], f"train.steps={uni}"],
            "2_frozen": [f"train.steps={frozen}",
                         *(f"model.encoders.{m}.{k}" for m in ("image", "audio") for k in (
                             f"init_from={d['1a_image' if m == 'image' else '1b_audio']}",
                             "trainable=false"))],
            "3_tuned": [f"train.steps={tuned}", f"model.head.init_from={d['2_frozen']}",
                        *(f"model.encoders.{m}.{k}" for m in ("image", "audio") for k in (
                            f"init_from={d['2_frozen']}", "lr_scale=0.1"))],
        },
        "scratch": {"fused": [f"train.steps={2 * uni + frozen + tuned}"]},
        "scratch_fused_steps": {"fused": [f"train.steps={frozen + tuned}"]},
    }


def check_unimodal() -> None:
    """Each stage-1 override holds exactly that modality's section of the config file (so
    the stage-1 encoder is the fused model's)."""
    from fusionjax.config import load_config

    fused = load_config(CONFIG)["model"]["encoders"]
    for m, override in UNIMODAL.items():
        alone = load_config(CONFIG, [override])["model"]["encoders"]
        if alone != {m: fused[m]}:
            raise SystemExit(f"UNIMODAL[{m!r}] is not {CONFIG.name}'s [model.encoders.{m}]: "
                             f"{alone} != {fused[m]}")


def run_arm(arm: str, seed: int, data: str, steps: tuple[int, int, int], out: Path) -> None:
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        total = 0
        for stage, overrides in stages(Path(tmp), steps)[arm].items():
            cfg = load_config(CONFIG, [*overrides, f"data.root={data}", f"train.seed={seed}",
                                       f"data.seed={seed}"])
            t0 = time.perf_counter()
            result = train(assemble(cfg), Path(tmp) / stage, log=lambda s: None)
            n = cfg["train"]["steps"]
            total += n
            row = {"name": arm, "seed": seed, "stage": stage, "steps": n, "total_steps": total,
                   "wall_s": round(time.perf_counter() - t0, 1), **result.eval_metrics}
            print(json.dumps(row), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")


def _stat(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f} ({min(values):.2f}..{max(values):.2f})"


def table(path: Path = OUT) -> str:
    """Per arm and stage: test accuracy (%) mean ± sample standard deviation (min..max), the
    steps, and the wall time (mean seconds per seed; an arm's last row: all its stages); then
    the staged arm's final accuracy minus each other arm's, seed by seed."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows.setdefault((r["name"], r["stage"]), []).append(r)
    out = ["| arm | stage | seeds | steps (stage / total) | test accuracy %, mean ± sd (min..max) "
           "| test loss | wall s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm in ARMS:
        keys = [k for k in rows if k[0] == arm]
        for i, (_, stage) in enumerate(keys):
            rs = rows[(arm, stage)]
            acc = [100 * r["accuracy"] for r in rs]
            last = i == len(keys) - 1  # the arm's result, in bold, timed over all its stages
            wall = statistics.mean(sum(x["wall_s"] for k in (keys if last else [(arm, stage)])
                                       for x in rows[k] if x["seed"] == r["seed"]) for r in rs)
            b = "**" if last else ""
            out.append(f"| {arm if i == 0 else ''} | {stage} | {len(rs)} | "
                       f"{rs[0]['steps']} / {rs[0]['total_steps']} | {b}{_stat(acc)}{b} | "
                       f"{statistics.mean(r['loss'] for r in rs):.3f} | {wall:.0f} |")
    final = {arm: {r["seed"]: 100 * r["accuracy"] for r in rows[keys[-1]]}
             for arm in ARMS if (keys := [k for k in rows if k[0] == arm])}
    out += ["", "sd: sample standard deviation over seeds; wall s: mean per seed (an arm's last row: "
                "all its stages), on a shared 2-core CPU", ""]
    for other in ARMS[1:]:
        seeds = sorted(set(final.get("staged", {})) & set(final.get(other, {})))
        if seeds:
            diffs = ", ".join(f"{final['staged'][s] - final[other][s]:+.2f}" for s in seeds)
            out.append(f"staged - {other}, test accuracy per seed {seeds}: {diffs} points")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--steps", type=int, nargs=3, default=STEPS, metavar=("UNIMODAL", "FROZEN", "TUNED"))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the summary of --out and exit")
    args = p.parse_args()
    if args.table:
        print(table(args.out))
        return
    check_unimodal()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:  # seed by seed: an interrupted run keeps whole seeds
        for arm in args.arms:
            run_arm(arm, seed, args.data, tuple(args.steps), args.out)
    print(table(args.out))


if __name__ == "__main__":
    main()
