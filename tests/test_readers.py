"""The readers of fusionjax.data on generated files: images, IDX, WAV, text, splits."""

from __future__ import annotations

import gzip
import struct
import wave

import numpy as np
import pytest

from fusionjax.data.audio import fit_length, load_audio, read_wav, resample
from fusionjax.data.image import normalize, read_idx, read_image
from fusionjax.data.splits import split_indices
from fusionjax.data.text import PAD, UNK, Vocabulary, words
from fusionjax.errors import CorruptRunError, DataError

# -- images -------------------------------------------------------------------------------


def _png(path, array, mode):
    from PIL import Image

    Image.fromarray(array, mode).save(path)
    return path


def test_png_greyscale_is_exact(tmp_path):
    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    x = read_image(_png(tmp_path / "g.png", pixels, "L"))
    assert x.shape == (6, 8, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], pixels.astype(np.float32) / 255.0)


def test_png_rgb_and_greyscale_conversion(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    path = _png(tmp_path / "red.png", rgb, "RGB")
    x3 = read_image(path, channels=3)
    assert x3.shape == (4, 5, 3)
    np.testing.assert_array_equal(x3, rgb / 255.0)
    x1 = read_image(path, channels=1)  # ITU-R 601-2 luma: L = 0.299 R + 0.587 G + 0.114 B
    assert x1.shape == (4, 5, 1)
    np.testing.assert_allclose(x1, 76 / 255.0, atol=1 / 255)
    grey = _png(tmp_path / "grey.png", np.full((4, 5), 100, np.uint8), "L")
    np.testing.assert_allclose(read_image(grey, channels=3), 100 / 255.0)  # grey -> RGB copies


def test_resize(tmp_path):
    path = _png(tmp_path / "c.png", np.full((12, 20), 200, np.uint8), "L")
    x = read_image(path, size=(6, 10))
    assert x.shape == (6, 10, 1)
    np.testing.assert_allclose(x, 200 / 255.0, atol=1e-6)  # a constant image stays constant
    up = read_image(path, size=(24, 7), channels=3)
    assert up.shape == (24, 7, 3)
    # a left-dark, right-bright image keeps its halves when shrunk
    half = np.zeros((8, 8), np.uint8)
    half[:, 4:] = 255
    small = read_image(_png(tmp_path / "h.png", half, "L"), size=(4, 4))[..., 0]
    assert small[:, 0].max() < 0.1 and small[:, -1].min() > 0.9


def test_jpeg(tmp_path):
    from PIL import Image

    yy, xx = np.mgrid[0:32, 0:32]
    smooth = (4 * xx + 2 * yy).astype(np.uint8)
    Image.fromarray(smooth, "L").save(tmp_path / "s.jpg", quality=95)
    x = read_image(tmp_path / "s.jpg")
    assert x.shape == (32, 32, 1)
    np.testing.assert_allclose(x[..., 0], smooth / 255.0, atol=0.03)  # lossy, but close
    assert read_image(tmp_path / "s.jpg", size=(16, 8), channels=3).shape == (16, 8, 3)


def test_normalize():
    out = normalize(np.array([0.0, 0.5, 1.0]), 0.5, 0.25)
    np.testing.assert_allclose(out, [-2.0, 0.0, 2.0])
    assert out.dtype == np.float32


def test_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.png: image file not found"):
        read_image(tmp_path / "missing.png")
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image")
    with pytest.raises(DataError, match="fake.png: not a readable image"):
        read_image(fake)


def _png_header_only(path, width: int, height: int):
    """A valid PNG header claiming ``width x height`` pixels, with almost no pixel data."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_images_are_refused_before_decoding(tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 20_000, 20_000)  # Pillow's own bomb limit
    with pytest.raises(DataError, match=r"bomb.png: image too large \(400,000,000 pixels; at most "
                                        r"64,000,000 pixels are read\); shrink it, or it is corrupt"):
        read_image(bomb, size=(28, 28))
    big = _png_header_only(tmp_path / "big.png", 9000, 9000)  # past ours, below Pillow's
    with pytest.raises(DataError, match=r"big.png: image too large \(9000 x 9000 = 81,000,000 pixels"):
        read_image(big)
    cut = _png_header_only(tmp_path / "cut.png", 20, 20)  # allowed, but its pixel data is missing
    with pytest.raises(DataError, match="cut.png: not a readable image, corrupt or truncated"):
        read_image(cut)


# -- IDX ----------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 5)).astype(np.uint8)
    data = _idx_bytes(images, 0x08)
    path = tmp_path / ("images.idx.gz" if gz else "images.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)


def test_idx_int32_is_big_endian_on_disk(tmp_path):
    values = np.array([1, -2, 70000], np.int32)
    (tmp_path / "v.idx").write_bytes(_idx_bytes(values, 0x0C))
    out = read_idx(tmp_path / "v.idx")
    np.testing.assert_array_equal(out, values)
    assert out.dtype.isnative


def test_idx_errors(tmp_path):
    good = _idx_bytes(np.zeros((2, 3), np.uint8), 0x08)
    (tmp_path / "magic.idx").write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(DataError, match="magic.idx: not an IDX file"):
        read_idx(tmp_path / "magic.idx")
    (tmp_path / "short.idx").write_bytes(good[:-2])
    with pytest.raises(DataError, match="short.idx: IDX body has 4 bytes.*truncated"):
        read_idx(tmp_path / "short.idx")
    with pytest.raises(DataError, match="none.idx: IDX file not found"):
        read_idx(tmp_path / "none.idx")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="bad.gz: cannot be read"):
        read_idx(tmp_path / "bad.gz")


# -- WAV ----------------------------------------------------------------------------------


def _wav(path, frames: bytes, *, width: int, channels: int = 1, rate: int = 8000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


def test_wav_16_bit(tmp_path):
    ints = np.array([0, 16384, -16384, 32767, -32768], np.int16)
    x, rate = read_wav(_wav(tmp_path / "a.wav", ints.astype("<i2").tobytes(), width=2, rate=11025))
    assert rate == 11025 and x.shape == (5, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], ints / 32768.0)


def test_wav_8_bit_is_unsigned(tmp_path):
    raw = np.array([128, 192, 64, 0, 255], np.uint8)
    x, _ = read_wav(_wav(tmp_path / "a.wav", raw.tobytes(), width=1))
    np.testing.assert_allclose(x[:, 0], [0.0, 0.5, -0.5, -1.0, 127 / 128])


def test_wav_24_bit(tmp_path):
    values = np.array([0, 1 << 22, -(1 << 22), (1 << 23) - 1, -(1 << 23)], np.int64)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in values)
    x, _ = read_wav(_wav(tmp_path / "a.wav", raw, width=3))
    np.testing.assert_allclose(x[:, 0], values / float(1 << 23))


def test_stereo_mixdown_is_the_channel_mean(tmp_path):
    left = np.array([1000, 2000, -3000, 0], np.int16)
    right = np.array([3000, -2000, -1000, 500], np.int16)
    frames = np.stack([left, right], axis=1).astype("<i2").tobytes()  # interleaved
    path = _wav(tmp_path / "st.wav", frames, width=2, channels=2)
    x, _ = read_wav(path)
    assert x.shape == (4, 2)
    np.testing.assert_allclose(x[:, 0], left / 32768.0)
    mono = load_audio(path, sample_rate=8000, num_samples=4, align="start")
    np.testing.assert_allclose(mono, (left + right) / 2 / 32768.0, rtol=1e-6)


def test_resampling_keeps_the_frequency(tmp_path):
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    path = _wav(tmp_path / "tone.wav", tone.tobytes(), width=2, rate=16000)
    x = load_audio(path, sample_rate=8000, num_samples=8000)
    assert x.shape == (8000,) and x.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.fft.rfftfreq(8000, 1 / 8000)[spectrum.argmax()] - 440) <= 1
    assert 0.45 < np.abs(x[100:-100]).max() < 0.55  # amplitude kept
    same = np.ones((5, 2), np.float32)
    assert resample(same, 8000, 8000) is same  # no work at the same rate


def test_fit_length_exact():
    x = np.array([1, 2, 3, 4, 5], np.float32)
    np.testing.assert_array_equal(fit_length(x, 3, "center"), [2, 3, 4])
    np.testing.assert_array_equal(fit_length(x, 3, "start"), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(np.arange(6), 3, "center"), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(x, 5, "center"), x)
    y = np.array([1, 2], np.float32)
    np.testing.assert_array_equal(fit_length(y, 5, "center"), [0, 1, 2, 0, 0])
    np.testing.assert_array_equal(fit_length(y, 5, "start"), [1, 2, 0, 0, 0])
    np.testing.assert_array_equal(fit_length(y, 6, "center"), [0, 0, 1, 2, 0, 0])


def test_truncated_wav(tmp_path):
    path = _wav(tmp_path / "cut.wav", np.zeros(100, "<i2").tobytes(), width=2)
    data = path.read_bytes()
    path.write_bytes(data[:-50])  # the header still promises 100 frames
    with pytest.raises(DataError, match="cut.wav: truncated WAV: header promises 100 frames, "
                                        "the file holds 75"):
        read_wav(path)


def test_float_wav_is_rejected(tmp_path):
    samples = np.zeros(16, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 8000 * 4, 4, 32)  # format tag 3: IEEE float
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack(
        "<I", len(samples)) + samples
    path = tmp_path / "float.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(DataError, match="float.wav: not a PCM WAV file.*convert it"):
        read_wav(path)
    with pytest.raises(DataError, match="float.wav"):
        load_audio(path, sample_rate=8000, num_samples=16)


def test_wav_errors(tmp_path):
    with pytest.raises(DataError, match="none.wav: audio file not found"):
        read_wav(tmp_path / "none.wav")
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(DataError, match="text.wav: not a PCM WAV file"):
        read_wav(tmp_path / "text.wav")


def test_wav_header_values_are_checked(tmp_path):
    good = _wav(tmp_path / "good.wav", np.zeros(100, "<i2").tobytes(), width=2).read_bytes()
    zero = bytearray(good)
    zero[24:28] = b"\0\0\0\0"  # the sample rate
    (tmp_path / "rate0.wav").write_bytes(bytes(zero))
    with pytest.raises(DataError, match=r"rate0.wav: its header declares a sample rate of 0 Hz \(a WAV's "
                                        r"rate is 1 to 192,000 Hz\); the file is corrupt"):
        load_audio(tmp_path / "rate0.wav", sample_rate=8000, num_samples=100)
    huge = bytearray(good)
    huge[24:28] = b"\xff\xff\xff\xff"
    (tmp_path / "rate4g.wav").write_bytes(bytes(huge))
    with pytest.raises(DataError, match="rate4g.wav: its header declares a sample rate of 4294967295 Hz"):
        read_wav(tmp_path / "rate4g.wav")
    (tmp_path / "short.wav").write_bytes(good[:30])
    with pytest.raises(DataError, match=r"short.wav: not a PCM WAV file \(truncated: the file has 30 bytes "
                                        r"and ends inside its 'fmt ' chunk"):
        read_wav(tmp_path / "short.wav")
    (tmp_path / "tiny.wav").write_bytes(good[:10])
    with pytest.raises(DataError, match="tiny.wav: not a PCM WAV file .truncated: the file has 10 bytes "
                                        "and ends inside the 12-byte RIFF/WAVE header"):
        read_wav(tmp_path / "tiny.wav")
    empty = _wav(tmp_path / "empty.wav", b"", width=2)
    with pytest.raises(DataError, match=r"empty.wav: holds no audio \(its data chunk has 0 frames\)"):
        read_wav(empty)
    promised = bytearray(good)
    promised[40:44] = b"\xff\xff\xff\x7f"  # a data chunk of 2 GB, in a 244-byte file
    (tmp_path / "promise.wav").write_bytes(bytes(promised))
    with pytest.raises(DataError, match="promise.wav: truncated WAV: header promises 1073741823 frames, "
                                        "the file holds 100"):
        read_wav(tmp_path / "promise.wav")


# -- text ---------------------------------------------------------------------------------


def test_words():
    assert words("Don't STOP, it's 2 late_ok!") == ["don't", "stop", "it's", "2", "late", "ok"]
    assert words("  ") == []


def test_vocabulary_order_and_encoding():
    vocab = Vocabulary.build(["the cat sat", "The dog", "a cat"])
    # pad, unk, then by decreasing count, ties alphabetically
    assert vocab.itos == ["<pad>", "<unk>", "cat", "the", "a", "dog", "sat"]
    assert Vocabulary.build(["a cat", "The dog", "the cat sat"]).itos == vocab.itos  # order-free
    ids = vocab.encode("The CAT flew", 5)
    assert ids.dtype == np.int32 and ids.shape == (5,)
    np.testing.assert_array_equal(ids, [3, 2, UNK, PAD, PAD])
    assert vocab.decode(ids) == "the cat <unk>"
    np.testing.assert_array_equal(vocab.encode("a dog sat the cat", 3), [4, 5, 6])  # truncated
    assert vocab.decode(vocab.encode("dog sat", 4)) == "dog sat"
    np.testing.assert_array_equal(vocab.encode("", 3), [0, 0, 0])


def test_vocabulary_limits():
    texts = ["a a a b b c"]
    assert Vocabulary.build(texts, max_size=4).itos[2:] == ["a", "b"]
    assert Vocabulary.build(texts, min_count=2).itos[2:] == ["a", "b"]
    assert len(Vocabulary.build(texts, max_size=2)) == 2


def test_vocabulary_from_train_only():
    train, test = ["good movie", "bad movie"], ["awful movie"]
    vocab = Vocabulary.build(train)
    assert "awful" not in vocab.stoi
    np.testing.assert_array_equal(vocab.encode(test[0], 2), [UNK, vocab.stoi["movie"]])


def test_vocabulary_save_load(tmp_path):
    vocab = Vocabulary.build(["héllo wörld £5", "hello again"])
    vocab.save(tmp_path / "vocab.json")
    back = Vocabulary.load(tmp_path / "vocab.json")
    assert back.itos == vocab.itos
    np.testing.assert_array_equal(back.encode("wörld hello x", 4), vocab.encode("wörld hello x", 4))
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(DataError, match="bad.json: not a fusionjax vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


@pytest.mark.parametrize("content, problem", [
    ('{"tokens": 5}', "'tokens' must be a list of words, not 5"),
    ('["a", "b"]', 'expected {"tokens": ["word", ...]}, found a JSON list'),
    ('{"words": ["a"]}', "found a JSON object without 'tokens' (keys ['words'])"),
    ('{"tokens": ["a", 3]}', "tokens[1] is 3, not a string"),
    ('{"tokens": ["a", "b", "a"]}', "tokens[2] = 'a' repeats tokens[0]"),
    ('{"tokens": ["<pad>", "<unk>", "a"]}', "tokens[0] is '<pad>', which is implicit"),
    ('{"tokens": ["a", "<unk>"]}', "tokens[1] is '<unk>', which is implicit"),
    ('{"tokens": ["Hello"]}', "tokens[0] = 'Hello' is not a word of the tokenizer"),
    ('{"tokens": ["two words"]}', "tokens[0] = 'two words' is not a word of the tokenizer"),
    ('{"tokens": ["' + "x" * 5000 + ' y"]}', "tokens[0] = 'xxxxx"),
])
def test_vocabulary_of_the_wrong_shape_or_content(tmp_path, content, problem):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(DataError) as e:
        Vocabulary.load(path)
    assert str(e.value).startswith(f"{path}: not a fusionjax vocabulary (") and problem in str(e.value)
    assert len(str(e.value)) - len(str(path)) < 600  # never the whole file
    with pytest.raises(CorruptRunError) as e:  # the vocabulary of a run: a run directory error
        Vocabulary.load(path, run_dir=tmp_path)
    assert e.value.path == tmp_path and str(e.value).startswith(f"{tmp_path}: vocab.json is not a fusionjax "
                                                                 "vocabulary (")
    assert problem in str(e.value) and "restore it from a copy of the run" in str(e.value)


def test_restoring_a_corrupt_run_vocabulary(tmp_path):
    from fusionjax_plugins.datasets.manifest import ManifestDataset

    ds = ManifestDataset(**ManifestDataset.test_settings)
    ds.save(tmp_path)
    ds.restore(tmp_path)
    (tmp_path / "vocab.json").write_text('{"tokens": 5}')
    with pytest.raises(CorruptRunError, match="vocab.json is not a fusionjax vocabulary") as e:
        ds.restore(tmp_path)
    assert e.value.path == tmp_path


# -- MNIST --------------------------------------------------------------------------------


def _mnist(folder, images: np.ndarray, labels: np.ndarray):
    from fusionjax_plugins.datasets import digit_sources

    images_file, labels_file = digit_sources.MNIST_FILES["test"]
    (folder / images_file).write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
    (folder / labels_file).write_bytes(gzip.compress(_idx_bytes(labels, 0x08)))
    return digit_sources.mnist.__wrapped__(folder, "test")  # (the cached one keys on the folder)


def test_mnist_labels_are_digits_and_counts_agree(tmp_path):
    images = np.zeros((6, 28, 28), np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9], np.uint8)
    got_images, got_labels = _mnist(tmp_path, images, labels)
    assert got_labels.dtype == np.int32 and got_labels.tolist() == labels.tolist()
    bad = labels.copy()
    bad[[2, 4]] = [200, 10]
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: label 200 at index 2 is not a digit "
                                        r"0-9 \(2 of its 6 labels are out of range\); the file is corrupt "
                                        r"or not MNIST"):
        _mnist(tmp_path, images, bad)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz holds 6 images but "
                                        ".*t10k-labels-idx1-ubyte.gz holds 5 labels"):
        _mnist(tmp_path, images, labels[:5])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: not MNIST images: expected unsigned "
                                        r"bytes of shape \[N, 28, 28\], found uint8 \[6, 14, 56\]"):
        _mnist(tmp_path, images.reshape(6, 14, 56), labels)


def test_idx_header_errors(tmp_path):
    (tmp_path / "dims.idx").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">I", 5))
    with pytest.raises(DataError, match=r"dims.idx: truncated IDX header: it declares 3 dimensions "
                                        r"\(12 bytes\), the file ends after 4"):
        read_idx(tmp_path / "dims.idx")
    (tmp_path / "huge.idx").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 60000, 60000))
    with pytest.raises(DataError, match=r"huge.idx: its header declares shape \(60000, 60000, 60000\), "
                                        r"more than the 2,147,483,648 bytes read at most"):
        read_idx(tmp_path / "huge.idx")
    (tmp_path / "long.idx").write_bytes(_idx_bytes(np.zeros(3, np.uint8), 0x08) + b"junk")
    with pytest.raises(DataError, match=r"long.idx: IDX body is longer than the 3 bytes its header \(3,\)"):
        read_idx(tmp_path / "long.idx")


# -- splits -------------------------------------------------------------------------------


def test_split_indices_disjoint_covering_reproducible():
    parts = split_indices(103, {"train": 0.8, "test": 0.2}, seed=1)
    train, test = parts["train"], parts["test"]
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(103))
    assert len(test) in (20, 21)
    again = split_indices(103, {"train": 0.8, "test": 0.2}, seed=1)
    np.testing.assert_array_equal(again["test"], test)
    other = split_indices(103, {"train": 0.8, "test": 0.2}, seed=2)
    assert not np.array_equal(other["test"], test)
    assert np.all(np.diff(train) > 0)  # sorted


def test_split_indices_stratified():
    labels = np.repeat([0, 1, 2], [500, 70, 31])
    np.random.default_rng(0).shuffle(labels)
    fractions = {"train": 0.7, "valid": 0.1, "test": 0.2}
    parts = split_indices(len(labels), fractions, seed=0, stratify=labels)
    np.testing.assert_array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(len(labels)))
    for c in (0, 1, 2):
        n = (labels == c).sum()
        for name, frac in fractions.items():
            assert abs((labels[parts[name]] == c).sum() - frac * n) <= 1, (c, name)
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, {"train": 0.8, "test": 0.1}, seed=0)
