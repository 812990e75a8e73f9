"""`fusionjax serve`: a real server process on 127.0.0.1 answers as `fusionjax predict
--json` does, refuses bad requests with the CLI's own messages and keeps serving, batches
concurrent requests without compiling anything new, and exits 0 on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

httpx = pytest.importorskip("httpx", reason="httpx is a dev dependency: pip install -e '.[dev]'")

IMAGE = ROOT / "examples" / "data" / "samples" / "digit7.png"
AUDIO = next((ROOT / "examples" / "data" / "fsdd" / "recordings").glob("3_*_0.wav"))
QUESTION = "what is the written digit plus the spoken digit"
BAD_IMAGE = b"these bytes are no image"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, run_dir: Path, log: Path):
        self.port, self.log, self.run_dir = free_port(), log, run_dir
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "fusionjax", "serve", str(run_dir),
                                          "--port", str(self.port)], cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_LOG_COMPILES": "1"})
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=60,
                                   limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))

    def wait(self) -> Server:
        deadline = time.monotonic() + 180
        while True:
            try:
                if self.client.get("/health").json() == {"status": "ok"}:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`fusionjax serve` did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def info(self) -> dict:
        return self.client.get("/info").json()

    def predict_files(self, image: bytes | None = IMAGE.read_bytes(),
                      audio: bytes | None = AUDIO.read_bytes(), text: str | None = QUESTION,
                      top: int | None = None, image_name: str = "digit7.png"):
        files = {k: v for k, v in {"image": (image_name, image, "image/png"),
                                   "audio": ("three.wav", audio, "audio/wav")}.items() if v[1] is not None}
        data = {k: v for k, v in {"text": text, "top": top}.items() if v is not None}
        return self.client.post("/predict", files=files, data=data)


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    s = Server(run_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        # what the CLI answers for the same inputs, run while the server compiles
        here = tmp_path_factory.mktemp("cli")
        (here / "bad.png").write_bytes(BAD_IMAGE)
        commands = {"answer": ("predict", str(run_dir), f"image={IMAGE}", f"audio={AUDIO}",
                               f"text={QUESTION}", "--json", "--top", "5"),
                    "unreadable": ("predict", str(run_dir), "image=bad.png"),
                    "unknown": ("predict", str(run_dir), "smell=roses"),
                    "not a run": ("serve", str(here), "--port", str(free_port()))}
        with ThreadPoolExecutor(2) as pool:
            futures = {k: pool.submit(run_cli, *c, cwd=here) for k, c in commands.items()}
            s.cli = {k: f.result() for k, f in futures.items()}
        yield s.wait()
    finally:
        s.client.close()
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)


def cli_message(out) -> str:
    """What the CLI printed as its error, without its ``fusionjax: ... error:`` prefix."""
    assert out.returncode in (1, 2) and "Traceback" not in out.stderr, out.stderr
    return re.sub(r"^fusionjax: (data )?error: ", "", out.stderr.strip())


def assert_refused(response, status: int, kind: str, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind, error
    if message is not None:
        assert error["message"] == message


def test_multipart_answer_equals_the_cli(server, run_dir):
    response = server.predict_files(top=5)
    assert response.status_code == 200, response.text
    cli = server.cli["answer"]
    assert cli.returncode == 0, cli.stderr[-2000:]
    served, expected = response.json(), json.loads(cli.stdout)
    assert served.keys() == expected.keys() and served["absent"] == [] and len(served["top"]) == 5
    assert [t["label"] for t in served["top"]] == [t["label"] for t in expected["top"]]
    assert _close(served, expected), (served, expected)
    assert f"serving {run_dir} at {server.url}/" in server.log.read_text()


def _close(a, b) -> bool:
    """Equal JSON, floats to within float32 rounding."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_close, a, b))
    if isinstance(a, float):
        return b == pytest.approx(a, rel=1e-5, abs=1e-7)
    return a == b


def test_json_text_only_and_info(server):
    response = server.client.post("/predict", json={"text": "which is larger", "top": 2})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["kind"] == "class" and answer["absent"] == ["audio", "image"] and len(answer["top"]) == 2
    assert answer["answer"] == answer["top"][0]["label"]
    info = server.info()
    assert info["modalities"] == ["audio", "image", "text"]
    assert info["input_kinds"] == {"audio": "file", "image": "file", "text": "text"}
    assert info["label_names"] == [str(v) for v in range(19)] and info["answer_kind"] == "class"
    assert info["max_batch"] == 32 and info["buckets"] == [1, 2, 4, 8, 16, 32]
    assert info["components"]["model.head"] == "heads/classification"
    assert info["components"]["data"] == "datasets/digit_qa" and info["versions"]["fusionjax"]
    page = server.client.get("/")
    if (ROOT / "fusionjax" / "web" / "index.html").is_file():
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    else:
        assert_refused(page, 404, "NotFound")


