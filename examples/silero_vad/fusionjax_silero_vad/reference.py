"""silero-vad's own ONNX copy of the 16 kHz network, without torch: run through onnxruntime
(the reference the encoder is checked against), and its weights read as a state dict.

silero-vad 6.2.3 ships two weight sets of the same 16 kHz network: the ONNX/JIT models
its ``load_silero_vad()`` runs (``silero_vad_16k_op15.onnx``) and the safetensors file
of its tinygrad port (``silero_vad_16k.safetensors``).  They differ (the safetensors
tensors are 9-44% off in norm; upstream snakers4/silero-vad#768), so each is checked
against its own implementation: :func:`onnx_run` here, and the tinygrad port's
recorded outputs in the plugin's tests.  :func:`write_onnx_weights` saves the ONNX
copy's tensors under the safetensors names, for ``init_from``::

    python -m fusionjax_silero_vad.reference silero_vad_onnx.safetensors

The ONNX file is read with a few lines of protobuf decoding (the ``onnx`` package is
not needed): ModelProto.graph (field 7) -> GraphProto.initializer (5) -> TensorProto
``dims`` (1), ``data_type`` (2), ``name`` (8), ``raw_data`` (9).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np

PACKAGE = "silero-vad"
SAFETENSORS = "silero_vad/data/silero_vad_16k.safetensors"
ONNX = "silero_vad/data/silero_vad_16k_op15.onnx"
CHUNK, CONTEXT, SAMPLE_RATE = 512, 64, 16000

# the ONNX copy's initializer -> the name of the same tensor in silero_vad_16k.safetensors
ONNX_NAMES = {
    "model.stft.forward_basis_buffer": "stft_conv.weight",
    **{f"model.encoder.{i}.reparam_conv.{p}": f"conv{i + 1}.{p}"
       for i in range(4) for p in ("weight", "bias")},
    **{f"model.decoder.rnn.{p}": f"lstm_cell.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "model.decoder.decoder.2.weight": "final_conv.weight",
    "model.decoder.decoder.2.bias": "final_conv.bias",
}
_FLOAT = 1  # TensorProto.DataType.FLOAT


def packaged(path: str) -> Path:
    """A file of the installed silero-vad distribution, found without importing it
    (``import silero_vad`` imports torch)."""
    return Path(metadata.distribution(PACKAGE).locate_file(path))


# -- the ONNX file's tensors -------------------------------------------------------------

def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of one protobuf message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"protobuf wire type {wire} (groups) is not expected in an ONNX file")
        yield field, wire, value


def onnx_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """The float32 initializers of the ONNX model's main graph, by name."""
    buf = memoryview(Path(path).read_bytes())
    graph = next(v for f, w, v in _fields(buf) if f == 7 and w == 2)
    out = {}
    for field, wire, tensor in _fields(graph):
        if field != 5 or wire != 2:
            continue
        dims, dtype, name, raw = [], None, None, None
        for f, w, v in _fields(tensor):
            if f == 1 and w == 0:
                dims.append(v)
            elif f == 1 and w == 2:  # packed dims
                j = 0
                while j < len(v):
                    d, j = _varint(v, j)
                    dims.append(d)
            elif f == 2:
                dtype = v
            elif f == 8:
                name = bytes(v).decode()
            elif f == 9:
                raw = bytes(v)
        if dtype == _FLOAT and raw is not None:
            out[name] = np.frombuffer(raw, "<f4").reshape(dims).copy()
    return out


def onnx_state_dict(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The ONNX copy's 15 tensors, named as ``silero_vad_16k.safetensors`` names them."""
    found = onnx_initializers(path or packaged(ONNX))
    missing = sorted(set(ONNX_NAMES) - set(found))
    if missing:
        raise ValueError(f"{path or ONNX} lacks {missing}: not silero's 16 kHz ONNX model")
    return {ONNX_NAMES[k]: found[k] for k in ONNX_NAMES}


def write_onnx_weights(out: str | Path, onnx_file: str | Path | None = None) -> Path:
    """Save :func:`onnx_state_dict` as a safetensors file, for ``init_from = {safetensors =
    "<out>", layout = "pytorch"}``."""
    from safetensors.numpy import save_file

    save_file(onnx_state_dict(onnx_file), str(out))
    return Path(out)


# -- the reference run -------------------------------------------------------------------

def onnx_run(audio: np.ndarray, onnx_file: str | Path | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """silero's ONNX model over ``audio [B, samples]`` (16 kHz) chunk by chunk, as its
    ``OnnxWrapper`` feeds it (the 64 samples before each 512-sample chunk in front, zeros
    before the first; the last chunk zero-padded): ``(probs [B, N], states [N, 2, B, 128])``,
    the speech probability of each chunk and the state after it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its graph has unused initializers it warns about
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_file or packaged(ONNX)), options,
                                           providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    audio = np.asarray(audio, np.float32)
    b, s = audio.shape
    n = -(-s // CHUNK)
    x = np.pad(audio, ((0, 0), (CONTEXT, n * CHUNK - s)))
    state = np.zeros((2, b, 128), np.float32)
    probs, states = [], []
    for k in range(n):
        feed = {"input": x[:, k * CHUNK:k * CHUNK + CONTEXT + CHUNK], "state": state}
        if "sr" in names:
            feed["sr"] = np.array(SAMPLE_RATE, np.int64)
        out, state = session.run(None, feed)
        probs.append(out[:, 0])
        states.append(state)
    return np.stack(probs, axis=1), np.stack(states)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m fusionjax_silero_vad.reference OUT.safetensors")
    print(write_onnx_weights(sys.argv[1]))
