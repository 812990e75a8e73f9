"""Load on `fusionjax serve`: latency and answers/s under concurrent clients, on localhost.

    python benchmarks/serve_load.py /tmp/mainjob --mode text
    python benchmarks/serve_load.py /tmp/mainjob --mode multipart

Starts the server (a subprocess on 127.0.0.1, a free port) for RUN_DIR, waits until it
answers, then sends ``--requests`` requests from ``--clients`` threads, each with its
own keep-alive connection (``http.client``), and stops the server with SIGTERM.  Mode
``text``: JSON ``{"text": ...}``; ``multipart``: an image file, an audio file and the
text.  Bounded: at most ``--requests`` requests and ``--max-seconds`` of sending, only to
127.0.0.1.  Prints one JSON line and one markdown row: errors (non-200 or failed), p50 /
p99 latency, answers/s, the server's RSS (VmRSS) before and after, how many batches the
server made and its CPU time per request, and its compilations before and after (equal:
nothing compiled under load).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "data" / "samples" / "digit7.png"
AUDIO = ROOT / "examples" / "data" / "fsdd" / "recordings" / "3_george_0.wav"
QUESTION = "what is the written digit plus the spoken digit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_body(mode: str) -> tuple[bytes, str]:
    if mode == "text":
        return json.dumps({"text": QUESTION}).encode(), "application/json"
    boundary = uuid.uuid4().hex
    parts = []
    for name, filename, kind, data in (("image", IMAGE.name, "image/png", IMAGE.read_bytes()),
                                       ("audio", AUDIO.name, "audio/wav", AUDIO.read_bytes())):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: {kind}\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n'
                 f'{QUESTION}\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def load(port: int, body: bytes, content_type: str, requests: int, clients: int,
         max_seconds: float) -> tuple[list[float], int, float]:
    """``requests`` POSTs from ``clients`` threads: latencies (s), errors, wall seconds."""
    lock, counter = threading.Lock(), [0]
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + max_seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, failed = [], 0
        while time.monotonic() < deadline:
            with lock:
                if counter[0] >= requests:
                    break
                counter[0] += 1
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                answer = response.read()
                ok = response.status == 200 and b'"answer"' in answer
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - start)
            failed += not ok
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--mode", choices=["text", "multipart"], default="text")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--batch-window-ms", type=float, default=5)
    p.add_argument("--max-seconds", type=float, default=120, help="stop sending after this long")
    args = p.parse_args()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "fusionjax", "serve", args.run_dir, "--port", str(port),
                               "--max-batch", str(args.max_batch), "--batch-window-ms",
                               str(args.batch_window_ms)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if get_json(port, "/health") == {"status": "ok"}:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(server.stdout.read() if server.poll() is not None else "timed out", file=sys.stderr)
                return 1
            time.sleep(0.2)
        body, content_type = request_body(args.mode)
        load(port, body, content_type, 4 * args.clients, args.clients, 30)  # connections, caches
        before, rss_before, cpu_before = get_json(port, "/info"), rss_mb(server.pid), cpu_s(server.pid)
        latencies, errors, wall = load(port, body, content_type, args.requests, args.clients,
                                       args.max_seconds)
        after, rss_after, cpu_after = get_json(port, "/info"), rss_mb(server.pid), cpu_s(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed"
    sent = len(latencies)
    batches = after["served"]["batches"] - before["served"]["batches"]
    answered = after["served"]["requests"] - before["served"]["requests"]
    result = {
        "benchmark": "serve_load", "mode": args.mode, "run": args.run_dir, "requests": sent,
        "clients": args.clients, "errors": errors, "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "answers_per_s": round((sent - errors) / wall, 1), "mean_batch": round(answered / max(1, batches), 2),
        "server_cpu_ms_per_request": round((cpu_after - cpu_before) * 1000 / max(1, sent), 2),
        "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
        "compilations": [before["compilations"], after["compilations"]], "max_batch": args.max_batch,
        "batch_window_ms": args.batch_window_ms, "cpus": os.cpu_count(), "server_exit": code,
    }
    print(json.dumps(result))
    print("| mode | requests | clients | errors | p50 ms | p99 ms | answers/s | mean batch "
          "| server RSS before -> after, MB | compilations before -> after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.mode} | {sent} | {args.clients} | {errors} | {result['p50_ms']} | {result['p99_ms']} "
          f"| {result['answers_per_s']} | {result['mean_batch']} | {result['rss_before_mb']} -> "
          f"{result['rss_after_mb']} | {before['compilations']} -> {after['compilations']} |")
    return 0 if errors == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
