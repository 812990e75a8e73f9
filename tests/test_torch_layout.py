"""The bundled encoders start from PyTorch weights: a ``torch.nn`` module built as each
encoder's docstring describes it ("PyTorch layout"), randomly initialised, its
``state_dict()`` saved as safetensors and loaded through ``init_from = {safetensors =
FILE, layout = "pytorch"}`` computes what the fusionjax encoder computes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import TINY
from flax import nnx

from fusionjax.assembly import assemble
from fusionjax.errors import ConfigError

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
nn = torch.nn
F = torch.nn.functional

TOL = {"atol": 1e-5, "rtol": 1e-5}
# torch pads an even kernel's 'same' convolution by copying the input: true, and beside the point
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def _config(modality: str, settings: dict, init_from) -> dict:
    cfg = copy.deepcopy(TINY)
    # the one encoder alone: fewer parameters to initialise at random (a compile each)
    cfg["model"]["encoders"] = {modality: cfg["model"]["encoders"][modality]}
    section = cfg["model"]["encoders"][modality]
    section.update(settings)
    section["init_from"] = init_from
    return cfg


def _save(module: nn.Module, path) -> str:
    safetensors_torch.save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def _encoder(modality: str, settings: dict, file: str):
    assembly = assemble(_config(modality, settings, {"safetensors": file, "layout": "pytorch"}))
    return assembly, assembly.build().encoders[modality]


def _apply(encoder, x) -> np.ndarray:
    """``encoder(x)``, compiled as one program (quicker than op by op)."""
    return np.asarray(nnx.jit(lambda e, x: e(x))(encoder, x))


# -- the PyTorch counterparts -------------------------------------------------------------

class TorchConvNet(nn.Module):
    """cnn_image / spectrogram_audio: ``convs`` (ModuleList of 'same' Conv2d + ReLU +
    pooling), a readout of the NCHW map and ``dense`` (Linear + ReLU)."""

    def __init__(self, in_channels, channels, kernels, *, pool, pool_size, pool_layers,
                 readout, map_hw, dense):
        super().__init__()
        convs, c = [], in_channels
        for out, k in zip(channels, kernels):
            convs.append(nn.Conv2d(c, out, k, padding="same"))
            c = out
        self.convs = nn.ModuleList(convs)
        self.pool, self.pool_size, self.pool_layers, self.readout = pool, pool_size, pool_layers, readout
        width = {"flatten": map_hw[0] * map_hw[1], "time_avg": map_hw[1]}.get(readout, 1) * c
        self.dense = nn.Linear(width, dense) if dense else None

    def forward(self, x):  # NCHW
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i < self.pool_layers and self.pool == "max":
                x = F.max_pool2d(x, self.pool_size)
            elif i < self.pool_layers and self.pool == "avg":
                x = F.avg_pool2d(x, self.pool_size)
        if self.readout == "flatten":
            x = torch.flatten(x, 1)
        elif self.readout == "time_avg":
            x = torch.flatten(x.mean(2), 1)
        elif self.readout == "avg":
            x = x.mean((2, 3))
        else:
            x = x.amax((2, 3))
        return F.relu(self.dense(x)) if self.dense is not None else x


class TorchLSTMText(nn.Module):
    """lstm_text: ``embed`` (Embedding) -> ``lstm`` (LSTM over the packed rows) -> the last
    layer's h_n (forward, then backward)."""

    def __init__(self, vocab_size, embed_dim, hidden, layers, bidirectional):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, bidirectional=bidirectional,
                            batch_first=True)
        self.bidirectional = bidirectional

    def forward(self, ids):
        lengths = (ids != 0).sum(1)
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return torch.cat([h[-2], h[-1]], -1) if self.bidirectional else h[-1]


def _settings_of(settings: dict, default_channels=(8, 16)):
    channels = settings.get("channels", list(default_channels))
    k = settings.get("kernel_size", 3)
    kernels = [k] * len(channels) if isinstance(k, int) else list(k)
    pool = settings.get("pool", "max")
    pool_layers = settings.get("pool_layers", len(channels))
    return channels, kernels, pool, settings.get("pool_size", 2), pool_layers if pool != "none" else 0


def _pooled(h, w, pool_size, pool_layers):
    for _ in range(pool_layers):
        h, w = h // pool_size, w // pool_size
    return h, w


@pytest.fixture(autouse=True)
def _float32_torch():
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(before)


# -- the encoders -------------------------------------------------------------------------

CNN_CASES = {
    # flatten readout + dense; an even kernel ('same' pads one more at the end) and an odd one
    "flatten": {"channels": [4, 6], "kernel_size": [3, 4], "readout": "flatten", "dense": 10},
    # a global pool: the dense layer's rows need no reordering
    "avg": {"channels": [4, 6, 5], "kernel_size": 5, "pool": "avg", "pool_layers": 1,
            "readout": "avg", "dense": 7},
}


