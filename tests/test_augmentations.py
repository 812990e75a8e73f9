"""Augmentations: what each bundled one does, measured; the Augmenter built from
``data.augment`` and its errors; the ``--corrupt`` strings; SpecAugment in the spectrogram
encoder (training only); ``fusionjax evaluate --corrupt`` and ``--corruption-sweep``.

The contract every augmentation keeps (shape, dtype, determinism, its corruptions) is
``fusionjax.testing.check_augmentation``, run on every bundled one by
``tests/test_components.py``; here, the kit catching a broken one."""

from __future__ import annotations

import json
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fusionjax import testing
from fusionjax.augmentation import Augmenter, corruptions
from fusionjax.cli import main
from fusionjax.errors import ConfigError
from fusionjax.interfaces import Augmentation, FieldSpec
from fusionjax.model import FusionModel
from fusionjax.parallel import data_mesh
from fusionjax.registry import ComponentSpec, PluginOrigin, Registry
from fusionjax.training import randomness
from fusionjax.training.step import make_steps
from fusionjax_plugins.augmentations import audio, image, noise, text
from fusionjax_plugins.encoders.spectrogram_audio import SpectrogramAudioEncoder, spec_augment
from fusionjax_plugins.fusions.concat import ConcatFusion
from fusionjax_plugins.heads.classification import ClassificationHead

RATE = 8000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def digit(h: int = 12, w: int = 10) -> np.ndarray:
    """A normalised 'digit': background -0.42, a bright stroke (MNIST-like values)."""
    x = np.full((h, w, 1), -0.42, np.float32)
    x[3:9, 4:6] = 2.8
    x[4, 3:7] = 1.5
    return x


def sine(freq: float, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(RATE * seconds)) / RATE).astype(np.float32)


def peak(x: np.ndarray) -> float:
    """The dominant frequency of ``x`` in Hz."""
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(np.abs(np.fft.rfft(x)))])


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return float(10 * np.log10(np.var(clean, dtype=np.float64) / np.var(noisy - clean, dtype=np.float64)))


# ---- what each bundled augmentation does -----------------------------------------------------

def test_image_augmentations_measured():
    x = digit()
    # a shift alone, nearest-pixel: the digit moved by whole pixels, background moved in
    out = image.Affine(max_shift=3, max_rotate=0, order=0)(x, rng(1))
    found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
             if np.array_equal(out, np.roll(x, (dy, dx), (0, 1)))]  # the stroke never wraps
    assert len(found) == 1 and found[0] != (0, 0)
    # a rotation turns about the centre: the stroke's centroid stays, its mass nearly so
    blob = np.full((21, 21, 1), -1.0, np.float32)
    blob[8:13, 4:17] = 1.0
    turned = image.Affine(max_shift=0, max_rotate=40)(blob, rng(2))
    mass = lambda a: np.clip(a[..., 0] + 1, 0, None)  # noqa: E731
    centroid = lambda a: np.array(np.nonzero(mass(a) > 1)).mean(1)  # noqa: E731
    assert not np.allclose(turned, blob) and turned.min() == -1.0
    np.testing.assert_allclose(centroid(turned), [10, 10], atol=0.5)
    assert abs(mass(turned).sum() / mass(blob).sum() - 1) < 0.05

    c = image.Contrast(contrast=0.5, brightness=0.25)(x, rng())
    np.testing.assert_allclose(c.std(), 0.5 * x.std(), rtol=1e-5)
    np.testing.assert_allclose(c.mean(), x.mean() + 0.25 * x.std(), rtol=1e-5)

    inv = image.Invert(p=1.0)(x, rng())
    np.testing.assert_allclose(inv[[0, 5], [0, 4], 0], [x.max(), x.min()], rtol=1e-6)  # background <-> stroke
    np.testing.assert_allclose(image.Invert(p=1.0)(inv, rng()), x, atol=1e-6)
    np.testing.assert_array_equal(image.Invert(p=0.0)(x, rng()), x)

    ramp = np.arange(1, 121, dtype=np.float32).reshape(12, 10, 1)  # every pixel its own value
    cut = image.Cutout(size=0.5)(ramp, rng(3))
    rows, cols = np.nonzero((cut != ramp)[..., 0])
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    assert (np.ptp(rows) + 1, np.ptp(cols) + 1) == (6, 5)  # half of 12 by half of 10
    assert np.all(cut[box] == 1.0)  # the background: the image's minimum
    outside = np.ones_like(ramp, bool)
    outside[box] = False
    np.testing.assert_array_equal(cut[outside], ramp[outside])


