"""``digit_speech``: utterances of a few spoken digits, transcribed as the digit string.

Each example is ``min_digits..max_digits`` random digits spoken by one FSDD speaker:
recordings of that speaker (each trimmed to its sound) joined by silent gaps, from a
random offset, zero-padded to ``num_samples``.  The label is the transcript, e.g.
``"357"``, as a sequence of character tokens (:mod:`fusionjax.sequences`).  Test
utterances are made of test recordings only (FSDD's split: index 0-4), train ones of
train recordings only, so no test recording is ever heard in training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionjax.data.audio import load_audio, read_wav, resample
from fusionjax.data.locate import data_dir
from fusionjax.errors import ConfigError, DataError
from fusionjax.interfaces import LABEL, Batch, FieldSpec
from fusionjax.sequences import PAD, TargetVocabulary
from fusionjax_plugins.datasets import digit_sources as sources
from fusionjax_plugins.datasets.digits_base import DrawnDigits

DIGITS = TargetVocabulary.of("0123456789", "")
DIGIT_IDS = np.array([DIGITS.tokens.index(str(d)) for d in range(10)], np.int32)
TRIM_DB = 40.0  # a recording's leading/trailing 10 ms frames this far below its loudest are cut
REDRAWS = 20  # tries at other recordings of the same digits for an utterance that does not fit


@dataclass(frozen=True)
class Clips:
    """The recordings of an FSDD split at their own (trimmed) lengths, end to end:
    recording ``i`` is ``audio[offset[i]:offset[i] + length[i]]``."""

    audio: np.ndarray  # float32 [total samples]
    offset: np.ndarray  # int64 [N]
    length: np.ndarray  # int64 [N]
    labels: np.ndarray  # int32 [N], the digit
    speakers: np.ndarray  # int32 [N], index into speaker_names
    speaker_names: tuple[str, ...]
    names: tuple[str, ...]  # file names, e.g. "3_theo_12.wav"

    def clip(self, i: int) -> np.ndarray:
        return self.audio[self.offset[i]:self.offset[i] + self.length[i]]

    @functools.cached_property
    def groups(self) -> list[list[np.ndarray]]:
        """``groups[speaker][digit]``: the recordings of that speaker saying that digit."""
        return [[np.flatnonzero((self.speakers == s) & (self.labels == d)) for d in range(10)]
                for s in range(len(self.speaker_names))]


def trim(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """``x`` without its leading and trailing 10 ms frames whose RMS is more than
    :data:`TRIM_DB` dB below the loudest frame's (a silent recording is kept whole)."""
    frame = max(1, sample_rate // 100)
    padded = np.pad(x, (0, -len(x) % frame))
    rms = np.sqrt(np.mean(padded.reshape(-1, frame).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))
    if not len(loud):
        return x
    return x[loud[0] * frame:min(len(x), (loud[-1] + 1) * frame)]


@functools.lru_cache(maxsize=4)
def fsdd_clips(folder: Path, split: str, sample_rate: int) -> Clips:
    """Every recording of an FSDD split, mono, at ``sample_rate``, trimmed; read once."""
    files = sources.fsdd_files(folder, split)
    clips = []
    for path, _, _ in files:
        x, rate = read_wav(path)
        clips.append(trim(resample(x.mean(axis=1), rate, sample_rate).astype(np.float32), sample_rate))
    length = np.array([len(c) for c in clips], np.int64)
    speaker_names = tuple(sorted({s for _, _, s in files}))
    return Clips(audio=np.concatenate(clips), offset=np.cumsum(length) - length, length=length,
                 labels=np.array([d for _, d, _ in files], np.int32),
                 speakers=np.array([speaker_names.index(s) for _, _, s in files], np.int32),
                 speaker_names=speaker_names, names=tuple(p.name for p, _, _ in files))


class DigitSpeech(DrawnDigits):
    """Audio -> text: each example (``audio``, float32 ``[num_samples]``) is an utterance of
    ``min_digits..max_digits`` random digits by one speaker of the Free Spoken Digit Dataset:
    recordings of that speaker, each trimmed to its sound (leading and trailing 10 ms frames
    40 dB below its loudest are cut), joined by silent gaps of ``min_gap..max_gap`` seconds,
    starting at a random offset and zero-padded to ``num_samples``.  The label is the
    transcript, the digit string (e.g. ``"357"``), as int32 ``[max_digits]`` token ids of the
    vocabulary ``0``-``9`` (character tokens, ids 2-11; id 0 pads, id 1 is reserved for the
    end of a sequence); the label spec carries the vocabulary, for a sequence head (CTC or
    a decoder).  No classes (``num_classes`` is none).

    Splits: ``train`` utterances are made of FSDD's train recordings (index 5-49) only and
    re-drawn every epoch, ``test`` ones of its test recordings (index 0-4) only, one fixed
    draw: no test recording is heard in training.  An utterance whose recordings do not fit
    in ``num_samples`` takes other recordings of the same digits, and its gaps shrink to
    fit; a digit is never cut.  New inputs (``predict``): a WAV file, mono, resampled and
    zero-padded (or cut) to ``num_samples``, from its start.  Provides ``sample_rate``
    (audio).

    Parameters:
        root: Folder holding ``fsdd/``; none: ``$FUSIONJAX_DATA``, else ``examples/data``.
        min_digits: Fewest digits per utterance. ``>= 1``.
        max_digits: Most digits per utterance, and the label's length. ``>= min_digits``.
        min_gap: Shortest silence between two digits (seconds). ``>= 0``.
        max_gap: Longest silence between two digits (seconds). ``>= min_gap``.
        sample_rate: Recordings are resampled to this rate (Hz; FSDD is recorded at 8 kHz).
            ``>= 1``.
        num_samples: Samples per utterance (4 s at 8 kHz, room for 5 digits: FSDD's
            recordings last 0.42 s at the median, 2.3 s at most). ``>= 1``; it must hold
            ``max_digits`` of any speaker's shortest recording of a digit (an error otherwise).
        train_size: Training utterances per epoch. ``>= 1``.
        test_size: Utterances in ``test``. ``>= 1``.
        seed: Seed of the utterances. The test draw depends on it alone; the train draw of
            each epoch also on ``train.seed``.
    """

    test_settings = {"train_size": 24, "test_size": 12}
    label_names = None
    num_classes = None

    def __init__(
        self,
        *,
        root: str | None = None,
        min_digits: int = 3,
        max_digits: int = 5,
        min_gap: float = 0.05,
        max_gap: float = 0.25,
        sample_rate: int = 8000,
        num_samples: int = 32000,
        train_size: int = 6000,
        test_size: int = 1000,
        seed: int = 0,
    ):
        for key, value in (("min_digits", min_digits), ("sample_rate", sample_rate),
                           ("num_samples", num_samples), ("train_size", train_size),
                           ("test_size", test_size)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        if max_digits < min_digits:
            raise ConfigError(f"must be >= min_digits ({min_digits}), got {max_digits}",
                              key="max_digits")
        if not 0 <= min_gap <= max_gap:
            raise ConfigError(f"need 0 <= min_gap <= max_gap, got {min_gap} and {max_gap}",
                              key="max_gap" if min_gap >= 0 else "min_gap")
        self.fsdd_dir = data_dir(root, "fsdd")
        self.root = str(self.fsdd_dir.parent)
        self.min_digits, self.max_digits = min_digits, max_digits
        self.min_gap, self.max_gap = min_gap, max_gap
        self.sample_rate, self.num_samples = sample_rate, num_samples
        self.requested = {"train": train_size, "test": test_size}
        self.seed = seed
        self.spec = {"audio": FieldSpec((num_samples,), "float32", {"sample_rate": sample_rate}),
                     LABEL: DIGITS.spec(max_digits)}

    def clips(self, split: str) -> Clips:
        return fsdd_clips(self.fsdd_dir, split, self.sample_rate)

    def size(self, split: str) -> int:
        self.check_split(split)
        return self.requested[split]

    def resolved_settings(self) -> dict:
        return {"root": self.root}

    # -- examples ------------------------------------------------------------------------------
    def _check_fits(self, clips: Clips, split: str) -> None:
        """A :class:`ConfigError` unless every utterance fits from the shortest recordings of
        its digits: ``max_digits`` times the speaker's longest shortest recording of a digit."""
        for s, by_digit in enumerate(clips.groups):
            longest = max(int(clips.length[m].min()) for m in by_digit if len(m))
            if self.max_digits * longest > self.num_samples:
                raise ConfigError(
                    f"{self.num_samples} samples cannot hold {self.max_digits} digits of every "
                    f"speaker: {clips.speaker_names[s]!r} needs {self.max_digits * longest} "
                    f"({self.max_digits} x {longest}: the shortest of their {split} recordings "
                    f"of one digit has {longest} samples)",
                    key="num_samples", hint="raise num_samples or lower max_digits")

    def _pick(self, clips: Clips, speaker: np.ndarray, digit: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
        """For each ``(speaker[i], digit[i, j])``, a random recording of it."""
        u = rng.random(digit.shape)
        out = np.empty(digit.shape, np.int64)
        for s, by_digit in enumerate(clips.groups):
            for d, members in enumerate(by_digit):
                where = (speaker[:, None] == s) & (digit == d)
                if len(members):
                    out[where] = members[(u[where] * len(members)).astype(np.int64)]
        return out

    def draw(self, split: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``{"speaker": [n], "recording": [n, max_digits] (-1 after the last digit),
        "start": [n, max_digits] (the sample each recording starts at), "label"}``."""
        clips, k = self.clips(split), self.max_digits
        self._check_fits(clips, split)
        speaker = rng.integers(0, len(clips.speaker_names), n)
        count = rng.integers(self.min_digits, k + 1, n)
        used = np.arange(k) < count[:, None]
        u = rng.random((n, k))
        digit = np.zeros((n, k), np.int64)
        for s, by_digit in enumerate(clips.groups):  # digits the speaker says in this split
            said = np.array([d for d in range(10) if len(by_digit[d])], np.int64)
            rows = speaker == s
            digit[rows] = said[(u[rows] * len(said)).astype(np.int64)]
        recording = self._pick(clips, speaker, digit, rng)
        length = np.where(used, clips.length[recording], 0)
        for _ in range(REDRAWS):  # utterances too long even without gaps: other recordings
            over = np.flatnonzero(length.sum(axis=1) > self.num_samples)
            if not len(over):
                break
            recording[over] = self._pick(clips, speaker[over], digit[over], rng)
            length[over] = np.where(used[over], clips.length[recording[over]], 0)
        for i in np.flatnonzero(length.sum(axis=1) > self.num_samples):
            for j in range(count[i]):  # still too long: each digit's shortest recording
                members = clips.groups[speaker[i]][digit[i, j]]
                recording[i, j] = members[np.argmin(clips.length[members])]
                length[i, j] = clips.length[recording[i, j]]
        # the gap before digit j (j >= 1), shrunk (in proportion) where the utterance would not fit
        gap = np.rint(rng.uniform(self.min_gap, self.max_gap, (n, k - 1)) * self.sample_rate)
        gap = np.where(used[:, 1:], gap, 0).astype(np.int64)
        room = self.num_samples - length.sum(axis=1)
        total_gap = gap.sum(axis=1)
        squeeze = total_gap > room
        gap[squeeze] = gap[squeeze] * room[squeeze, None] // total_gap[squeeze, None]
        slack = room - gap.sum(axis=1)
        first = (rng.random(n) * (slack + 1)).astype(np.int64)
        start = np.cumsum(np.concatenate([first[:, None], length[:, :-1] + gap], axis=1), axis=1)
        label = np.where(used, DIGIT_IDS[digit], PAD).astype(np.int32)
        return {"speaker": speaker, "recording": np.where(used, recording, -1),
                "start": np.where(used, start, 0), LABEL: label}

    def materialise(self, split: str, draws: dict[str, np.ndarray], rows: np.ndarray,
                    rngs: list[np.random.Generator]) -> Batch:
        clips = self.clips(split)
        audio = np.zeros((len(rows), self.num_samples), np.float32)
        for i, r in enumerate(rows):
            for rec, at in zip(draws["recording"][r], draws["start"][r]):
                if rec < 0:
                    break
                audio[i, at:at + clips.length[rec]] = clips.clip(rec)
        return {"audio": audio, LABEL: draws[LABEL][rows]}

    # -- new inputs ----------------------------------------------------------------------------
    def encode(self, modality: str, value: str) -> np.ndarray:
        if modality != "audio":
            raise DataError(f"{type(self).__name__} has no modality {modality!r}; it has 'audio'")
        return load_audio(value, sample_rate=self.sample_rate, num_samples=self.num_samples,
                          align="start")
