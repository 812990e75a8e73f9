"""Does loading keep up with training?  Data throughput from files and from memory
against the train step's consumption, for the bundled real-data configs.

    python benchmarks/data_throughput.py --data ../shared/data

For each config: (1) decoding the files of the train split (WAV, IDX / PNG),
examples/s; (2) producing training batches once decoded (pairing, noise,
tokens), examples/s; (3) the compiled train step alone on a fixed batch,
examples/s; (4) the whole training loop (prefetching thread + step), examples/s.
Loading is not the bottleneck when (2) >> (3) and (4) ~= (3).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rate(n: int, seconds: float) -> float:
    return n / seconds


def batches_rate(dataset, batch: int, n_batches: int = 200) -> float:
    it = dataset.batches("train", batch, seed=1, shuffle=True, drop_remainder=True)
    next(it)  # decoded and cached already; this only starts the epoch
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return rate(batch * n_batches, time.perf_counter() - t)


def step_rate(assembly, steps: int = 40) -> float:
    import jax

    from fusionjax.parallel import data_mesh, shard_batch
    from fusionjax.training.step import make_steps

    mesh = data_mesh()
    s = make_steps(assembly.build(), assembly.optimizer, mesh, assembly.train)
    b = shard_batch(next(assembly.dataset.batches("train", assembly.train.batch_size, seed=0,
                                                  shuffle=True, drop_remainder=True)), mesh)
    state = s.init
    for _ in range(3):
        state, stats = s.train(state, b)
    jax.block_until_ready(stats)
    t = time.perf_counter()
    for _ in range(steps):
        state, stats = s.train(state, b)
    jax.block_until_ready(stats)
    return rate(steps * assembly.train.batch_size, time.perf_counter() - t)


def loop_rate(config: dict, steps: int = 300) -> float:
    import json

    from fusionjax.assembly import assemble
    from fusionjax.training.loop import train

    config["train"].update(steps=steps, log_every=50)
    with tempfile.TemporaryDirectory() as tmp:
        train(assemble(config), Path(tmp) / "run", log=lambda s: None)
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return float(np.median([x["examples_per_s"] for x in lines if "examples_per_s" in x][1:]))


def digits_report(name: str, overrides: list[str], data: str) -> dict:
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax_plugins.datasets import digit_sources as sources

    cfg = load_config(ROOT / "examples" / name, [f"data.root={data}", *overrides])
    a = assemble(cfg)
    ds = a.dataset
    sources.fsdd.cache_clear()
    sources.mnist.cache_clear()
    t = time.perf_counter()
    rec = ds.recordings("train")
    t_audio = time.perf_counter() - t
    t = time.perf_counter()
    images, _ = ds.images("train")
    t_images = time.perf_counter() - t
    return {"config": name + (" " + " ".join(overrides) if overrides else ""),
            "decode": f"{rate(len(rec.labels), t_audio):,.0f} WAV/s, "
                      f"{rate(len(images), t_images):,.0f} images/s",
            "batches": batches_rate(ds, a.train.batch_size),
            "step": step_rate(a), "loop": loop_rate(cfg)}


def manifest_report(n: int = 2000) -> dict:
    """A manifest of PNG + WAV + text files made here, decoded from files."""
    from PIL import Image

    from fusionjax.assembly import assemble

    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    rows = ["image,audio,text,label"]
    for i in range(n):
        y = i % 10
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(tmp / f"{i}.png")
        with wave.open(str(tmp / f"{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes((rng.standard_normal(6000) * 3000).astype("<i2").tobytes())
        rows.append(f"{i}.png,{i}.wav,number {y} says hello,{y}")
    (tmp / "manifest.csv").write_text("\n".join(rows) + "\n")
    cfg = {"model": {"encoders": {
               "image": {"type": "cnn_image", "channels": [16, 32], "dense": 64},
               "audio": {"type": "spectrogram_audio", "n_mels": 40, "channels": [16, 32],
                         "readout": "flatten", "dense": 64},
               "text": {"type": "lstm_text", "embed_dim": 32, "hidden": 64}},
               "fusion": {"type": "concat"}, "head": {"type": "classification", "hidden": [128]}},
           "data": {"type": "manifest", "path": str(tmp / "manifest.csv"),
                    "modalities": {"image": "image", "audio": "audio", "text": "text"},
                    "sample_rate": 8000, "num_samples": 6000, "max_len": 16},
           "train": {"batch_size": 64}}
    a = assemble(cfg)
    t = time.perf_counter()
    first = next(a.dataset.batches("train", 64, seed=0, shuffle=True, drop_remainder=True))
    t_decode = time.perf_counter() - t
    assert first["image"].shape == (64, 28, 28, 1)
    n_train = a.dataset.size("train")
    return {"config": f"manifest ({n} PNG + WAV + text rows, generated)",
            "decode": f"{rate(n_train, t_decode):,.0f} rows/s (PNG + WAV + text)",
            "batches": batches_rate(a.dataset, 64, 20), "step": step_rate(a),
            "loop": loop_rate(cfg, steps=150)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = p.parse_args()
    reports = [digits_report("avdigits.toml", [], args.data),
               digits_report("avdigits.toml", ["data.noisy=true"], args.data),
               digits_report("digit_qa.toml", [], args.data),
               manifest_report()]
    print("| config | decoding the train split's files | batches from memory, ex/s | "
          "train step alone, ex/s | training loop, ex/s | batches / step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in reports:
        print(f"| {r['config']} | {r['decode']} | {r['batches']:,.0f} | {r['step']:,.0f} | "
              f"{r['loop']:,.0f} | {r['batches'] / r['step']:.0f}x |")


if __name__ == "__main__":
    main()