def test_noise_is_at_the_drawn_snr_and_silence_stays_silent():
    for x in (sine(440) * 0.3, digit(28, 28)):
        for snr in (0.0, 12.5, 30.0):
            noisy = noise.Noise(snr_db=snr)(x, rng(4))
            assert noisy.dtype == x.dtype and abs(snr_db(x, noisy) - snr) < 0.01
    drawn = [snr_db(sine(300), noise.Noise(snr_db=[10, 20])(sine(300), rng(s))) for s in range(8)]
    assert all(10 - 0.01 < d < 20 + 0.01 for d in drawn) and np.ptp(drawn) > 1
    silent = np.zeros(800, np.float32)
    np.testing.assert_array_equal(noise.Noise(snr_db=0)(silent, rng()), silent)


def test_audio_augmentations_measured():
    x = sine(440)
    np.testing.assert_allclose(audio.Gain(db=6.0)(x, rng()), x * 10 ** 0.3, rtol=1e-6)
    for factor in (1.25, 0.8):
        sped = audio.Speed(factor=factor)(x, rng())
        assert sped.shape == x.shape and abs(peak(sped) - 440 * factor) <= 2
    assert np.all(audio.Speed(factor=1.25)(x, rng())[-1500:] == 0)  # faster: padded at the end

    ramp = np.arange(1, 801, dtype=np.float32)
    rolled = audio.TimeShift(max_shift=0.01, sample_rate=RATE)(ramp, rng(5))
    k = int(np.argmax(rolled == 1))
    assert 0 < min(k, 800 - k) <= 80 and np.array_equal(rolled, np.roll(ramp, k))
    zeroed = audio.TimeShift(max_shift=0.01, mode="zeros", sample_rate=RATE)(ramp, rng(5))
    shift = k if k <= 80 else k - 800
    if shift > 0:
        assert np.all(zeroed[:shift] == 0) and np.array_equal(zeroed[shift:], ramp[:-shift])
    else:
        assert np.all(zeroed[shift:] == 0) and np.array_equal(zeroed[:shift], ramp[-shift:])


def test_text_augmentations_keep_order_and_padding():
    ids = np.array([5, 6, 7, 8, 9, 10, 0, 0, 0, 0], np.int32)
    for seed in range(10):
        out = text.WordDropout(p=0.5)(ids, rng(seed))
        words = out[out != 0]
        assert out.dtype == ids.dtype and 1 <= len(words) <= 6
        assert np.all(out[len(words):] == 0)  # the kept words first, then padding
        assert list(words) == [w for w in ids if w in set(words)]  # in their order
    assert np.count_nonzero(text.WordDropout(p=1.0)(ids, rng())) == 1  # never every word
    np.testing.assert_array_equal(text.WordDropout(p=1.0)(np.zeros(4, np.int32), rng()), 0)

    typo = text.Typos(p=0.5)(ids, rng(1))
    assert np.all(typo[6:] == 0) and set(typo[:6]) <= {1, *ids[:6]} and 1 in typo
    np.testing.assert_array_equal(text.Typos(p=1.0)(ids, rng()), [1] * 6 + [0] * 4)


def test_bad_settings_are_config_errors_at_their_parameter():
    for make, key, text_ in [(lambda: image.Invert(p=-0.1), "p", "probability in [0, 1]"),
                             (lambda: image.Cutout(size=[0.5, 0.2]), "size", "low end is above"),
                             (lambda: audio.Speed(factor=3.0), "factor", "within [0.5, 2.0]"),
                             (lambda: image.Affine(max_rotate=-5), "max_rotate", ">= 0 degrees")]:
        with pytest.raises(ConfigError, match=re.escape(text_)) as e:
            make()
        assert e.value.key == key


class WritesItsInput(Augmentation):
    applies_to = ("audio",)
    test_settings = {}

    def __call__(self, x, rng):
        x *= 2.0
        return x


class IgnoresItsGenerator(Augmentation):
    applies_to = ("text",)
    test_settings = {}

    def __call__(self, x, rng):
        return np.random.default_rng().permutation(x).astype(np.int64)


def test_the_kit_catches_broken_augmentations():
    with pytest.raises(testing.ContractError) as e:
        testing.check_augmentation(WritesItsInput)
    assert {f.check for f in e.value.failures} == {"augmentation_output", "augmentation_deterministic"}
    assert "read-only" in str(e.value)
    with pytest.raises(testing.ContractError, match="int32 \\[16\\] into int64"):
        testing.check_augmentation(IgnoresItsGenerator)


