"""Data bigger than memory: a training run on a generated manifest of PNG + WAV + text
files, decoded per read by the Grain pipeline.

    python benchmarks/large_data.py --rows 200000 20000 --workers 0   # memory vs rows
    python benchmarks/large_data.py --rows 20000 --workers 0 1 2      # worker processes
    python benchmarks/large_data.py --rows 200000 --workers 0 --packed  # after fusionjax pack

For each (rows, workers): the peak resident memory of the training process and its
worker processes together (sampled from /proc every 0.1 s), the time from launching
``fusionjax train`` to the end of its first step, the training loop's throughput
(median of the logged examples/s) and, once per row count, the compiled train step
alone on one fixed batch (examples/s): the pipeline keeps up when the loop's rate is
the step's.  Files are written once under ``--dir`` (one PNG and one WAV per row,
distinct files; 200,000 rows take about 1.8 GB) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE, NUM_SAMPLES = 8000, 2000


def make_manifest(folder: Path, rows: int) -> Path:
    """``rows`` rows of a 10-class task: a PNG of stripes, a WAV of a tone and a text,
    each carrying the label (so that the run learns); written once."""
    from PIL import Image

    manifest = folder / f"manifest_{rows}.csv"
    if manifest.exists():
        return manifest
    files = folder / "files"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
    lines = ["image,audio,text,label"]
    for i in range(rows):
        y = i % 10
        png, wav = files / f"{i}.png", files / f"{i}.wav"
        if not wav.exists():
            img = rng.integers(0, 60, (28, 28), dtype=np.uint8)
            img[:, y * 2:y * 2 + 6] += 150
            Image.fromarray(img).save(png)
            tone = np.sin(2 * np.pi * (300 + 80 * y) * t) * 8000 + rng.standard_normal(NUM_SAMPLES) * 2000
            with wave.open(str(wav), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SAMPLE_RATE)
                w.writeframes(tone.astype("<i2").tobytes())
        lines.append(f"files/{i}.png,files/{i}.wav,this row says {y},{y}")  # 13 words in all
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def config(manifest: Path, workers: int, steps: int) -> dict:
    return {"model": {"encoders": {
                "image": {"type": "cnn_image", "channels": [16, 32], "dense": 64},
                "audio": {"type": "spectrogram_audio", "n_fft": 256, "hop_length": 128, "n_mels": 32,
                          "channels": [16, 32], "dense": 64},
                "text": {"type": "lstm_text", "embed_dim": 32, "hidden": 64}},
                "fusion": {"type": "concat"}, "head": {"type": "classification", "hidden": [64]}},
            "data": {"type": "manifest", "path": str(manifest), "split_column": None,
                     "modalities": {"image": "image", "audio": "audio", "text": "text"},
                     "sample_rate": SAMPLE_RATE, "num_samples": NUM_SAMPLES, "max_len": 8,
                     "test_fraction": 0.01, "decode": "per_read", "workers": workers},
            "train": {"batch_size": 64, "steps": steps, "log_every": 25, "seed": 0}}


def packed(manifest: Path, workers: int, steps: int) -> tuple[dict, float]:
    """The same run from ``fusionjax pack``'s files (packed once, next to the manifest),
    and the seconds packing took (0 if it was packed already)."""
    from fusionjax.data.packing import build_dataset, pack

    cfg = config(manifest, workers, steps)
    out = manifest.with_suffix(".packed")
    t = time.perf_counter()
    if not out.exists():
        section = {k: v for k, v in cfg["data"].items() if k != "workers"}
        dataset, resolved = build_dataset(section)
        pack(dataset, out, config=resolved, workers=2, log=lambda s: None)
    cfg["data"] = {"type": "packed", "path": str(out), "workers": workers}
    return cfg, time.perf_counter() - t


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def run(settings: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(settings))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fusionjax", "train", str(cfg), "--output-dir",
                                 str(Path(tmp) / "run")], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "JAX_PLATFORMS": "cpu"})
        peak, first, out = 0, [], []

        def read():  # the log, and when the first step ended
            for line in proc.stdout:
                out.append(line)
                if not first and "compiled and ran the first step" in line:
                    first.append(time.perf_counter() - t0)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.1)
        reader.join()
        out = "".join(out)
        if proc.returncode != 0:
            raise SystemExit(f"the run failed:\n{out[-3000:]}")
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [x["examples_per_s"] for x in lines if "examples_per_s" in x][1:]
    return {"peak_rss_mb": peak / 2**20, "first_step_s": first[0], "loop": float(np.median(rates))}


def step_alone(settings: dict) -> float:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from data_throughput import step_rate

    from fusionjax.assembly import assemble

    return step_rate(assemble(settings))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[200_000, 20_000])
    p.add_argument("--workers", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--dir", default="/tmp/fusionjax_large_data")
    p.add_argument("--packed", action="store_true", help="train from `fusionjax pack`'s files")
    args = p.parse_args()
    print("| rows | data | workers | peak RSS, MB | launch to first step, s | training loop, ex/s | "
          "train step alone, ex/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for rows in args.rows:
        t = time.perf_counter()
        manifest = make_manifest(Path(args.dir), rows)
        print(f"(manifest of {rows} rows ready in {time.perf_counter() - t:.0f} s)", file=sys.stderr)
        alone = None
        for w in args.workers:
            if args.packed:
                settings, seconds = packed(manifest, w, args.steps)
                if seconds:
                    print(f"(packed in {seconds:.0f} s)", file=sys.stderr)
            else:
                settings = config(manifest, w, args.steps)
            alone = alone or step_alone(settings)
            r = run(settings)
            data = "packed" if args.packed else "manifest, per read"
            print(f"| {rows:,} | {data} | {w} | {r['peak_rss_mb']:,.0f} | {r['first_step_s']:.1f} | "
                  f"{r['loop']:,.0f} | {alone:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
