"""Does augmentation make a model generalise to inputs it never saw?  Two experiments,
each without and with augmentation, over seeds (``train.seed`` = ``data.seed``):

    python benchmarks/generalisation.py --data ../shared/data [--seeds 0 1 2] [--only speaker]

* ``speaker``: spoken digits (FSDD, audio only), trained on five speakers and tested on
  the sixth (``--speaker``, default theo), never heard in training; the manifest is
  written here, with a split column.  Augmentation: gain, speed, time shift, additive
  noise, and SpecAugment in the spectrogram encoder.
* ``inverted``: avdigits (image + audio, fused), tested on the standard test split and
  on the same split with every image inverted (dark digits on light:
  ``--corrupt image=invert:1``).  Augmentation: inversion with probability 0.5.

Prints a table of accuracies (mean ± std over the seeds) and appends every run to
``benchmarks/results/generalisation.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "generalisation.jsonl"

AUDIO_AUGMENT = [{"type": "gain", "db": [-10, 10]}, {"type": "speed", "factor": [0.85, 1.15]},
                 {"type": "time_shift", "max_shift": 0.1, "mode": "zeros"},
                 {"type": "noise", "snr_db": [10, 40]}]
SPEC_AUGMENT = {"time_masks": 2, "time_width": 6, "freq_masks": 2, "freq_width": 5}


def speaker_config(data: str, speaker: str, folder: Path, augment: bool, steps: int = 1500,
                   workers: int = 0) -> dict:
    recordings = Path(data) / "fsdd" / "recordings"
    manifest = folder / f"fsdd_without_{speaker}.csv"
    rows = ["audio,label,split"] + [
        f"{p},{p.name.split('_')[0]},{'test' if p.name.split('_')[1] == speaker else 'train'}"
        for p in sorted(recordings.glob("*.wav"))]
    manifest.write_text("\n".join(rows) + "\n")
    audio = {"type": "spectrogram_audio", "n_fft": 256, "hop_length": 128, "n_mels": 40,
             "channels": [16, 32], "readout": "flatten", "dense": 64, **(SPEC_AUGMENT if augment else {})}
    return {"model": {"encoders": {"audio": audio}, "fusion": {"type": "concat"},
                      "head": {"type": "classification", "hidden": [128]}},
            "data": {"type": "manifest", "path": str(manifest), "modalities": {"audio": "audio"},
                     "split_column": "split", "sample_rate": 8000, "num_samples": 6000,
                     "workers": workers, **({"augment": {"audio": AUDIO_AUGMENT}} if augment else {})},
            "train": {"steps": steps, "batch_size": 64, "log_every": 250, "eval_batch_size": 500,
                      "optimizer": {"name": "adam", "learning_rate": 1e-3}}}


def inverted_config(data: str, augment: bool) -> dict:
    from fusionjax.config import load_config

    cfg = load_config(ROOT / "examples" / "avdigits.toml", [f"data.root={data}"])
    if augment:
        cfg["data"]["augment"] = {"image": [{"type": "invert", "p": 0.5}]}
    return cfg


def run(cfg: dict, seed: int, corrupt: list[str]) -> dict:
    from fusionjax.assembly import assemble
    from fusionjax.augmentation import corruptions
    from fusionjax.evaluation import evaluate
    from fusionjax.parallel import data_mesh
    from fusionjax.training.loop import train

    cfg = json.loads(json.dumps(cfg))
    cfg["train"]["seed"] = seed
    cfg["data"]["seed"] = seed
    assembly = assemble(cfg)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(assembly, Path(tmp) / "run", log=lambda s: None)
    out = {"accuracy": result.eval_metrics["accuracy"], "wall_s": round(time.perf_counter() - t, 1)}
    if corrupt:
        mesh = data_mesh()
        corrupted = evaluate(result.steps, result.state, assembly, assembly.train.eval_split,
                             assembly.train.eval_batch(mesh.devices.size), mesh,
                             augment=corruptions(corrupt, assembly.dataset))
        out["corrupted"] = corrupted.metrics["accuracy"]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", choices=["speaker", "inverted"])
    p.add_argument("--speaker", default="theo")
    p.add_argument("--steps", type=int, default=1500, help="of the speaker runs")
    p.add_argument("--workers", type=int, default=0, help="data.workers of the speaker runs")
    p.add_argument("--augment", choices=["off", "on", "both"], default="both")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for experiment in ("speaker", "inverted"):
            if args.only and args.only != experiment:
                continue
            for augment in {"off": (False,), "on": (True,), "both": (False, True)}[args.augment]:
                if experiment == "speaker":
                    cfg = speaker_config(args.data, args.speaker, Path(folder), augment, args.steps,
                                         args.workers)
                    corrupt = []
                else:
                    cfg, corrupt = inverted_config(args.data, augment), ["image=invert:1"]
                results = []
                for seed in args.seeds:
                    r = run(cfg, seed, corrupt)
                    record = {"experiment": experiment, "augment": augment, "seed": seed, **r}
                    if experiment == "speaker":
                        record |= {"held_out_speaker": args.speaker, "steps": args.steps,
                                   "recipe": {"audio": AUDIO_AUGMENT, "spec_augment": SPEC_AUGMENT}
                                   if augment else None}
                    with OUT.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    print(json.dumps(record), flush=True)
                    results.append(r)
                rows.append((experiment, augment, results))
    print("\n| experiment | augmentation | standard test accuracy % | unseen condition accuracy % |")
    print("| --- | --- | --- | --- |")
    for experiment, augment, results in rows:
        acc = 100 * np.array([r["accuracy"] for r in results])
        if experiment == "speaker":
            print(f"| held-out speaker {args.speaker} (audio only) | {'on' if augment else 'off'} | "
                  f"- | {acc.mean():.2f} ± {acc.std():.2f} |")
        else:
            inv = 100 * np.array([r["corrupted"] for r in results])
            print(f"| avdigits, test images inverted (fused) | {'on' if augment else 'off'} | "
                  f"{acc.mean():.2f} ± {acc.std():.2f} | {inv.mean():.2f} ± {inv.std():.2f} |")


if __name__ == "__main__":
    main()