def test_bad_requests_fail_alone_with_the_clis_messages(server):
    unreadable, unknown = cli_message(server.cli["unreadable"]), cli_message(server.cli["unknown"])
    assert unreadable.startswith("bad.png: not a readable image") and "has no modality 'smell'" in unknown

    c = server.client
    assert_refused(c.post("/predict", json={"smell": "roses"}), 400, "ConfigError", unknown)
    assert_refused(c.post("/predict", files={"smell": ("x.txt", b"roses")}), 400, "ConfigError", unknown)
    assert_refused(server.predict_files(image=BAD_IMAGE, image_name="bad.png"),
                   400, "DataError", unreadable)
    assert_refused(c.post("/predict", json={}), 400, "ConfigError",
                   "no input given\n  hint: give one or more of: audio, image, text")
    assert_refused(c.post("/predict", json={"image": "/etc/passwd"}), 400, "ConfigError")  # no paths
    assert_refused(c.post("/predict", data={"image": "/etc/passwd"}, files={"audio": ("a.wav", b"")}),
                   400, "ConfigError")
    assert_refused(server.predict_files(top=0), 400, "ConfigError", "top: must be an int >= 1, got 0")
    assert_refused(c.post("/predict", content=b"{not json", headers={"content-type": "application/json"}),
                   400, "RequestError")
    assert_refused(c.post("/predict", content=b"text=hi", headers={"content-type": "text/plain"}),
                   415, "UnsupportedMediaType")
    assert_refused(c.post("/predict", content=b"x", headers={"content-type": "multipart/form-data"}),
                   400, "RequestError")
    limit = server.info()["max_upload_bytes"]
    assert_refused(server.predict_files(image=b"\0" * (limit + 1)), 413, "PayloadTooLarge")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # a huge declared body:
    conn.putrequest("POST", "/predict")  # refused from its headers, before any of it is read
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(50 * limit))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["type"] == "PayloadTooLarge"
    conn.close()
    assert_refused(c.get("/predict"), 405, "MethodNotAllowed")
    assert_refused(c.get("/nowhere"), 404, "NotFound")
    assert server.predict_files().status_code == 200  # still serving
    assert c.get("/health").json() == {"status": "ok"}


def test_a_run_directory_error_comes_before_the_server(server):
    out = server.cli["not a run"]
    assert out.returncode == 2 and "fusionjax: run directory error" in out.stderr
    assert "not a fusionjax run directory" in out.stderr and "Traceback" not in out.stderr


def test_an_unexpected_failure_is_a_bounded_500_and_serving_goes_on(run_dir, monkeypatch):
    """In process (create_app): a failure inside the batch answer reaches its request as a
    500 with a short message, and the next request is answered."""
    import asyncio

    from fusionjax.serving import create_app

    app = create_app(run_dir, max_batch=1)
    predictor = app.state.service.predictor

    def broken(*args, **kwargs):
        raise RuntimeError("x" * 100_000)

    async def requests():
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            monkeypatch.setattr(predictor, "answer_many", broken)
            response = await client.post("/predict", json={"text": QUESTION})
            assert_refused(response, 500, "InternalError")
            assert len(response.json()["error"]["message"]) < 500
            monkeypatch.undo()
            assert (await client.post("/predict", json={"text": QUESTION})).status_code == 200
            assert (await client.get("/info")).json()["compilations"] == 1

    asyncio.run(requests())


def test_concurrent_bursts_are_batched_without_recompiling(server):
    before = server.info()
    assert before["compilations"] == len(before["buckets"])
    alone = {"json": server.client.post("/predict", json={"text": QUESTION}).json(),
             "files": server.predict_files().json()}

    def one(i: int):
        kind = "json" if i % 2 else "files"
        if kind == "json":
            r = server.client.post("/predict", json={"text": QUESTION})
        else:
            r = server.predict_files()
        return kind, r.status_code, r.json()

    results = []
    with ThreadPoolExecutor(16) as pool:
        for burst in (1, 3, 7, 16, 16, 7):  # 50 requests
            results += list(pool.map(one, range(burst)))
    assert len(results) == 50
    for kind, status, answer in results:
        assert status == 200 and _close(answer, alone[kind]), answer
    after = server.info()
    assert after["compilations"] == before["compilations"] == len(after["buckets"])
    # nor anything else (e.g. the head's answer step for a new batch size): JAX logs each
    # compilation (JAX_LOG_COMPILES), and none is logged once the server is ready
    log = server.log.read_text()
    assert "Finished XLA compilation" in log
    assert log.partition(f"serving {server.run_dir} at")[2].count("Finished XLA compilation") == 0
    requests = after["served"]["requests"] - before["served"]["requests"]
    batches = after["served"]["batches"] - before["served"]["batches"]
    assert requests == 52 and batches < requests  # some requests shared a batch


def test_sigterm_exits_zero(server):
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert "Traceback" not in server.log.read_text()
