"""The input shapes of a reference workload, as a fusionjax data set, and the
registry that benchmark configs are assembled with.

Workload ``large`` (``../shared/bench/REFERENCE.md``) feeds RGB images
``[64, 64, 3]``; the bundled ``synthetic`` data set only makes greyscale ones,
which would give the first image conv 1,152 parameters fewer than the peers'
network.  ``reference_shapes`` declares exactly the shapes the peers' harness
feeds (image ``[H, W, C]``, token ids ``[T]`` with ``vocab_size``, a waveform
``[num_samples]`` at ``sample_rate``, integer labels), and yields seeded random
arrays of those shapes like ``harness.make_inputs`` (token 0 = padding, lengths
uniform in 1..T, labels uniform in 0..num_classes-1).  The model of a benchmark
config stays all bundled components; only the shapes come from here.

    from workload_data import assemble_workload
    assembly = assemble_workload("large", ["train.batch_size=8"])

NumPy only at import (the benchmark sets JAX's platform before importing JAX).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusionjax.data.sources import ArraySource
from fusionjax.errors import ConfigError
from fusionjax.interfaces import LABEL, Batch, Dataset, FieldSpec

HERE = Path(__file__).resolve().parent
PLUGIN = "benchmarks"  # the plugin name of the components registered here
# the peers' parameter counts (../shared/bench/peers/README.md)
PEER_PARAMS = {"small": 1_320_202, "large": 20_612_234}


class ReferenceShapes(Dataset):
    """Random inputs of a reference workload's shapes (image, text, audio, label)."""

    splits = ("train", "test")
    test_settings = {"image_size": 8, "seq_len": 6, "vocab_size": 20, "num_samples": 400,
                     "train_size": 16, "test_size": 8}

    def __init__(self, *, image_size: int = 28, image_channels: int = 1, seq_len: int = 32,
                 vocab_size: int = 5000, sample_rate: int = 8000, num_samples: int = 8000,
                 num_classes: int = 10, train_size: int = 256, test_size: int = 64, seed: int = 0):
        for key, value in (("image_size", image_size), ("image_channels", image_channels),
                           ("seq_len", seq_len), ("sample_rate", sample_rate),
                           ("num_samples", num_samples), ("train_size", train_size),
                           ("test_size", test_size)):
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        if vocab_size < 2 or num_classes < 2:
            raise ConfigError("vocab_size and num_classes must be >= 2", key="vocab_size")
        self.image_size, self.image_channels, self.seq_len = image_size, image_channels, seq_len
        self.vocab_size, self.num_samples, self.seed = vocab_size, num_samples, seed
        self.num_classes = num_classes
        self.sizes = {"train": train_size, "test": test_size}
        self.spec = {
            "image": FieldSpec((image_size, image_size, image_channels), "float32"),
            "text": FieldSpec((seq_len,), "int32", {"vocab_size": vocab_size}),
            "audio": FieldSpec((num_samples,), "float32", {"sample_rate": sample_rate}),
            LABEL: FieldSpec((), "int32"),
        }
        self._cache: dict[str, Batch] = {}

    def size(self, split: str) -> int:
        self.check_split(split)
        return self.sizes[split]

    def arrays(self, split: str) -> Batch:
        if split not in self._cache:
            n = self.size(split)
            rng = np.random.default_rng([self.seed, list(self.sizes).index(split)])
            s, c, t = self.image_size, self.image_channels, self.seq_len
            image = rng.standard_normal((n, s, s, c)).astype(np.float32)
            lengths = rng.integers(1, t + 1, size=n)
            tokens = rng.integers(1, self.vocab_size, size=(n, t)).astype(np.int32)
            tokens[np.arange(t)[None, :] >= lengths[:, None]] = 0
            audio = (0.1 * rng.standard_normal((n, self.num_samples))).astype(np.float32)
            labels = rng.integers(0, self.num_classes, size=n).astype(np.int32)
            self._cache[split] = {"image": image, "text": tokens, "audio": audio, LABEL: labels}
        return self._cache[split]

    def source(self, split: str, *, seed: int) -> ArraySource:
        return ArraySource(self.arrays(split))


def registry():
    """The installed plugins' components plus ``benchmarks/reference_shapes``."""
    from fusionjax.plugins import default_registry
    from fusionjax.registry import ComponentSpec, PluginOrigin, Registry

    reg = Registry()
    for spec in default_registry():
        reg.add(spec)
    reg.add(ComponentSpec("dataset", "reference_shapes", ReferenceShapes, PluginOrigin(PLUGIN),
                          "random inputs of a reference workload's shapes"))
    return reg


def config_path(workload: str) -> Path:
    return HERE / f"{workload}.toml"


def assemble_workload(workload: str, overrides: Sequence[str] = (), path: str | Path | None = None):
    """The :class:`~fusionjax.assembly.Assembly` of ``benchmarks/<workload>.toml`` (or ``path``)."""
    from fusionjax.assembly import assemble
    from fusionjax.config import load_config

    config = load_config(path or config_path(workload), list(overrides))
    return assemble(config, registry())
