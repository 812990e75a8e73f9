"""Prediction: raw inputs (a file path per modality, or the text itself) -> one batch ->
the head's typed answer (:mod:`fusionjax.answers`).

The data set reads each input exactly as it read its training examples
(:meth:`Dataset.encode`); a modality left out is absent (its mask is False and the
model zeroes it).  The forward pass is compiled once per :class:`Predictor`, so asking
it many questions costs one compilation.  Nothing here depends on which head the run
has: every head declares its answer (:meth:`Head.answer`).

::

    predictor = fj.load_run("runs/digit_qa").predictor()
    predictor({"image": "seven.png", "audio": "three.wav", "text": "what is the sum"}).to_json()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import jax
import numpy as np
from flax import nnx

from fusionjax.errors import ConfigError, did_you_mean
from fusionjax.interfaces import Batch, mask_key

if TYPE_CHECKING:
    from fusionjax.answers import Answer
    from fusionjax.rundir import Run


class Predictor:
    """A loaded run's compiled forward pass, answering one example at a time."""

    def __init__(self, run: Run):
        self.run = run
        self.modalities = run.model.modalities
        graphdef, state = nnx.split(run.model)
        self._state = state
        self._forward = jax.jit(lambda s, b: nnx.merge(graphdef, s)(b))
        # a head without a single-example answer says so now, before any input is read
        empty = {m: np.zeros((1, *f.shape), f.dtype) for m, f in run.assembly.dataset.spec.items()
                 if m in self.modalities}
        shapes = jax.eval_shape(self._forward, state, empty)
        run.model.head.answer(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes),
                              label_names=run.assembly.dataset.label_names)

    def batch(self, inputs: Mapping[str, str]) -> Batch:
        """A batch of one example from raw inputs (``{modality: path or text}``)."""
        dataset = self.run.assembly.dataset
        for name in inputs:
            if name not in self.modalities:
                raise ConfigError(f"input {name!r}: the model has no modality {name!r}"
                                  f"{did_you_mean(name, self.modalities)}",
                                  hint=f"its modalities are: {', '.join(self.modalities)}")
        if not inputs:
            raise ConfigError("no input given", hint=f"give one or more of: {', '.join(self.modalities)}")
        batch = {}
        for m in self.modalities:
            field = dataset.spec[m]
            present = m in inputs
            try:
                x = dataset.encode(m, inputs[m]) if present else np.zeros(field.shape, field.dtype)
            except NotImplementedError as e:
                raise ConfigError(f"predict: {e}") from None
            batch[m] = np.asarray(x)[None]
            batch[mask_key(m)] = np.array([present])
        return batch

    def __call__(self, inputs: Mapping[str, str], *, top: int = 3) -> Answer:
        """The answer for one example; ``top``: how many ranked classes an answer keeps."""
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ConfigError(f"must be an int >= 1, got {top!r}", key="top")
        batch = self.batch(inputs)
        outputs = jax.device_get(self._forward(self._state, batch))
        head = self.run.model.head
        answer = head.answer(outputs, label_names=self.run.assembly.dataset.label_names, top=top)[0]
        return answer.with_absent([m for m in self.modalities if m not in inputs])
