"""Record what silero-vad's own implementation of ``silero_vad_16k.safetensors`` -- its
tinygrad port, ``silero_vad/tinygrad_model.py`` -- computes for a few chunks of a real
recording, into ``tests/data/tinygrad_16k.npz`` (``audio``, ``probs [N]``, ``states [N, 2, 128]``);
``test_silero.py`` checks the encoder against it.

tinygrad compiles with clang; where there is none, its pure-Python device runs it (about
a minute a chunk)::

    pip install tinygrad                   # 0.14.0 recorded the file
    DEV=PYTHON python tests/record_tinygrad.py [CHUNKS]

The model file is loaded on its own, not as ``silero_vad.tinygrad_model``: the package's
``__init__`` imports torch.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from fusionjax.data.locate import data_dir

OUT = Path(__file__).resolve().parent / "data" / "tinygrad_16k.npz"
RECORDING = "3_jackson_0.wav"  # FSDD, 8 kHz; in the repository's examples/data


def main(chunks: int = 6) -> None:
    from tinygrad import Tensor
    from tinygrad.nn.state import load_state_dict, safe_load

    dist = metadata.distribution("silero-vad")
    spec = importlib.util.spec_from_file_location(
        "tinygrad_model", str(dist.locate_file("silero_vad/tinygrad_model.py")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TinySileroVAD()
    load_state_dict(model, safe_load(str(dist.locate_file("silero_vad/data/silero_vad_16k.safetensors"))))

    rate, pcm = wavfile.read(data_dir(None, "fsdd") / "recordings" / RECORDING)
    assert rate == 8000
    audio = resample_poly(pcm.astype(np.float32) / 32768, 2, 1).astype(np.float32)  # 16 kHz
    start = max(0, len(audio) // 2 - chunks * 256)  # the middle: speech
    audio = audio[start:start + chunks * 512]
    x = np.pad(audio, (64, 0))  # zeros as the first chunk's context
    probs, states, state = [], [], None
    for k in range(chunks):
        p, state = model(Tensor(x[None, k * 512:k * 512 + 576]), state)
        probs.append(p.numpy()[0, 0])
        states.append(state.numpy()[:, 0])
        state = state.realize()
        print(f"chunk {k}: speech probability {probs[-1]:.6f}", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    np.savez(OUT, audio=audio, probs=np.array(probs, np.float32), states=np.array(states, np.float32))
    print(OUT)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