# ---- the Augmenter: data.augment --------------------------------------------------------------

class Specs:
    """What the Augmenter reads of a data set: its spec and modalities."""

    spec = {"image": FieldSpec((12, 10, 1), "float32"),
            "audio": FieldSpec((800,), "float32", {"sample_rate": RATE}),
            "text": FieldSpec((10,), "int32", {"vocab_size": 50}),
            "label": FieldSpec((), "int32")}
    modalities = ("image", "audio", "text")


EXAMPLE = {"image": digit(), "audio": sine(440, 0.1),
           "text": np.array([5, 6, 7, 8, 0, 0, 0, 0, 0, 0], np.int32), "label": np.int32(3)}
SECTION = {"image": [{"type": "affine", "max_shift": 2, "max_rotate": 10}, {"type": "invert", "p": 0.5}],
           "audio": [{"type": "noise", "snr_db": [10, 30]}, {"type": "gain", "db": [-6, 6]}]}


def test_the_augmenter_applies_each_modalitys_chain_independently():
    aug = Augmenter.from_config(SECTION, Specs())
    before = {k: np.copy(v) for k, v in EXAMPLE.items()}
    out = aug(EXAMPLE, rng(7))
    assert all(np.array_equal(EXAMPLE[k], before[k]) for k in EXAMPLE)  # the input untouched
    assert out["text"] is EXAMPLE["text"] and out["label"] is EXAMPLE["label"]
    assert not np.array_equal(out["image"], EXAMPLE["image"]) and out["image"].dtype == np.float32
    again = aug(EXAMPLE, rng(7))
    assert all(np.array_equal(out[k], again[k]) for k in out)
    assert not np.array_equal(aug(EXAMPLE, rng(8))["audio"], out["audio"])
    # another augmentation on the image changes nothing the audio draws
    more = Augmenter.from_config({**SECTION, "image": [*SECTION["image"], {"type": "cutout"}]}, Specs())
    np.testing.assert_array_equal(more(EXAMPLE, rng(7))["audio"], out["audio"])
    # an absent input is never augmented
    absent = aug({**EXAMPLE, "mask/audio": np.bool_(False)}, rng(7))
    assert absent["audio"] is EXAMPLE["audio"]
    # the resolved section builds the same augmenter, and it travels to worker processes
    resolved = aug.resolved()
    assert resolved["audio"][1] == {"type": "augmentations/gain", "db": [-6.0, 6.0]}
    assert resolved["image"][0]["order"] == 1  # every default filled in
    for other in (Augmenter.from_config(resolved, Specs()), pickle.loads(pickle.dumps(aug))):
        assert all(np.array_equal(other(EXAMPLE, rng(7))[k], out[k]) for k in out)
    assert Augmenter.from_config({}, Specs()) is None
    assert Augmenter.from_config({"image": []}, Specs()) is None


@pytest.mark.parametrize("section, key, message", [
    ({"image": [{"type": "afine"}]}, "data.augment.image[0].type",
     "unknown augmentation 'afine' (did you mean 'affine'"),
    ({"imgae": [{"type": "affine"}]}, "data.augment.imgae", "no modality 'imgae' (did you mean 'image'?)"),
    ({"text": [{"type": "speed"}]}, "data.augment.text[0].type",
     "'speed' applies to audio inputs, but modality 'text' (int32 [10]) is a text input"),
    ({"audio": [{"type": "noise", "snr": 3}]}, "data.augment.audio[0].snr",
     "unknown parameter 'snr' (did you mean 'snr_db'?)"),
    ({"image": [{"type": "affine"}, {"type": "invert", "p": -1}]}, "data.augment.image[1].p", "probability"),
    ({"audio": [{"type": "time_shift", "sample_rate": 16000}]}, "data.augment.audio[0].sample_rate",
     "is 16000, but the audio sample_rate of the data set is 8000"),
    ({"image": {"type": "affine"}}, "data.augment.image", "must be a list of augmentations"),
    ({"image": [{"max_shift": 2}]}, "data.augment.image[0].type", 'needs `type = "<augmentation name>"`'),
])
def test_augmenter_errors_name_the_key(section, key, message):
    with pytest.raises(ConfigError) as e:
        Augmenter.from_config(section, Specs())
    assert e.value.key == key and message in e.value.message, str(e.value)


def test_text_augmentations_offered_for_a_text_mismatch():
    with pytest.raises(ConfigError) as e:
        Augmenter.from_config({"text": [{"type": "noise"}]}, Specs())
    assert "applies to image and audio inputs" in e.value.message
    assert "word_dropout" in e.value.hint and "typos" in e.value.hint


