"""Foreign weight layouts: how another framework's tensors become a component's parameters.

A component that can start from weights trained elsewhere declares, for each of its
parameters, which tensors of the other framework's state dict it is made from and how::

    from fusionjax import layouts

    class MyEncoder(Encoder):
        def torch_layout(self) -> dict[str, layouts.FromTorch]:
            return {
                **layouts.torch_conv("conv/kernel", "conv/bias", "features.0"),   # nn.Conv2d
                **layouts.torch_linear("out/kernel", "out/bias", "classifier"),   # nn.Linear
            }

The keys are the component's parameter names as :func:`fusionjax.rundir.path_name`
spells them (``"convs/convs/0/kernel"``; ``fusionjax components show`` lists them); the
values name the PyTorch state-dict keys (``"features.0.weight"``) and the conversion.
``init_from = {safetensors = "w.safetensors", layout = "pytorch"}`` in the component's
section then loads such a file (:mod:`fusionjax.transfer`).  The method is called on the
*abstract* component (``nnx.eval_shape``): it may read the component's settings and the
shapes of its parameters, not their values.

The conversions, PyTorch -> Flax:

* convolution weight ``[O, I, *k]`` -> ``[*k, I, O]`` (:func:`conv_kernel`, 1-, 2- and 3-D);
* linear weight ``[out, in]`` -> ``[in, out]`` (:func:`linear_kernel`);
* LSTM: ``weight_ih [4H, D]`` / ``weight_hh [4H, H]`` transposed, the gates reordered to
  the component's order (PyTorch's is input, forget, cell, output: ``"ifgo"``), and its
  two bias vectors ``bias_ih + bias_hh`` summed into one (:func:`torch_lstm`);
* a flatten followed by a linear layer: PyTorch flattens a ``[C, H, W]`` map channel
  first, Flax a ``[H, W, C]`` map channel last, so the linear weight's input rows are
  permuted (:func:`flattened_linear_kernel`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

TORCH_LSTM_GATES = "ifgo"  # input, forget, cell ("g"), output: torch.nn.LSTM / LSTMCell


@dataclass(frozen=True)
class FromTorch:
    """One parameter made from the state-dict tensors ``sources`` by ``convert``
    (called with them in that order); ``what`` says how, for error messages."""

    sources: tuple[str, ...]
    convert: Callable[..., np.ndarray]
    what: str

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.convert(*arrays))


def same(source: str) -> FromTorch:
    """The tensor as it is (a bias, an embedding table, a norm's scale)."""
    return FromTorch((source,), lambda a: a, "as is")


def conv_kernel(source: str) -> FromTorch:
    """A convolution weight ``[O, I, *k]`` -> ``[*k, I, O]``."""
    return FromTorch((source,), lambda a: np.moveaxis(a, (0, 1), (-1, -2)), "conv [O, I, *k] -> [*k, I, O]")


def linear_kernel(source: str) -> FromTorch:
    """A linear weight ``[out, in]`` -> ``[in, out]``."""
    return FromTorch((source,), lambda a: a.T, "linear [out, in] -> [in, out]")


def flattened_linear_kernel(source: str, map_shape: Sequence[int]) -> FromTorch:
    """The weight of a linear layer that reads a flattened feature map whose Flax shape
    is ``map_shape = (*spatial, C)``: PyTorch flattened it as ``(C, *spatial)``."""
    *spatial, channels = map_shape

    def convert(a: np.ndarray) -> np.ndarray:
        out = a.shape[0]
        w = a.reshape(out, channels, *spatial)            # the torch order of the input rows
        w = np.moveaxis(w, 1, -1)                          # -> [out, *spatial, C]
        return w.reshape(out, -1).T                        # -> [(*spatial, C), out]

    dims = ", ".join(map(str, spatial))
    return FromTorch((source,), convert, f"linear after a flatten: rows [C={channels}, {dims}] -> "
                                         f"[{dims}, C], transposed")


def reorder_gates(a: np.ndarray, have: str, want: str, axis: int = 0) -> np.ndarray:
    """``a``'s ``len(have)`` gate blocks along ``axis``, from the order ``have`` to ``want``
    (e.g. ``"ifgo"`` -> ``"ifog"``)."""
    if sorted(have) != sorted(want):
        raise ValueError(f"gate orders {have!r} and {want!r} name different gates")
    blocks = np.split(a, len(have), axis=axis)
    return np.concatenate([blocks[have.index(g)] for g in want], axis=axis)


def torch_conv(kernel: str, bias: str | None, module: str) -> dict[str, FromTorch]:
    """An ``nn.Conv1d/2d/3d`` at state-dict prefix ``module`` onto ``kernel`` (and ``bias``)."""
    rules = {kernel: conv_kernel(f"{module}.weight")}
    return rules | ({bias: same(f"{module}.bias")} if bias else {})


def torch_linear(kernel: str, bias: str | None, module: str) -> dict[str, FromTorch]:
    """An ``nn.Linear`` at state-dict prefix ``module`` onto ``kernel`` (and ``bias``)."""
    rules = {kernel: linear_kernel(f"{module}.weight")}
    return rules | ({bias: same(f"{module}.bias")} if bias else {})


def torch_lstm(input_kernel: str, recurrent_kernel: str, bias: str, weight_ih: str, weight_hh: str,
               bias_ih: str, bias_hh: str, *, gates: str = TORCH_LSTM_GATES) -> dict[str, FromTorch]:
    """One direction of one LSTM layer whose input projection ``x @ input_kernel + bias``
    and recurrence ``h @ recurrent_kernel`` (kernels ``[in, 4H]``, gates in the order
    ``gates``) come from PyTorch's ``weight_ih``, ``weight_hh``, ``bias_ih`` and ``bias_hh``
    (the state-dict names, e.g. ``"lstm.weight_ih_l0"``)."""
    def kernel(a: np.ndarray) -> np.ndarray:
        return reorder_gates(a, TORCH_LSTM_GATES, gates).T

    order = "" if gates == TORCH_LSTM_GATES else f", gates {TORCH_LSTM_GATES} -> {gates}"
    return {
        input_kernel: FromTorch((weight_ih,), kernel, f"LSTM weight_ih [4H, D] -> [D, 4H]{order}"),
        recurrent_kernel: FromTorch((weight_hh,), kernel, f"LSTM weight_hh [4H, H] -> [H, 4H]{order}"),
        bias: FromTorch((bias_ih, bias_hh), lambda i, h: reorder_gates(i + h, TORCH_LSTM_GATES, gates),
                        f"LSTM bias_ih + bias_hh{order}"),
    }
