"""Two processes on 127.0.0.1 read disjoint halves of the data and train like one.

    python benchmarks/two_processes.py [--steps 60]

Runs the bundled ``avdigits`` example (shipped subset) for ``--steps`` steps three ways:
one process, then two processes joined by JAX's distributed runtime (CPU collectives
over gloo).  Every process counts the examples its pipeline reads (epoch, index).
Prints the reads of each process, their overlap, whether together they are the single
process's reads, and the largest difference between the two runs' logged losses.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(out: Path, steps: int, coordinator: str | None, process: int, processes: int) -> None:
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config
    from fusionjax.parallel import initialize_distributed
    from fusionjax.training.loop import train

    if coordinator:
        initialize_distributed(coordinator, processes, process)
    cfg = load_config(ROOT / "examples" / "avdigits.toml",
                      [f"train.steps={steps}", "train.log_every=10"])
    assembly = assemble(cfg)
    reads: list[tuple[int, int]] = []
    source = assembly.dataset.source

    class Counted:
        def __init__(self, inner, seed):
            self.inner, self.seed = inner, seed

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            reads.append((self.seed, int(i)))
            return self.inner[i]

    assembly.dataset.source = lambda split, *, seed: (Counted(source(split, seed=seed), seed)
                                                       if split == "train" else source(split, seed=seed))
    train(assembly, out / "run", log=lambda s: None)
    (out / f"reads_{process}.json").write_text(json.dumps(reads))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--worker", nargs=4, metavar=("OUT", "COORDINATOR", "PROCESS", "PROCESSES"))
    args = p.parse_args()
    if args.worker:
        out, coord, i, n = args.worker
        return worker(Path(out), args.steps, None if coord == "-" else coord, int(i), int(n))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        one.mkdir(), two.mkdir()
        me = [sys.executable, __file__, "--steps", str(args.steps), "--worker"]
        subprocess.run([*me, str(one), "-", "0", "1"], check=True, env=env)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = [subprocess.Popen([*me, str(two), f"127.0.0.1:{port}", str(i), "2"], env=env)
                 for i in range(2)]
        assert all(p.wait() == 0 for p in procs)
        single = Counter(map(tuple, json.loads((one / "reads_0.json").read_text())))
        halves = [Counter(map(tuple, json.loads((two / f"reads_{i}.json").read_text()))) for i in range(2)]
        losses = [[json.loads(x).get("loss") for x in (d / "run" / "metrics.jsonl").read_text().splitlines()
                   if json.loads(x)["split"] == "train"] for d in (one, two)]
    print(f"one process read {sum(single.values())} examples; two processes read "
          f"{sum(halves[0].values())} and {sum(halves[1].values())}, "
          f"{sum((halves[0] & halves[1]).values())} in common")
    print(f"together they read exactly the one process's examples: {halves[0] + halves[1] == single}")
    print(f"train losses logged: {len(losses[0])} and {len(losses[1])}; largest difference "
          f"{max(abs(a - b) for a, b in zip(*losses)):.2e}")


if __name__ == "__main__":
    main()
