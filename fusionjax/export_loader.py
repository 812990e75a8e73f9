"""Run a model exported by ``fusionjax export``, with nothing but jax and numpy.

(``jax.export`` reads the artifact with the ``flatbuffers`` package, which it needs
installed beside jax.)  Standalone: this file imports no fusionjax and no flax.

    from fusionjax_export_loader import load, read_vocab, tokenize
    model, manifest = load("exported")
    vocab = read_vocab("exported", "text")
    text = tokenize("what is the sum of the written digit and the spoken one", vocab,
                    manifest["inputs"]["text"]["preprocessing"]["max_len"])
    outputs = model({"image": images, "audio": audio, "text": text[None],  # [B, ...] each
                     "mask/audio": [False]})   # a mask left out: the modality is present

    python fusionjax_export_loader.py exported inputs.npz   # prints the outputs as JSON

Images and audio come preprocessed: the manifest's ``inputs.<m>.preprocessing`` says how.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jax
import numpy as np


def load(out_dir):
    """``(model, manifest)``: ``model(batch)`` takes ``{modality: [B, ...] array,
    "mask/<modality>": bool [B]}`` (a mask left out means present) and returns the
    head's outputs as numpy arrays, for any batch size ``B``."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    exported = jax.export.deserialize(bytearray((out_dir / manifest["model_file"]).read_bytes()))
    call = jax.jit(exported.call)

    def model(batch):
        batch = dict(batch)
        size = len(next(iter(batch.values())))
        arrays = {}
        for m, spec in manifest["inputs"].items():
            if m not in batch:
                raise KeyError(f"no input {m!r}; give every modality (zeros and a False mask "
                               f"for an absent one): {', '.join(manifest['inputs'])}")
            arrays[m] = np.asarray(batch.pop(m), spec["dtype"])
            mask = manifest["masks"][m]
            arrays[mask] = np.asarray(batch.pop(mask, np.ones(size, bool)), bool).reshape(size)
        if batch:
            raise KeyError(f"unknown inputs {sorted(batch)}")
        return jax.tree.map(np.asarray, call(arrays))

    return model, manifest


def read_vocab(out_dir, modality):
    """The token list of a text modality (id = position; 0 is padding, 1 unknown)."""
    manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
    name = manifest["inputs"][modality]["preprocessing"]["vocab"]
    return ["<pad>", "<unk>", *json.loads((Path(out_dir) / name).read_text())["tokens"]]


WORD = re.compile(r"(?:[^\W_]|')+")  # fusionjax's tokenizer: letters, digits, apostrophes


def tokenize(text, vocab, max_len):
    """int32 ``[max_len]``: the ids of the first ``max_len`` lower-cased words, then 0s."""
    ids = {w: i for i, w in enumerate(vocab)}
    found = [ids.get(w, 1) for w in WORD.findall(text.lower())][:max_len]
    return np.array(found + [0] * (max_len - len(found)), np.int32)


def main(out_dir, npz):
    """Outputs for the batch in an ``.npz`` (a text modality may hold strings: tokenised)."""
    model, manifest = load(out_dir)
    with np.load(npz) as data:
        batch = {k: data[k] for k in data.files}
    for m, spec in manifest["inputs"].items():
        if m in batch and batch[m].dtype.kind == "U":
            vocab = read_vocab(out_dir, m)
            batch[m] = np.stack([tokenize(str(t), vocab, spec["shape"][0]) for t in batch[m]])
    print(json.dumps(jax.tree.map(lambda x: x.tolist(), model(batch))))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python fusionjax_export_loader.py EXPORT_DIR INPUTS.npz")
    main(sys.argv[1], sys.argv[2])
