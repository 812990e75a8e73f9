"""The accuracy results reported in the README: every run on the full data sets,
3 seeds each, test split.  Results are appended to a JSON-lines file as they come
(so an interrupted run keeps what it finished); ``--table`` prints the summary.

    python benchmarks/results.py --data ../shared/data              # ~40 min on 2 cores
    python benchmarks/results.py --only avdigits_noisy --seeds 0
    python benchmarks/results.py --table
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
OUT = ROOT / "benchmarks" / "results" / "results.jsonl"

# name -> (example config, overrides, modalities to drop)
RUNS = {
    "avdigits/image": ("avdigits.toml", [], ["audio"]),
    "avdigits/audio": ("avdigits.toml", [], ["image"]),
    "avdigits/fused": ("avdigits.toml", [], []),
    "avdigits_noisy/image": ("avdigits.toml", ["data.noisy=true"], ["audio"]),
    "avdigits_noisy/audio": ("avdigits.toml", ["data.noisy=true"], ["image"]),
    "avdigits_noisy/fused": ("avdigits.toml", ["data.noisy=true"], []),
    "digit_qa/fused": ("digit_qa.toml", ["train.steps=6000", "train.log_every=500"], []),
    "sms_spam/text": ("sms_spam.toml", [], []),
    # answers in words: CER, WER and sequence accuracy (the second table)
    "digit_speech/ctc": ("digit_speech.toml", [], []),
    "digit_strips/ctc": ("digit_strips.toml", [], []),
    "digit_qa_sentence/decoder": ("digit_qa_sentence.toml", [], []),
}


def run(name: str, seed: int, data: str) -> dict:
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax.training.loop import train

    file, overrides, drop = RUNS[name]
    cfg = load_config(ROOT / "examples" / file,
                      [*overrides, f"data.root={data}", f"train.seed={seed}", f"data.seed={seed}"])
    for modality in drop:
        del cfg["model"]["encoders"][modality]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(assemble(copy.deepcopy(cfg)), Path(tmp) / "run", log=lambda s: None)
    return {"name": name, "seed": seed, "steps": cfg.get("train", {}).get("steps"),
            "wall_s": round(time.perf_counter() - t0, 1), **result.eval_metrics}


def _spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def table(path: Path = OUT) -> str:
    rows: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r["name"], []).append(r)
    out = ["| run | seeds | test accuracy (mean ± sd) | min..max | other | wall s / run |",
           "| --- | --- | --- | --- | --- | --- |"]
    sequences = ["", "| run | seeds | CER % | WER % | sequence accuracy % | min..max | wall s / run |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in RUNS:
        rs = rows.get(name)
        if not rs:
            continue
        if "sequence_accuracy" in rs[0]:
            acc = [100 * r["sequence_accuracy"] for r in rs]
            sequences.append(f"| {name} | {len(rs)} | {_spread([100 * r['cer'] for r in rs])} | "
                             f"{_spread([100 * r['wer'] for r in rs])} | {_spread(acc)} | "
                             f"{min(acc):.2f}..{max(acc):.2f} | "
                             f"{statistics.median(r['wall_s'] for r in rs):.0f} |")
            continue
        acc = [100 * r["accuracy"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        other = ""
        if "f1" in rs[0]:
            f1 = [r["f1"] for r in rs]
            other = f"spam F1 {statistics.mean(f1):.3f} ± {statistics.stdev(f1) if len(f1) > 1 else 0:.3f}"
        out.append(f"| {name} | {len(rs)} | {statistics.mean(acc):.2f} ± {sd:.2f} | "
                   f"{min(acc):.2f}..{max(acc):.2f} | {other} | "
                   f"{statistics.median(r['wall_s'] for r in rs):.0f} |")
    return "\n".join(out + (sequences if len(sequences) > 3 else []))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", help="run names or prefixes, e.g. avdigits_noisy")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the summary of --out and exit")
    args = p.parse_args()
    if args.table:
        print(table(args.out))
        return
    names = [n for n in RUNS if not args.only or any(n.startswith(o) for o in args.only)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        for seed in args.seeds:
            r = run(name, seed, args.data)
            print(json.dumps(r), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(r) + "\n")
    print(table(args.out))


if __name__ == "__main__":
    main()
