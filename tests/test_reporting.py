"""Seeing a run: the progress bar, TensorBoard events, `fusionjax plot`, the model summary."""

import io
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TINY
from flax import nnx
from PIL import Image

from fusionjax.assembly import assemble
from fusionjax.cli import main
from fusionjax.config import apply_overrides
from fusionjax.summary import estimate_flops, format_summary, summarize
from fusionjax.training.loop import train
from fusionjax.training.progress import Progress

# A few steps of TINY on less data: enough for two log points and an evaluation.
SHORT = ["train.steps=6", "train.log_every=2", "train.batch_size=16", "data.train_size=64",
         "data.test_size=32"]


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# --- the progress bar ---------------------------------------------------------------

def test_progress_bar_draws_in_place_on_a_terminal_only(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the bar is cut to the terminal's width
    clock, tty = Clock(), FakeTTY()
    with Progress(100, 8, tty, loss_of=lambda v: v, min_interval=0.25, clock=clock) as bar:
        log = bar.around(lambda line: tty.write(line + "\n"))
        for step in range(1, 101):
            clock.now += 0.125  # 8 steps/s = 64 examples/s
            bar.update(step, 1.0 / step)
            if step == 50:
                log("step     50/100 | loss 0.0200")
    out = tty.getvalue()
    frames = [f for f in out.split("\r") if f.strip() and "\n" not in f]
    assert frames[0].startswith("compiling")
    # at most one frame per 0.25 s (of 12.5 s), plus one right after the log line
    assert 40 <= len(frames) <= 12.5 / 0.25 + 3, len(frames)
    last = frames[-1]
    assert "step 100/100" in last and "[####################]" in last
    assert "loss 0.0101" in last  # the loss of the step before (1/99)
    assert "64 ex/s" in last and "0:00:12" in last and "ETA 0:00:00" in last
    assert "ETA 0:00:06" in next(f for f in frames if "step 51/" in f)
    # the log line stands alone on its line: the bar was erased before it
    assert "\rstep     50/100 | loss 0.0200\n" in out.replace(" " * 10, "")
    assert out.endswith("\r")  # closing erased the bar

    plain = io.StringIO()
    with Progress(100, 8, plain, loss_of=lambda v: v, clock=clock) as bar:
        log = bar.around(lambda line: plain.write(line + "\n"))
        for step in range(1, 101):
            clock.now += 1.0
            bar.update(step, 0.5)
        log("a log line")
    assert plain.getvalue() == "a log line\n"
    with Progress(3, 8, None) as bar:  # no stream at all
        bar.update(1)


# --- training: TensorBoard events equal metrics.jsonl, the bar on a terminal ------------

def read_scalars(logdir) -> dict[tuple[str, int], float]:
    """The scalars of TensorBoard event files (TFRecord framing, tensorboardX's protos)."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {logdir}"
    for f in files:
        data, i = f.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4  # length, its CRC, the record, its CRC
            for value in event.summary.value:
                scalars[value.tag, event.step] = value.simple_value
    return scalars


def test_training_writes_tensorboard_events_and_draws_the_bar(tmp_path):
    tty = FakeTTY()
    run_dir = tmp_path / "run"
    train(assemble(apply_overrides(TINY, SHORT)), run_dir,
          log=lambda line: tty.write(line + "\n"), progress=tty)

    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("train", 2), ("train", 4), ("train", 6),
                                                          ("test", 6)]
    expected = {(f"{r['split']}/{k}", r["step"]): v for r in records for k, v in r.items()
                if k not in ("step", "split")}
    assert {"train/loss", "train/accuracy", "train/examples_per_s", "test/accuracy"} <= {
        tag for tag, _ in expected}
    scalars = read_scalars(run_dir / "tensorboard")
    assert scalars.keys() == expected.keys()
    for key, value in expected.items():
        assert scalars[key] == pytest.approx(value, rel=1e-6), key

    out = tty.getvalue()
    assert "\r" in out and "step 6/6" in out and "compiling the first step" in out
    lines = [line.split("\r")[-1] for line in out.split("\n")]  # what stays on screen
    assert any(line.startswith("step      6/6 | loss") for line in lines)
    assert any(line.startswith("test: loss") for line in lines)


def test_cli_train_prints_the_summary_and_no_bar_when_not_a_terminal(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    assert main(["train", str(config), *SHORT, "--output-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "ETA" not in out
    assert "forward FLOPs/example" in out and "train step:" in out
    assert "step      6/6 |" in out
    assert (tmp_path / "run" / "tensorboard").is_dir()


# --- fusionjax plot -------------------------------------------------------------------

def fake_run(path, losses, accuracy):
    path.mkdir(parents=True)
    lines = [{"step": 10 * (i + 1), "split": "train", "loss": loss, "accuracy": 1 - loss,
              "examples_per_s": 100.0} for i, loss in enumerate(losses)]
    lines.append({"step": 10 * len(losses), "split": "test", "loss": losses[-1], "accuracy": accuracy})
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 5')
    return path


def orange_pixels(png) -> int:
    """Pixels of matplotlib's second default colour (#ff7f0e): the second run's curves."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(rgb - [255, 127, 14]).sum(-1) < 30).sum())


def test_plot_draws_one_or_several_runs(tmp_path, capsys, monkeypatch):
    a = fake_run(tmp_path / "a", [1.0, 0.6, 0.4, 0.3], 0.8)  # the last line is torn: skipped
    b = fake_run(tmp_path / "b", [1.2, 0.9, 0.5], 0.7)
    assert main(["plot", str(a)]) == 0
    single = a / "plot.png"
    assert capsys.readouterr().out.strip() == str(single)

    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(a), str(b)]) == 0
    both = tmp_path / "plot.png"
    assert capsys.readouterr().out.strip() == "plot.png"
    for png in (single, both):
        assert png.stat().st_size > 1000
        with Image.open(png) as image:
            assert image.format == "PNG" and 800 <= image.width <= 2000 and 250 <= image.height <= 1000
    assert orange_pixels(single) < 20 < orange_pixels(both)  # b is overlaid in the second colour

    out = tmp_path / "sub" / "loss.png"
    assert main(["plot", str(a), str(b), "--out", str(out), "--metrics", "loss"]) == 0
    with Image.open(out) as image:  # one subplot: narrower than the two-metric figure
        assert image.width < Image.open(both).width