@pytest.mark.parametrize("spec, message", [
    ("audio:noise:0.5", "expected MODALITY=NAME:SEVERITY"),
    ("audio=noise", "expected MODALITY=NAME:SEVERITY"),
    ("audoi=noise:0.5", "no modality 'audoi' (did you mean 'audio'?)"),
    ("audio=nosie:0.5", "unknown augmentation 'nosie' (did you mean 'noise'?)"),
    ("audio=noise:0", "the severity must be a number in (0, 1], got '0'"),
    ("audio=noise:1.5", "in (0, 1], got '1.5'"),
    ("audio=noise:nan", "in (0, 1], got 'nan'"),
    ("audio=noise:loud", "got 'loud'"),
    ("text=gain:0.5", "'gain' applies to audio inputs"),
])
def test_corrupt_strings_are_checked(spec, message):
    with pytest.raises(ConfigError) as e:
        corruptions([spec], Specs())
    assert e.value.key == "--corrupt" and message in e.value.message, str(e.value)


def test_corruptions_use_each_augmentations_severity_settings():
    aug = corruptions(["audio=noise:0.5", "audio=gain:1", "image=invert:1"], Specs())
    assert [s.spec.name for s in aug.chains["audio"]] == ["noise", "gain"]
    assert aug.chains["audio"][0].settings == {"snr_db": 15.0}
    out = aug(EXAMPLE, rng())
    np.testing.assert_allclose(snr_db(EXAMPLE["audio"], out["audio"] * 10 ** 1.2), 15.0, atol=0.01)
    assert out["image"][0, 0, 0] == EXAMPLE["image"].max()  # every example inverted
    # a plugin's augmentation without a corruption is refused by name
    registry = Registry()
    registry.add(ComponentSpec("augmentation", "doubling", WritesItsInput, PluginOrigin("mine")))
    with pytest.raises(ConfigError, match="'audio=doubling:0.5': augmentation 'doubling' defines "
                                          "no corruption severity") as e:
        corruptions(["audio=doubling:0.5"], Specs(), registry)
    assert e.value.key == "--corrupt" and e.value.hint == "corruptions for this modality: none"


# ---- SpecAugment --------------------------------------------------------------------------------

def test_spec_augment_masks_bands_with_the_mean():
    spec = jax.random.normal(jax.random.key(0), (4, 30, 16)) + 5.0
    out = np.asarray(jax.jit(spec_augment, static_argnums=(2, 3, 4, 5))(spec, jax.random.key(1), 2, 6, 1, 4))
    spec = np.asarray(spec)
    for b in range(4):
        masked = out[b] != spec[b]
        mean = spec[b].mean()
        np.testing.assert_allclose(out[b][masked], mean, rtol=1e-6)
        frames, bands = np.nonzero(masked.all(1))[0], np.nonzero(masked.all(0))[0]
        assert len(frames) <= 12 and len(bands) <= 4  # two bands of <= 6 frames, one of <= 4 mels
        assert np.all(masked == (np.isin(np.arange(30), frames)[:, None] | np.isin(np.arange(16), bands)))
    assert np.any(out != spec)


def _audio_model(**spec_augment):
    enc = SpectrogramAudioEncoder((800,), sample_rate=RATE, n_fft=64, hop_length=32, n_mels=16,
                                  channels=(4,), dense=8, **spec_augment, rngs=nnx.Rngs(0))
    return FusionModel({"audio": enc}, ConcatFusion({"audio": 8}, rngs=nnx.Rngs(1)),
                       ClassificationHead(8, num_classes=3, hidden=(), rngs=nnx.Rngs(2)))


def test_spec_augment_masks_in_the_train_step_only():
    batch = {"audio": jnp.asarray(np.random.default_rng(0).standard_normal((4, 800)), jnp.float32),
             "label": jnp.asarray([0, 1, 2, 0], jnp.int32)}
    plain, masked = _audio_model(), _audio_model(time_masks=2, time_width=8, freq_masks=1, freq_width=4)
    enc = masked.encoders["audio"]
    # outside the train step (evaluation, predict): nothing masked, the plain encoder's output
    np.testing.assert_array_equal(enc(batch["audio"]), plain.encoders["audio"](batch["audio"]))
    with randomness.training(jax.random.key(3), masked):
        one, again = enc(batch["audio"]), enc(batch["audio"])
    np.testing.assert_array_equal(one, again)  # one key per module and step
    assert not np.allclose(one, plain.encoders["audio"](batch["audio"]))
    # the compiled train step hands the encoder its key: its loss is not the unmasked one
    unmasked = 4 * float(masked.head.loss(masked(batch), batch["label"]))
    steps = make_steps(masked, optax.sgd(0.0), data_mesh())
    _, stats = steps.train(steps.init, batch)
    assert abs(float(stats["loss_sum"]) - unmasked) > 1e-4