@pytest.mark.parametrize("settings", CNN_CASES.values(), ids=CNN_CASES.keys())
def test_cnn_image_from_a_torch_state_dict(settings, tmp_path):
    channels, kernels, pool, pool_size, pool_layers = _settings_of(settings)
    h, w, c = TINY_IMAGE = (16, 16, 1)
    torch_net = TorchConvNet(c, channels, kernels, pool=pool, pool_size=pool_size,
                             pool_layers=pool_layers, readout=settings["readout"],
                             map_hw=_pooled(h, w, pool_size, pool_layers), dense=settings["dense"])
    assembly, encoder = _encoder("image", settings, _save(torch_net, tmp_path / "cnn.safetensors"))
    assert assembly.dataset.spec["image"].shape == TINY_IMAGE
    x = np.random.default_rng(0).normal(size=(3, h, w, c)).astype(np.float32)
    want = torch_net(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    got = _apply(encoder, x)
    assert got.shape == want.shape == (3, encoder.out_features)
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, True)])
def test_lstm_text_from_a_torch_state_dict(layers, bidirectional, tmp_path):
    settings = {"embed_dim": 6, "hidden": 5, "layers": layers, "bidirectional": bidirectional}
    vocab, seq_len = TINY["data"]["vocab_size"], TINY["data"]["seq_len"]
    torch_net = TorchLSTMText(vocab, 6, 5, layers, bidirectional)
    with torch.no_grad():  # biases of different sizes, so that a swapped pair of gates shows
        for name, p in torch_net.lstm.named_parameters():
            if name.startswith("bias"):
                p.copy_(torch.linspace(-1, 1, p.numel()))
    assembly, encoder = _encoder("text", settings, _save(torch_net, tmp_path / "lstm.safetensors"))
    assert assembly.dataset.spec["text"].shape == (seq_len,)
    rng = np.random.default_rng(1)
    ids = rng.integers(1, vocab, size=(5, seq_len)).astype(np.int32)
    for row, length in enumerate([seq_len, 1, 4, 7, seq_len - 1]):  # padding (0) at the end
        ids[row, length:] = 0
    want = torch_net(torch.from_numpy(ids).long()).detach().numpy()
    got = _apply(encoder, ids)
    assert got.shape == want.shape == (5, 5 * (2 if bidirectional else 1))
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("readout, dense", [("flatten", 9), ("time_avg", 6), ("max", 0)])
def test_spectrogram_audio_from_a_torch_state_dict(readout, dense, tmp_path):
    # 2000 samples / hop 64 -> 32 frames x 24 mel bands: a map that is not square, so that
    # a flatten read in the wrong order shows
    settings = {"n_fft": 128, "hop_length": 64, "n_mels": 24, "channels": [4, 6],
                "kernel_size": [3, 2], "readout": readout, "dense": dense}
    channels, kernels, pool, pool_size, pool_layers = _settings_of(settings)
    torch_net = TorchConvNet(1, channels, kernels, pool=pool, pool_size=pool_size,
                             pool_layers=pool_layers, readout=readout,
                             map_hw=_pooled(32, 24, pool_size, pool_layers), dense=dense)
    assembly, encoder = _encoder("audio", settings, _save(torch_net, tmp_path / "audio.safetensors"))
    samples = assembly.dataset.spec["audio"].shape[0]
    audio = np.random.default_rng(2).normal(size=(3, samples)).astype(np.float32)
    spec = np.array(encoder.spectrogram(audio))  # (a copy: writable) the front end has no parameters
    assert spec.shape == (3, 32, 24)
    want = torch_net(torch.from_numpy(spec)[:, None]).detach().numpy()
    got = _apply(encoder, audio)
    assert got.shape == want.shape == (3, encoder.out_features)
    np.testing.assert_allclose(got, want, **TOL)


# -- a state dict that does not fit ------------------------------------------------------

def test_a_state_dict_that_does_not_fit_is_a_config_error_naming_the_tensor(tmp_path):
    settings = CNN_CASES["flatten"]
    channels, kernels, pool, pool_size, pool_layers = _settings_of(settings)
    torch_net = TorchConvNet(1, channels, kernels, pool=pool, pool_size=pool_size,
                             pool_layers=pool_layers, readout="flatten", map_hw=(4, 4), dense=10)
    state = {k: v.contiguous() for k, v in torch_net.state_dict().items()}
    key = "model.encoders.image.init_from"

    def error(tensors: dict, **more) -> ConfigError:
        file = tmp_path / f"case{len(list(tmp_path.iterdir()))}.safetensors"
        safetensors_torch.save_file(tensors, str(file))
        with pytest.raises(ConfigError) as e:
            assemble(_config("image", settings, {"safetensors": str(file), "layout": "pytorch", **more}))
        assert e.value.key == key, (e.value.key, str(e.value))
        return e.value

    missing = error({k: v for k, v in state.items() if k != "convs.1.bias"})
    assert "'convs.1.bias'" in str(missing)

    extra = {**state, "extra.weight": torch.zeros(3)}
    assert "'extra.weight'" in str(error(extra))
    file = tmp_path / "extra.safetensors"
    safetensors_torch.save_file(extra, str(file))
    loads = assemble(_config("image", settings, {"safetensors": str(file), "layout": "pytorch",
                                                 "ignore": ["extra*"]}))
    assert np.asarray(loads.build().encoders["image"].dense.bias[...]) == pytest.approx(
        state["dense.bias"].numpy())

    wrong = error({**state, "dense.bias": torch.zeros(11)})
    assert "(10,)" in str(wrong) and "(11,)" in str(wrong), str(wrong)
    # a flattened map of another size: the conversion itself fails, naming the torch shape
    bad = error({**state, "dense.weight": torch.zeros(10, 6 * 5 * 5)})
    assert "dense.weight" in str(bad) and "(10, 150)" in str(bad), str(bad)
