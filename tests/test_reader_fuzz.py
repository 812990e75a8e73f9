"""Fuzzing the readers: the repository's real small files, randomly corrupted.

Each corrupted file must give what the reader documents (an array of its dtype and
shape) or a :class:`DataError` whose message names the file and stays short -- never
another exception, and never a long wait.  Then the manifest's ``on_error`` policies
on an image bomb and a WAV of sample rate 0.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import struct
import time
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fusionjax.data.audio import MAX_SAMPLE_RATE, load_audio, read_wav
from fusionjax.data.image import read_idx, read_image
from fusionjax.data.locate import shipped_root
from fusionjax.data.text import RESERVED, Vocabulary, words
from fusionjax.errors import CorruptRunError, DataError
from fusionjax_plugins.datasets import digit_sources
from fusionjax_plugins.datasets.manifest import ManifestDataset
from fusionjax_plugins.datasets.sms_spam import read_collection

DATA = shipped_root()
PNG = (DATA / "samples" / "digit3.png").read_bytes()
WAV = (DATA / "fsdd" / "recordings" / "0_george_0.wav").read_bytes()
MNIST_TEST = [DATA / "mnist" / name for name in digit_sources.MNIST_FILES["test"]]
SMS = b"".join((DATA / "sms_spam" / "SMSSpamCollection").read_bytes().splitlines(True)[:80])



def _reencoded(fmt: str) -> bytes:
    """The shipped digit in another of the formats Pillow reads (another decoder to fuzz)."""
    from PIL import Image

    out = io.BytesIO()
    with Image.open(io.BytesIO(PNG)) as img:
        img.save(out, fmt)
    return out.getvalue()


OTHER_IMAGES = [_reencoded(fmt) for fmt in ("JPEG", "BMP", "GIF", "TIFF", "WEBP")]

SECONDS = 3.0  # a couple of seconds per read, with room for two shared CPU cores
MAX_MESSAGE = 2000
FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# header fields (offset, width) worth zeroing or maxing, per format
WAV_FIELDS = ((4, 4), (16, 4), (20, 2), (22, 2), (24, 4), (28, 4), (32, 2), (34, 2), (40, 4))
PNG_FIELDS = ((8, 4), (16, 4), (20, 4), (24, 1), (25, 1), (33, 4))
IDX_FIELDS = ((2, 1), (3, 1), (4, 4), (8, 4), (12, 4))


@st.composite
def corrupted(draw, data: bytes, fields: tuple[tuple[int, int], ...] = ()) -> bytes:
    """``data`` with one random corruption."""
    how = draw(st.sampled_from(["truncate", "flip", "overwrite header", "prepend", "append",
                                "zero field", "max field", "empty"]))
    if how == "truncate":
        return data[:draw(st.integers(0, len(data)))]
    if how == "empty":
        return b""
    if how in ("prepend", "append"):
        junk = draw(st.binary(min_size=1, max_size=64))
        return junk + data if how == "prepend" else data + junk
    out = bytearray(data)
    if how == "flip":
        for i in draw(st.lists(st.integers(0, len(out) - 1), min_size=1, max_size=8)):
            out[i] ^= draw(st.integers(1, 255))
    elif how == "overwrite header":
        start = draw(st.integers(0, min(len(out), 64) - 1))
        junk = draw(st.binary(min_size=1, max_size=8))
        out[start:start + len(junk)] = junk
    else:
        offset, width = draw(st.sampled_from(fields or ((0, 4),)))
        out[offset:offset + width] = (b"\x00" if how == "zero field" else b"\xff") * width
    return bytes(out)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def png_with_header(draw) -> bytes:
    """The PNG with another IHDR (a valid CRC, so that Pillow reads it): its size (mostly
    small, sometimes huge), bit depth and colour type (mostly valid pairs), interlacing."""
    size = st.one_of(st.integers(1, 64), st.integers(0, 70_000), st.just(2 ** 31 - 1))
    depth, colour = draw(st.one_of(st.sampled_from([(8, 0), (1, 0), (16, 0), (8, 2), (8, 4), (8, 6)]),
                                   st.tuples(st.integers(0, 255), st.integers(0, 255))))
    ihdr = struct.pack(">IIBBBBB", draw(size), draw(size), depth, colour, 0, 0, draw(st.sampled_from([0, 1])))
    return PNG[:8] + _png_chunk(b"IHDR", ihdr) + PNG[33:]


def checked(read, *names: str):
    """``read()``'s result, or ``None`` when it raised a short DataError naming the file.  Any
    other exception fails the test; so does a read slower than ``SECONDS``."""
    start = time.perf_counter()
    try:
        result = read()
    except DataError as e:
        result, message = None, str(e)
        assert len(message) < MAX_MESSAGE, message[:300]
        assert any(name in message for name in names), message
        event("DataError: " + message.split(": ", 1)[-1][:30])  # --hypothesis-show-statistics
    else:
        event("read")
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS, f"the read took {elapsed:.1f} s"
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# -- images -------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # then refused
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")  # e.g. a corrupt TIFF tag, skipped
@FUZZ
@given(data=st.one_of(corrupted(PNG, PNG_FIELDS), png_with_header(),
                      st.sampled_from(OTHER_IMAGES).flatmap(corrupted)),
       channels=st.sampled_from([1, 3]))
def test_corrupt_image(work, data, channels):
    path = work / "digit.png"  # the suffix does not matter: Pillow reads the content
    path.write_bytes(data)
    x = checked(lambda: read_image(path, size=(28, 28), channels=channels), str(path))
    if x is not None:
        assert x.dtype == np.float32 and x.shape == (28, 28, channels)
        assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0


# -- audio --------------------------------------------------------------------------------------


@FUZZ
@given(data=corrupted(WAV, WAV_FIELDS))
def test_corrupt_wav(work, data):
    path = work / "0_george_0.wav"
    path.write_bytes(data)
    got = checked(lambda: read_wav(path), str(path))
    if got is not None:
        x, rate = got
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] >= 1
        assert isinstance(rate, int) and 1 <= rate <= MAX_SAMPLE_RATE
        assert x.min() >= -1.0 and x.max() < 1.0
    y = checked(lambda: load_audio(path, sample_rate=8000, num_samples=4000), str(path))
    assert (y is None) == (got is None)
    if y is not None:
        assert y.dtype == np.float32 and y.shape == (4000,) and np.isfinite(y).all()


# -- MNIST (IDX) --------------------------------------------------------------------------------


@st.composite
def mnist_split(draw) -> tuple[int, bytes]:
    """Which of the two files of the MNIST test split to corrupt, and its corrupted bytes:
    of the .gz itself, or of its content (gzipped again)."""
    which = draw(st.sampled_from([0, 1]))
    packed = MNIST_TEST[which].read_bytes()
    if draw(st.booleans()):
        return which, draw(corrupted(packed))
    raw = gzip.decompress(packed)
    if which == 1 and draw(st.booleans()):  # a label out of 0..9
        out = bytearray(raw)
        out[8 + draw(st.integers(0, len(raw) - 9))] = draw(st.integers(10, 255))
        return which, gzip.compress(bytes(out), compresslevel=1, mtime=0)
    return which, gzip.compress(draw(corrupted(raw, IDX_FIELDS)), compresslevel=1, mtime=0)


@FUZZ
@given(case=mnist_split())
def test_corrupt_mnist(work, case):
    which, data = case
    folder = work / "mnist"
    folder.mkdir(exist_ok=True)
    for k, original in enumerate(MNIST_TEST):
        if k == which:
            (folder / original.name).write_bytes(data)
        else:
            shutil.copyfile(original, folder / original.name)
    bad = folder / MNIST_TEST[which].name
    array = checked(lambda: read_idx(bad), str(bad))
    if array is not None:
        assert array.dtype.isnative
    # digit_sources.mnist is cached by folder: the uncached function, on the files just written
    got = checked(lambda: digit_sources.mnist.__wrapped__(folder, "test"), str(bad))
    if got is not None:
        images, labels = got
        assert images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28)
        assert labels.dtype == np.int32 and labels.shape == (len(images),) and len(images) >= 1
        assert labels.min() >= 0 and labels.max() <= 9


# -- text ---------------------------------------------------------------------------------------


@FUZZ
@given(data=corrupted(SMS))
def test_corrupt_sms_collection(work, data):
    path = work / "SMSSpamCollection"
    path.write_bytes(data)
    got = checked(lambda: read_collection(path), str(path))
    if got is not None:
        texts, labels = got
        assert all(isinstance(t, str) for t in texts) and len(texts) >= 1
        assert labels.dtype == np.int32 and labels.shape == (len(texts),)
        assert set(labels.tolist()) <= {0, 1}


_VOCAB = Vocabulary.build(SMS.decode("utf-8").split("\n"), max_size=60)
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                 max_size=4),
                     max_leaves=12)


@st.composite
def vocab_file(draw) -> bytes:
    """A saved vocabulary, broken as bytes or as JSON (wrong shape, wrong content)."""
    saved = json.dumps({"tokens": _VOCAB.itos[2:]}).encode()
    how = draw(st.sampled_from(["bytes", "any json", "tokens", "edit"]))
    if how == "bytes":
        return draw(corrupted(saved))
    if how == "any json":
        return json.dumps(draw(_JSON)).encode()
    if how == "tokens":
        return json.dumps({"tokens": draw(_JSON)}).encode()
    tokens = list(_VOCAB.itos[2:])
    i = draw(st.integers(0, len(tokens) - 1))
    if draw(st.booleans()):  # still a vocabulary: a word removed
        tokens.pop(i)
    elif draw(st.booleans()):  # still a vocabulary: a new word added
        tokens.insert(i, f"zz{i}")
    else:
        tokens.insert(i, draw(st.sampled_from([*RESERVED, tokens[-1], "Upper", "two words", "", 7, None])))
    return json.dumps({"tokens": tokens}).encode()


@FUZZ
@given(data=vocab_file())
def test_corrupt_vocabulary(work, data):
    run_dir = work / "run"
    run_dir.mkdir(exist_ok=True)
    path = run_dir / "vocab.json"
    path.write_bytes(data)
    vocab = checked(lambda: Vocabulary.load(path), str(path))
    start = time.perf_counter()
    try:
        again = Vocabulary.load(path, run_dir=run_dir)  # a run's vocabulary: a run directory error
    except CorruptRunError as e:
        assert vocab is None and e.path == run_dir and "vocab.json" in str(e) and len(str(e)) < MAX_MESSAGE
    else:
        assert vocab is not None and again.itos == vocab.itos
    assert time.perf_counter() - start < SECONDS
    if vocab is not None:
        assert vocab.itos[:2] == list(RESERVED) and len(set(vocab.itos)) == len(vocab.itos)
        assert all(isinstance(w, str) and words(w) == [w] for w in vocab.itos[2:])


# -- the manifest's on_error policies -----------------------------------------------------------


def _bomb_png(path: Path) -> Path:
    """A PNG whose header claims 20,000 x 20,000 pixels (a few hundred bytes on disk)."""
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    path.write_bytes(PNG[:8] + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _png_chunk(b"IEND", b""))
    return path


def _rate_zero_wav(path: Path) -> Path:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(400, "<i2").tobytes())
    data = bytearray(buffer.getvalue())
    data[24:28] = b"\0\0\0\0"  # the sample rate
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def bad_manifest(work) -> Path:
    """Eight train rows of a PNG and a WAV; line 3 has a bomb image, line 5 a rate-0 WAV."""
    folder = work / "manifest"
    folder.mkdir()
    shutil.copyfile(DATA / "samples" / "digit3.png", folder / "good.png")
    shutil.copyfile(DATA / "fsdd" / "recordings" / "0_george_0.wav", folder / "good.wav")
    _bomb_png(folder / "bomb.png")
    _rate_zero_wav(folder / "rate0.wav")
    rows = [{"image": "good.png", "audio": "good.wav", "label": "ab"[k % 2], "part": "train"}
            for k in range(8)]
    rows[1]["image"] = "bomb.png"  # line 3 (the header is line 1)
    rows[3]["audio"] = "rate0.wav"  # line 5
    with open(folder / "data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "data.csv"


def _manifest(path: Path, on_error: str) -> ManifestDataset:
    return ManifestDataset(path=str(path), modalities={"image": "image", "audio": "audio"},
                           split_column="part", sample_rate=8000, num_samples=1000, on_error=on_error)


def test_manifest_raise_names_file_and_row(bad_manifest):
    ds = _manifest(bad_manifest, "raise")  # files exist: decoding finds the problems
    with pytest.raises(DataError) as e:
        ds.arrays("train")
    message = str(e.value)
    assert f"{bad_manifest}, line 3: column 'image': " in message and "bomb.png: image too large" in message
    assert "20,000 x 20,000" in message or "400,000,000 pixels" in message
    assert f"{bad_manifest}, line 5: column 'audio': " in message
    assert "rate0.wav: its header declares a sample rate of 0 Hz" in message
    assert len(message) < MAX_MESSAGE


def test_manifest_skip_drops_the_rows(bad_manifest):
    ds = _manifest(bad_manifest, "skip")
    data = ds.arrays("train")
    assert ds.lines("train") == [2, 4, 6, 7, 8, 9] and len(data["label"]) == 6
    assert data["image"].shape == (6, 28, 28, 1) and data["audio"].shape == (6, 1000)
    assert len(ds.problems) == 2
    assert "line 3: column 'image'" in ds.problems[0] and "bomb.png: image too large" in ds.problems[0]
    assert "line 5: column 'audio'" in ds.problems[1] and "rate0.wav" in ds.problems[1]


def test_manifest_absent_masks_the_input(bad_manifest):
    ds = _manifest(bad_manifest, "absent")
    data = ds.arrays("train")
    assert ds.lines("train") == list(range(2, 10)) and not ds.problems
    np.testing.assert_array_equal(data["mask/image"], [k != 1 for k in range(8)])
    np.testing.assert_array_equal(data["mask/audio"], [k != 3 for k in range(8)])
    assert not data["image"][1].any() and data["image"][0].any()
    assert not data["audio"][3].any() and data["audio"][0].any()
    assert ["bomb.png: image too large" in entry for entry in ds.absent_inputs["image"]] == [True]
    assert ["rate0.wav: its header" in entry for entry in ds.absent_inputs["audio"]] == [True]
