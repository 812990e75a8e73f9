"""Data sets whose targets are text (digit_speech, digit_strips, digit_qa's sentences) and
the encoder options that keep time and space for them (rectangular pooling, column tokens).

Each draw is reconstructed the way ``DigitsBase.batches`` makes it (the rng of data seed,
split and epoch seed), so the tests see which recordings and images an example is made of."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusionjax import fast_paths, testing, tuning
from fusionjax.data.audio import read_wav
from fusionjax.interfaces import LABEL
from fusionjax.sequences import TargetVocabulary
from fusionjax_plugins.datasets import digit_sources as sources
from fusionjax_plugins.datasets.digit_qa import DigitQA
from fusionjax_plugins.datasets.digit_speech import DigitSpeech
from fusionjax_plugins.datasets.digit_strips import DigitStrips
from fusionjax_plugins.datasets.digits_base import SPLITS
from fusionjax_plugins.encoders.cnn_image import CNNImageEncoder
from fusionjax_plugins.encoders.spectrogram_audio import SpectrogramAudioEncoder
from fusionjax_plugins.kernels import pooling

FSDD = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
EPOCH = 7  # the train draw checked: that of epoch seed 7


def draws_of(ds, split: str, epoch_seed: int = EPOCH) -> dict[str, np.ndarray]:
    seed = epoch_seed if split == "train" else 0
    return ds.draw(split, ds.size(split), np.random.default_rng([ds.seed, SPLITS.index(split), seed]))


def one_pass(ds, split: str, epoch_seed: int = EPOCH) -> dict[str, np.ndarray]:
    batches = list(ds.batches(split, 16, seed=epoch_seed, shuffle=False, drop_remainder=False))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def vocabulary(spec) -> TargetVocabulary:
    return TargetVocabulary(spec.metadata["vocabulary"], spec.metadata["separator"])


@pytest.mark.parametrize("cls,settings", [
    (DigitSpeech, None), (DigitStrips, None),
    (DigitQA, {**DigitQA.test_settings, "target": "sentence"})], ids=["speech", "strips", "qa"])
def test_the_data_sets_keep_the_contract(cls, settings):
    testing.check_dataset(cls, settings)
    ds = cls(**(settings or cls.test_settings))
    assert ds.num_classes is None and ds.label_names is None
    assert ds.spec[LABEL].dtype == "int32" and "vocabulary" in ds.spec[LABEL].metadata


def test_digit_speech_is_one_speakers_recordings_end_to_end_in_silence():
    ds = DigitSpeech(train_size=60, test_size=40)
    vocab, rate = vocabulary(ds.spec[LABEL]), ds.sample_rate
    for split in SPLITS:
        clips, draws, batch = ds.clips(split), draws_of(ds, split), one_pass(ds, split)
        assert np.array_equal(batch[LABEL], draws[LABEL])
        for i in range(ds.size(split)):
            used = draws["recording"][i][draws["recording"][i] >= 0]
            names = [FSDD.match(clips.names[r]).groups() for r in used]
            transcript = vocab.text(batch[LABEL][i])
            assert ds.min_digits <= len(transcript) <= ds.max_digits
            assert transcript == "".join(digit for digit, _, _ in names)
            assert {speaker for _, speaker, _ in names} == {clips.speaker_names[draws["speaker"][i]]}
            # FSDD's split: test recordings are takes 0-4, and only test utterances use them
            assert all((int(take) <= 4) == (split == "test") for _, _, take in names)
            silent = np.ones(ds.num_samples, bool)
            end = 0
            for r, at in zip(used, draws["start"][i]):
                assert at >= end  # in order, no overlap
                if end:
                    assert at - end <= round(ds.max_gap * rate)
                end = at + clips.length[r]
                np.testing.assert_array_equal(batch["audio"][i, at:end], clips.clip(r))
                silent[at:end] = False
            assert end <= ds.num_samples  # no digit cut
            assert not np.any(batch["audio"][i, silent])  # gaps and padding are silence
    # a clip is its file's own samples, trimmed only at the ends
    clips = ds.clips("test")
    for r in (0, 57, len(clips.names) - 1):
        whole = read_wav(ds.fsdd_dir / "recordings" / clips.names[r])[0][:, 0]
        clip = clips.clip(r)
        (at,) = [j for j in range(len(whole) - len(clip) + 1)
                 if np.array_equal(whole[j:j + len(clip)], clip)]
        cut = np.concatenate([whole[:at], whole[at + len(clip):]])
        assert not len(cut) or np.abs(cut).max() < np.abs(clip).max()
    # train utterances are re-drawn every epoch; the test ones are fixed
    assert not np.array_equal(one_pass(ds, "train", 1)["audio"], one_pass(ds, "train", 2)["audio"])
    np.testing.assert_array_equal(one_pass(ds, "test", 1)["audio"], one_pass(ds, "test", 2)["audio"])


def test_digit_speech_never_cuts_a_digit_when_the_room_is_tight():
    # 5 digits in 3 s: many draws need other recordings or narrower gaps
    ds = DigitSpeech(min_digits=5, max_digits=5, max_gap=0.5, num_samples=24000,
                     train_size=300, test_size=10)
    clips, draws = ds.clips("train"), draws_of(ds, "train")
    ends = draws["start"] + clips.length[draws["recording"]]
    assert np.all(draws["recording"] >= 0) and np.all(ends[:, -1] <= ds.num_samples)
    assert np.all(draws["start"][:, 1:] >= ends[:, :-1])


def test_digit_strips_are_train_images_in_train_and_test_images_in_test():
    ds = DigitStrips(train_size=40, test_size=30)
    vocab = vocabulary(ds.spec[LABEL])
    background = (0.0 - sources.MNIST_MEAN) / sources.MNIST_STD
    seen = {split: {img.tobytes() for img in ds.images(split)[0]} for split in SPLITS}
    for split in SPLITS:
        images, labels = ds.images(split)
        draws, batch = draws_of(ds, split), one_pass(ds, split)
        assert batch["image"].shape == (ds.size(split), 28, ds.width, 1) and ds.width == 188
        for i in range(ds.size(split)):
            used = draws["image"][i][draws["image"][i] >= 0]
            transcript = vocab.text(batch[LABEL][i])
            assert ds.min_digits <= len(transcript) <= ds.max_digits
            assert transcript == "".join(str(labels[j]) for j in used)
            rest = np.ones(ds.width, bool)
            end = 0
            for j, at in zip(used, draws["column"][i]):
                assert end <= at <= end + (ds.max_gap if end else ds.width)
                block = batch["image"][i, :, at:at + 28, 0]
                np.testing.assert_allclose(block, sources.mnist_float(images[j][None])[0, ..., 0])
                raw = np.rint(block * sources.MNIST_STD * 255 + sources.MNIST_MEAN * 255).astype(np.uint8)
                assert raw.tobytes() in seen[split]  # an image of this split's file
                rest[at:at + 28] = False
                end = at + 28
            np.testing.assert_allclose(batch["image"][i, :, rest, 0], background, rtol=1e-6)
    # train images never appear in a test strip and vice versa (no image is in both files)
    assert not seen["train"] & seen["test"]
    assert not np.array_equal(one_pass(ds, "train", 1)["image"], one_pass(ds, "train", 2)["image"])


def test_digit_strips_read_a_new_strip_and_invert_dark_on_light(tmp_path):
    from PIL import Image

    ds = DigitStrips(train_size=4, test_size=4)
    images, _ = ds.images("test")
    strip = np.zeros((28, ds.width), np.uint8)
    strip[:, 10:38], strip[:, 40:68] = images[0], images[1]
    Image.fromarray(255 - strip).save(tmp_path / "ink.png")  # dark digits on white paper
    x = ds.encode("image", str(tmp_path / "ink.png"))
    assert x.shape == ds.spec["image"].shape and x.dtype == np.float32
    fixed, note = ds.review("image", x)
    assert note and "inverted" in note
    np.testing.assert_allclose(fixed[..., 0], sources.mnist_float(strip[None])[0, ..., 0], atol=1e-5)
    assert ds.review("image", fixed) == (fixed, None)


def test_digit_qa_sentence_states_the_answer_about_both_digits():
    words = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
             "fourteen fifteen sixteen seventeen eighteen").split()
    say = {"sum": lambda a, b: f"{words[a]} plus {words[b]} is {words[a + b]}",
           "difference": lambda a, b: f"the difference between {words[a]} and {words[b]} is "
                                      f"{words[abs(a - b)]}",
           "larger": lambda a, b: f"the larger of {words[a]} and {words[b]} is {words[max(a, b)]}",
           "smaller": lambda a, b: f"the smaller of {words[a]} and {words[b]} is {words[min(a, b)]}"}
    ds = DigitQA(train_size=200, test_size=100, num_samples=2000, target="sentence")
    spec = ds.spec[LABEL]
    assert spec.shape == (8,) and spec.metadata["separator"] == " "
    used = {w for f in say.values() for w in f(7, 4).split()} | set(words)
    assert set(spec.metadata["vocabulary"][2:]) == used
    vocab = vocabulary(spec)
    for split in SPLITS:
        draws, batch = draws_of(ds, split), one_pass(ds, split)
        a = ds.images(split)[1][draws["image"]]
        b = ds.recordings(split).labels[draws["audio"]]
        ops = [ds.operations[o] for o in draws["operation"]]
        assert set(ops) == set(say)
        for i in range(ds.size(split)):
            assert vocab.text(batch[LABEL][i]) == say[ops[i]](a[i], b[i])
    # the class target of the same draw is the sentence's number
    answer = DigitQA(train_size=200, test_size=100, num_samples=2000)
    sentences = one_pass(ds, "test")[LABEL]
    classes = one_pass(answer, "test")[LABEL]
    assert [vocab.text(s).split()[-1] for s in sentences] == [words[c] for c in classes]


# ---- the encoders ----------------------------------------------------------------------------

def test_cnn_column_tokens_are_the_feature_map_column_by_column():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 28, 40, 1)), jnp.float32)
    settings = dict(channels=(4, 6), pool_size=(2, 1), dense=8)
    positions = CNNImageEncoder((28, 40, 1), **settings, rngs=nnx.Rngs(0))
    columns = CNNImageEncoder((28, 40, 1), **settings, tokens="columns", rngs=nnx.Rngs(0))
    run = nnx.jit(lambda e, x: (e(x), e.tokens(x)))  # one program: quicker than op by op
    (embedded, by_position), (same, by_column) = run(positions, x), run(columns, x)
    fmap = by_position.values.reshape(3, 7, 40, 6)  # row by row: [B, H', W', C]
    assert by_column.values.shape == (3, 40, 7 * 6) and columns.token_features == 7 * 6
    assert positions.token_features == 6 and bool(by_column.valid.all())
    np.testing.assert_array_equal(by_column.values, jnp.swapaxes(fmap, 1, 2).reshape(3, 40, 42))
    np.testing.assert_array_equal(by_column.values[:, 5, :6], fmap[:, 0, 5])  # column 5, row 0
    np.testing.assert_array_equal(same, embedded)  # the embedding does not depend on it


def test_spectrogram_pooling_frequency_only_keeps_every_frame():
    enc = SpectrogramAudioEncoder((2000,), sample_rate=8000, n_fft=64, hop_length=32, n_mels=16,
                                  channels=(4, 8), pool_size=(1, 2), readout="flatten", dense=0,
                                  rngs=nnx.Rngs(0))
    frames = 1 + 2000 // 32
    out, seq = jax.eval_shape(lambda x: (enc(x), enc.tokens(x).values), jnp.zeros((2, 2000)))
    assert seq.shape == (2, frames, 4 * 8) == (2, frames, enc.token_features)
    assert enc.out_features == frames * 4 * 8 and out.shape == (2, enc.out_features)


@pytest.mark.parametrize("window", [(1, 2), (2, 3), (3, 1), (2, 2)])
def test_rectangular_max_pool_is_nnx_max_pool_values_and_gradients(window):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 10, 3)).astype(np.float32)
    x[0] = np.maximum(np.round(x[0]), 0.0)  # ties and all-zero windows: the first one wins
    x = jnp.asarray(x)
    w = jnp.asarray(rng.standard_normal((2, 9 // window[0], 10 // window[1], 3)), jnp.float32)
    reference = jax.value_and_grad(
        lambda x: jnp.sum(nnx.max_pool(x, window, strides=window, padding="VALID") * w))(x)
    for on in (True, False):
        with fast_paths.override(max_pool=on):
            got = jax.jit(jax.value_and_grad(lambda x: jnp.sum(pooling.max_pool(x, window) * w)))(x)
        np.testing.assert_allclose(got[0], reference[0], rtol=1e-6)
        np.testing.assert_array_equal(got[1], reference[1])  # the very same elements chosen
    avg = pooling.avg_pool(x, window)
    np.testing.assert_allclose(avg, nnx.avg_pool(x, window, strides=window, padding="VALID"),
                               rtol=1e-6, atol=1e-6)
    name = f"max_pool.k{window[0]}" if window[0] == window[1] else f"max_pool.k{window[0]}x{window[1]}"
    assert name in tuning.declared()