def test_spec_augment_settings_are_checked():
    with pytest.raises(ConfigError, match="must be in 1..26 \\(the spectrogram's frames\\)") as e:
        SpectrogramAudioEncoder((800,), sample_rate=RATE, n_fft=64, hop_length=32, n_mels=16,
                                time_masks=1, time_width=40, rngs=nnx.Rngs(0))
    assert e.value.key == "time_width"


# ---- the command line -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny image + audio run, trained with augmentations."""
    from fusionjax.assembly import assemble
    from fusionjax.training.loop import train

    config = {
        "model": {"encoders": {"image": {"type": "cnn_image", "channels": [4], "dense": 8},
                               "audio": {"type": "spectrogram_audio", "n_fft": 64, "hop_length": 32,
                                         "n_mels": 8, "channels": [4], "dense": 8, "time_masks": 1,
                                         "time_width": 2}},
                  "fusion": {"type": "concat"}, "head": {"type": "classification", "hidden": []}},
        "data": {"type": "synthetic", "modalities": ["image", "audio"], "train_size": 64,
                 "test_size": 24, "image_size": 8, "num_samples": 400, "num_classes": 3,
                 "augment": {"image": [{"type": "invert", "p": 0.5}],
                             "audio": [{"type": "noise", "snr_db": [10, 30]}]}},
        "train": {"steps": 20, "batch_size": 16, "log_every": 10, "eval_batch_size": 8,
                  "optimizer": {"name": "adam", "learning_rate": 1e-2}},
    }
    return train(assemble(config), tmp_path_factory.mktemp("runs") / "aug", log=lambda s: None).run_dir


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evaluate_corrupt(run, capsys):
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["augment"]["image"] == [{"type": "augmentations/invert", "p": 0.5}]
    code, out, _ = _cli(capsys, "evaluate", str(run), "--json")
    clean = json.loads(out)
    code, out, _ = _cli(capsys, "evaluate", str(run), "--corrupt", "audio=noise:1",
                        "--corrupt", "image=invert:1", "--json")
    corrupt = json.loads(out)
    assert code == 0 and corrupt["corrupted"] == ["audio=noise:1", "image=invert:1"]
    assert corrupt["loss"] != clean["loss"] and corrupt["examples"] == clean["examples"] == 24
    code, out, _ = _cli(capsys, "evaluate", str(run), "--corrupt", "audio=noise:1", "--corrupt",
                        "image=invert:1")
    assert code == 0 and "corrupted audio=noise:1 image=invert:1]" in out
    code, _, err = _cli(capsys, "evaluate", str(run), "--corrupt", "image=nosie:0.5")
    assert code == 2
    assert "--corrupt: 'image=nosie:0.5': unknown augmentation 'nosie' (did you mean 'noise'?)" in err
    code, _, err = _cli(capsys, "evaluate", str(run), "--corrupt", "image=noise:0.5", "--sweep")
    assert code == 2 and "--corrupt: goes with a plain evaluation" in err


def test_evaluate_corruption_sweep(run, capsys):
    code, out, _ = _cli(capsys, "evaluate", str(run), "--corruption-sweep", "--json")
    rows = json.loads(out)
    names = {"image": {"affine", "contrast", "invert", "cutout", "noise"},
             "audio": {"noise", "gain", "time_shift", "speed"}}
    assert code == 0 and rows[0]["modality"] is None and rows[0]["severity"] == 0.0
    assert len(rows) == 1 + 3 * 9 and {r["severity"] for r in rows[1:]} == {0.25, 0.5, 1.0}
    for m, expected in names.items():
        assert {r["corruption"] for r in rows if r["modality"] == m} == expected
    code, out, _ = _cli(capsys, "evaluate", str(run), "--corruption-sweep")
    lines = out.splitlines()
    assert code == 0 and "accuracy under corruption" in lines[0]
    assert lines[1].split() == ["modality", "corruption", "clean", "0.25", "0.5", "1"]
    assert len(lines) == 2 + 9 and {line.split()[0] for line in lines[2:]} == {"image", "audio"}
    clean = f"{rows[0]['accuracy']:.4f}"
    assert all(line.split()[2] == clean for line in lines[2:])
