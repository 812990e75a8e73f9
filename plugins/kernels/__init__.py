"""Fast paths of the bundled components: formulations that XLA compiles to faster
code than the plain JAX operation, with the same values and gradients.

Each is switchable off (see :mod:`fusionjax.fast_paths`) and tested against the
plain formulation in ``tests/test_kernels.py``.  This package is shared code of the
bundled plugins, not a plugin itself.  Its names are declared here (no JAX import),
so that ``FUSIONJAX_FAST_PATHS`` can be checked whether or not a model uses them;
``fusionjax.fast_paths`` finds this module through the ``fusionjax.fast_paths``
entry-point group.

All were measured on XLA:CPU only, so they are on by default there and off on other
backends until ``benchmarks/gpu.sh`` (its ``fusionjax-fast`` row) shows they help.
"""

from fusionjax import fast_paths

_MEASURED_ON = ("cpu",)

MAX_POOL = fast_paths.declare(
    "max_pool", "max pooling as reshape + max, gradient to the first maximum of each window "
    "from an int8 window index (instead of XLA's select-and-scatter)", _MEASURED_ON)
AVG_POOL = fast_paths.declare("avg_pool", "average pooling as reshape + mean", _MEASURED_ON)
CONV = fast_paths.declare(
    "conv", "convolution weight and bias gradients as matmuls over shifted inputs (instead of "
    "XLA's weight-gradient convolution)", _MEASURED_ON)
LSTM = fast_paths.declare(
    "lstm", "LSTM backward pass that computes the recurrent weight gradient in one matmul "
    "after the reverse loop (instead of differentiating lax.scan)", _MEASURED_ON)