def test_plot_errors(tmp_path, capsys):
    a = fake_run(tmp_path / "a", [1.0, 0.5], 0.8)
    assert main(["plot", str(a), str(tmp_path / "empty")]) == 2
    assert "empty: no metrics.jsonl" in capsys.readouterr().err
    assert main(["plot", str(a), "--metrics", "acuracy"]) == 2
    err = capsys.readouterr().err
    assert "no metric 'acuracy'" in err and "did you mean 'accuracy'" in err
    assert not (a / "plot.png").exists()


# --- the model summary and its FLOPs --------------------------------------------------

def test_flops_of_a_linear_layer_and_of_a_scan():
    layer = nnx.Linear(64, 32, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)
    x = jax.ShapeDtypeStruct((8, 64), jnp.float32)
    flops = estimate_flops(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    assert 2 * 8 * 64 * 32 <= flops <= 1.1 * 2 * 8 * 64 * 32  # the matmul, plus the bias

    w = jax.ShapeDtypeStruct((32, 32), jnp.float32)
    h = jax.ShapeDtypeStruct((8, 32), jnp.float32)

    def rnn(w, h):  # XLA alone counts the loop body once; every one of the 10 steps counts
        return jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), h, None, length=10)[0]

    assert 10 * 2 * 8 * 32 * 32 <= estimate_flops(rnn, w, h) <= 1.1 * 10 * 2 * 8 * 32 * 32


def test_summary_of_tiny_against_a_hand_count():
    a = assemble(TINY)
    before = len(jax.live_arrays())
    summary = summarize(a)
    assert len(jax.live_arrays()) == before  # nothing allocated, nothing compiled
    rows = {r.key: r for r in summary.rows}
    assert rows.keys() == {"model.encoders.image", "model.encoders.text", "model.encoders.audio",
                           "model.fusion", "model.head"}
    assert {k: r.params for k, r in rows.items()} == a.param_counts()
    assert all(r.bytes == 4 * r.params for r in rows.values())  # float32
    # the LSTM: input projection and recurrence (4 gates) at each of the 12 tokens
    t, e, h = 12, 16, 32
    lstm = 2 * t * (e * 4 * h + h * 4 * h)
    assert lstm <= rows["model.encoders.text"].flops <= 1.3 * lstm
    head = 2 * (96 * 32 + 32 * 4)  # concat of three 32-wide embeddings -> 32 -> 4 classes
    assert head <= rows["model.head"].flops <= 1.3 * head
    assert summary.forward_flops == pytest.approx(sum(r.flops for r in rows.values()), rel=1e-3)
    assert 1.5 * summary.forward_flops < summary.train_flops < 4 * summary.forward_flops
    text = "\n".join(format_summary(summary))
    assert "forward FLOPs/example" in text and "train step:" in text and "157 k" in text

    bare = summarize(a, flops=False)
    assert bare.forward_flops is None and "FLOPs" not in "\n".join(format_summary(bare))


def test_config_check_prints_the_summary(capsys):
    assert main(["config", "check", str(ROOT / "examples" / "three_modality.toml")]) == 0
    out = capsys.readouterr().out
    assert "forward FLOPs/example" in out and "train step:" in out and "model.encoders.audio" in out
    assert main(["config", "check", str(ROOT / "examples" / "three_modality.toml"), "--json"]) == 0
    assert "model" in json.loads(capsys.readouterr().out)
