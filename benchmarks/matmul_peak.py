"""The chip's measured dense matmul rate (bfloat16, or ``--dtype float32``): the
denominator of MFU, and of the fraction of the machine a CPU run reaches
(``run_small.sh`` measures float32 on the machine it runs on, and bfloat16 where the
CPU has native bfloat16 instructions).

A chain of ``iters`` dependent ``[n, n] @ [n, n]`` products of random matrices
(``x <- x @ b``, float32 accumulation, a result of the same dtype; ``b`` scaled by
``1 / sqrt(n)`` so that ``x`` stays of unit size) in one jitted ``fori_loop``,
synchronised once per repeat: no dispatch gaps, and no product can overlap or be
elided.  The rate is ``2 n^3 iters / time``.  Prints one
JSON line (also written to ``--json``): ``tflops`` is the median over repeats,
``tflops_max`` the best.

    python benchmarks/matmul_peak.py --device gpu               # n = 8192
    python benchmarks/matmul_peak.py --device cpu --n 2048 --iters 10 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="gpu")
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--iters", type=int, default=50, help="products per repeat (one chain)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="CPU only: cores to use")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.device == "cpu" and args.threads and hasattr(os, "sched_setaffinity"):
        # XLA sizes its CPU thread pool from the affinity mask
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    os.environ.setdefault("JAX_PLATFORMS", "cuda" if args.device == "gpu" else "cpu")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    dtype = jnp.dtype(args.dtype)
    a = jax.random.normal(ka, (args.n, args.n), dtype)
    b = (jax.random.normal(kb, (args.n, args.n), jnp.float32) / args.n ** 0.5).astype(dtype)

    def product(_, x):
        return jnp.matmul(x, b, preferred_element_type=jnp.float32).astype(dtype)

    chain = jax.jit(lambda x: jax.lax.fori_loop(0, args.iters, product, x))
    for _ in range(args.warmup):
        chain(a).block_until_ready()
    rates = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = chain(a)
        out.block_until_ready()
        rates.append(2 * args.n ** 3 * args.iters / (time.perf_counter() - t) / 1e12)
    assert bool(jnp.isfinite(out).all()), "the product chain overflowed"
    dev = jax.devices()[0]
    impl = "matmul-bf16" if args.dtype == "bfloat16" else "matmul-f32"
    res = {"impl": impl, "device": args.device, "platform": dev.platform,
           "device_kind": dev.device_kind, "n": args.n, "iters": args.iters,
           "repeats": args.repeats, "tflops": round(statistics.median(rates), 3),
           "tflops_max": round(max(rates), 3), "tflops_repeats": [round(r, 3) for r in rates],
           "versions": {"python": platform.python_version(), "jax": jax.__version__}}
    line = json.dumps(res)
    print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
