"""``avdigits``: an MNIST image and a spoken recording (FSDD) of the same digit.

Every MNIST image of a split is paired with a recording of its class from the
same split (FSDD's standard split: recording index 0-4 is test).  The train
pairing is re-drawn every epoch; the test pairing is fixed.  Either modality
alone suffices, so fusion should beat both.

``noisy = true`` degrades both modalities so that neither alone is reliable
(calibrated so that each alone scores roughly 60-85% on the test split):
images get Gaussian pixel noise (``image_noise``, in units of the [0, 1] pixel
range) and a blanked ``occlusion`` x ``occlusion`` square at a random place;
recordings get white noise at a signal-to-noise ratio of ``audio_snr_db`` dB
(relative to the recording's own power; negative means louder than the voice).
"""

from __future__ import annotations

import numpy as np

from fusionjax.data.audio import Align
from fusionjax.errors import ConfigError
from fusionjax.interfaces import LABEL, Batch, FieldSpec
from fusionjax_plugins.datasets import digit_sources as sources
from fusionjax_plugins.datasets.digits_base import DigitsBase, pick_per_class


class AVDigits(DigitsBase):
    """Image + audio: each example is an MNIST image (``image``, float32 ``[28, 28, 1]``,
    normalised with MNIST's mean and standard deviation) paired with a spoken recording of
    the same digit from the Free Spoken Digit Dataset (``audio``, float32
    ``[num_samples]``); the label is the digit, 0-9 (10 classes).

    Splits: ``train`` and ``test`` (MNIST's own train/test files; FSDD's standard split,
    recording index 0-4 = test).  The train pairing is re-drawn every epoch, the test
    pairing is fixed.  With ``noisy = true`` both modalities are degraded so that neither
    alone is reliable.  Details, sizes and the calibration of the noise:
    [data.md](data.md#bundled-data-sets).  Provides ``sample_rate`` (audio) and
    ``num_classes`` (10).

    Parameters:
        root: Folder holding ``mnist/`` and ``fsdd/``; none: ``$FUSIONJAX_DATA``, else
            ``examples/data`` (see above).
        noisy: Degrade both modalities with the three settings below (which have no effect
            otherwise).
        image_noise: Standard deviation of the Gaussian noise added to every pixel, in units
            of the ``[0, 1]`` pixel range. ``>= 0``.
        occlusion: Side of the square, at a random place in each image, that is blanked (set
            to black, after the noise). ``0..28``; ``0``: no square.
        audio_snr_db: White noise added at this signal-to-noise ratio in dB, relative to the
            power of the recording's non-zero samples (its zero padding is not counted);
            negative: the noise is louder than the voice.
        sample_rate: Recordings are resampled to this rate (Hz; FSDD is recorded at 8 kHz).
            ``>= 1``.
        num_samples: Samples per recording after crop/pad (0.75 s at 8 kHz). ``>= 1``.
        align: Which part of a recording crop/pad keeps ([data.md](data.md#audio)).
        train_size: Training examples per epoch (none: all): a random subset of the MNIST
            training images, drawn afresh each epoch. At most the number of MNIST training
            images (60,000; 3,000 in ``examples/data``); a larger value is not caught by
            ``config check``.
        test_size: Examples in ``test`` (none: all): a fixed random subset of the MNIST test
            images. At most their number (10,000; 1,000 in ``examples/data``).
        seed: Seed of the pairings, subsets and noise. The test draw depends on it alone; the
            train draw of each epoch also on ``train.seed``.
    """

    test_settings = {"train_size": 40, "test_size": 20, "num_samples": 2000}
    def __init__(
        self,
        *,
        root: str | None = None,
        noisy: bool = False,
        image_noise: float = 0.8,
        occlusion: int = 14,
        audio_snr_db: float = -6.0,
        sample_rate: int = 8000,
        num_samples: int = 6000,
        align: Align = "center",
        train_size: int | None = None,
        test_size: int | None = None,
        seed: int = 0,
    ):
        super().__init__(root=root, sample_rate=sample_rate, num_samples=num_samples, align=align,
                         train_size=train_size, test_size=test_size, seed=seed)
        if not 0 <= occlusion <= 28:
            raise ConfigError(f"must be in 0..28, got {occlusion}", key="occlusion")
        if image_noise < 0:
            raise ConfigError(f"must be >= 0, got {image_noise}", key="image_noise")
        self.noisy, self.image_noise, self.occlusion = noisy, image_noise, occlusion
        self.audio_snr_db = audio_snr_db
        self.num_classes = 10
        self.label_names = tuple(str(d) for d in range(10))
        self.spec = {**self.spec, LABEL: FieldSpec((), "int32")}

    def size(self, split: str) -> int:
        n, available = super().size(split), len(self.images(split)[1])
        if n > available:  # each image is used once per epoch
            raise ConfigError(f"asks for {n} {split} examples; the {split} split has "
                              f"{available} images", key=f"{split}_size")
        return n

    def draw(self, split, n, rng):
        _, labels = self.images(split)
        image = rng.choice(len(labels), size=n, replace=False) if n < len(labels) else np.arange(n)
        audio = pick_per_class(labels[image], self.recordings(split).by_class(), rng)
        return {"image": image, "audio": audio, LABEL: labels[image]}

    def materialise(self, split, draws, rows, rngs) -> Batch:
        batch = super().materialise(split, draws, rows, rngs)
        if self.noisy:
            for i, rng in enumerate(rngs):
                batch["image"][i] = degrade_image(batch["image"][i], self.image_noise,
                                                  self.occlusion, rng)
                batch["audio"][i] = add_noise(batch["audio"][i], self.audio_snr_db, rng)
        return batch


def degrade_image(x: np.ndarray, noise: float, occlusion: int, rng: np.random.Generator):
    """Pixel noise (``noise`` in [0, 1]-pixel units) and one blanked square."""
    x = x + (noise / sources.MNIST_STD) * rng.standard_normal(x.shape, np.float32)
    if occlusion:
        r, c = rng.integers(0, 28 - occlusion + 1, size=2)
        x[r:r + occlusion, c:c + occlusion] = (0.0 - sources.MNIST_MEAN) / sources.MNIST_STD
    return x


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at ``snr_db`` relative to the recording's power over its non-silent part."""
    voiced = np.count_nonzero(audio)
    power = float(np.dot(audio, audio)) / voiced if voiced else 0.0  # zeros add nothing
    noise = rng.standard_normal(audio.shape, np.float32)  # float32: half the cost of float64
    noise *= np.float32(np.sqrt(power / 10 ** (snr_db / 10)))
    return audio + noise
