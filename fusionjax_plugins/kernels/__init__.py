"""Plugin ``kernels``: the fast paths of the bundled components, formulations that XLA
compiles to faster code than the plain JAX operation, with the same values and gradients.

Each is switchable off (see :mod:`fusionjax.fast_paths`) and tested against the plain
formulation in ``tests/test_kernels.py``.  This module only declares their names (no
JAX import), through the registration hook, so that ``FUSIONJAX_FAST_PATHS`` can be
checked whether or not a model uses them; the kernels live in the modules beside it.

All were measured on XLA:CPU only, so they are on by default there and off on other
backends until ``benchmarks/gpu.sh`` (its ``fusionjax-fast`` row) shows they help.
"""

from fusionjax.hookspecs import hookimpl

MAX_POOL, AVG_POOL, CONV, LSTM = "max_pool", "avg_pool", "conv", "lstm"
_MEASURED_ON = ("cpu",)


@hookimpl
def fusionjax_register_components(registrar):
    add = registrar.fast_path
    add(MAX_POOL, "max pooling as reshape + max, gradient to the first maximum of each window "
        "from an int8 window index (instead of XLA's select-and-scatter)", platforms=_MEASURED_ON)
    add(AVG_POOL, "average pooling as reshape + mean", platforms=_MEASURED_ON)
    add(CONV, "convolution weight and bias gradients as matmuls over shifted inputs (instead of "
        "XLA's weight-gradient convolution)", platforms=_MEASURED_ON)
    add(LSTM, "LSTM backward pass that computes the recurrent weight gradient in one matmul "
        "after the reverse loop (instead of differentiating lax.scan)", platforms=_MEASURED_ON)
