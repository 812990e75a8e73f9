"""The page `fusionjax serve` shows at / (fusionjax/web/index.html), in a real browser:
Debian's Chromium driven by Playwright (nothing downloaded).  The page builds its form
from /info, posts the inputs to /predict and shows the answer; it must show the same
answer as `fusionjax predict --json`, the server's error messages, and record audio
(Chromium's fake microphone) as a PCM WAV the server reads."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="Playwright's Python package is not installed "
                                                       "(pip install playwright)"),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed at /usr/bin/chromium "
                                                "(apt-get install chromium)"),
]

SERVE = [sys.executable, "-m", "fusionjax", "serve"]
IMAGE = ROOT / "examples" / "data" / "samples" / "digit7.png"
AUDIO = ROOT / "examples" / "data" / "fsdd" / "recordings" / "4_george_0.wav"
QUESTION = "what is the written digit plus the spoken digit"


@pytest.fixture(scope="module")
def cli_answer(run_dir):
    """`fusionjax predict --json` for the three inputs, started now, read when needed."""
    return subprocess.Popen([sys.executable, "-m", "fusionjax", "predict", str(run_dir), f"image={IMAGE}",
                             f"audio={AUDIO}", f"text={QUESTION}", "--top", "3", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def server(run_dir, cli_answer, tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        # one batch size to compile: the page does not need the server's batching
        proc = subprocess.Popen([*SERVE, str(run_dir), "--port", str(port), "--max-batch", "1"],
                                cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "info", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"`fusionjax serve` did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        # a fake microphone (a beep) that needs no permission prompt
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 760, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(e))
    page.goto(server)
    expect(page.locator("#form")).to_be_visible()
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_page_shows_the_answer_the_cli_gives(page, cli_answer, tmp_path):
    stdout, stderr = cli_answer.communicate(timeout=120)
    assert cli_answer.returncode == 0, stderr[-3000:]
    want = json.loads(stdout)

    page.get_by_label("image", exact=True).set_input_files(IMAGE)
    page.get_by_label("audio", exact=True).set_input_files(AUDIO)
    page.get_by_label("text", exact=True).fill(QUESTION)
    page.get_by_label("Show top").fill("3")
    expect(page.locator("#preview-image img")).to_be_visible()  # previews: an image and a player
    expect(page.locator("#preview-audio audio")).to_have_count(1)
    page.get_by_role("button", name="Predict").click()

    expect(page.locator("#answer")).to_have_text(want["answer"])
    expect(page.locator("#answer-note")).to_have_text(f"probability {100 * want['probability']:.1f}%")
    ranked = page.locator("#ranked li")
    expect(ranked.locator(".name")).to_have_text([t["label"] for t in want["top"]])
    expect(ranked.locator(".pct")).to_have_text([f"{100 * t['probability']:.1f}%" for t in want["top"]])
    expect(page.locator("#absent")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    page.screenshot(path=tmp_path / "serving.png", full_page=True)

    # without the text: the same answer as the CLI's, and the page says what was absent
    page.get_by_label("text", exact=True).fill("")
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#absent")).to_have_text("Answered without: text (absent)")


def test_page_shows_the_servers_error(page, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n")
    reply = page.request.post(page.url + "predict", multipart={
        "image": {"name": bad.name, "mimeType": "text/plain", "buffer": bad.read_bytes()}})
    assert 400 <= reply.status < 500
    error = reply.json()["error"]

    page.get_by_label("image", exact=True).set_input_files(bad)
    page.get_by_role("button", name="Predict").click()
    shown = page.get_by_role("alert")
    expect(shown).to_be_visible()
    assert error["message"].startswith("notes.txt: ")  # the upload named by its own name
    expect(shown).to_have_text(f"{error['type']}: {error['message']}")
    expect(page.locator("#result")).to_be_hidden()


def test_page_shows_every_answer_kind(page):
    """The other heads' answers (this run's head answers a class), as /predict sends them."""
    answer, note, ranked = page.locator("#answer"), page.locator("#answer-note"), page.locator("#ranked li")
    scored = lambda label, p: {"label": label, "class_id": 0, "probability": p}  # noqa: E731
    page.evaluate("showAnswer", {"kind": "labels", "labels": ["cat", "dog"], "threshold": 0.5,
                                 "predicted": [scored("cat", 0.9), scored("dog", 0.6)],
                                 "top": [scored("cat", 0.9), scored("dog", 0.6), scored("owl", 0.1)],
                                 "absent": ["audio"]})
    expect(answer).to_have_text("cat, dog")
    expect(note).to_have_text("every label with probability \u2265 0.5")
    expect(ranked.locator(".pct")).to_have_text(["90.0%", "60.0%", "10.0%"])
    expect(page.locator("#ranked li.chosen .name")).to_have_text(["cat", "dog"])
    expect(page.locator("#absent")).to_have_text("Answered without: audio (absent)")
    page.evaluate("showAnswer", {"kind": "values", "value": 120000.0, "absent": []})
    expect(answer).to_have_text("120000")
    expect(ranked).to_have_count(0)
    page.evaluate("showAnswer", {"kind": "values", "value": [[1.5, 2.0]], "absent": []})
    expect(page.locator("#detail")).to_have_text("[[1.5,2]]")
    page.evaluate("showAnswer", {"kind": "text", "text": "seven plus four", "score": -0.25,
                                 "alternatives": [{"text": "seven plus four", "score": -0.25},
                                                  {"text": "seven plus five", "score": -2.0}],
                                 "absent": []})
    expect(answer).to_have_text("seven plus four")
    expect(note).to_have_text("log-probability -0.250")
    expect(ranked.locator(".name")).to_have_text(["seven plus four", "seven plus five"])
    expect(ranked.locator(".pct")).to_have_text(["77.9%", "13.5%"])  # exp(-0.25), exp(-2)
    expect(page.locator("#detail")).to_be_hidden()
    expect(page.locator("#absent")).to_be_hidden()


def test_page_records_audio_as_pcm_wav(page):
    record = page.locator("#record-audio")
    expect(record).to_have_text("Record")
    record.click()
    expect(record).to_have_attribute("aria-pressed", "true")
    expect(record).to_have_text("Stop")
    page.wait_for_timeout(1200)
    record.click()
    expect(page.locator("#preview-audio")).to_contain_text("recording.wav")
    header = bytes(page.evaluate("async () => [...new Uint8Array(await chosen.audio.arrayBuffer())]"
                                 ".slice(0, 44)"))
    riff, wave, fmt, pcm, channels, rate, bits, data, size = struct.unpack(
        "<4s4x4s4s4xHHI6xH4sI", header)
    assert (riff, wave, fmt, data, pcm, channels, bits) == (b"RIFF", b"WAVE", b"fmt ", b"data", 1, 1, 16)
    assert 0.8 * rate < size / 2 < 2 * rate  # about a second of audio

    page.get_by_role("button", name="Predict").click()  # the server reads it
    expect(page.locator("#absent")).to_have_text("Answered without: image, text (absent)")
    expect(page.locator("#error")).to_be_hidden()
