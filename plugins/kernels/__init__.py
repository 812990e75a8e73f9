"""Fast paths of the bundled components: formulations that XLA compiles to faster
code than the plain JAX operation, with the same values and gradients.

Each is switchable off (see :mod:`fusionjax.fast_paths`) and tested against the
plain formulation in ``tests/test_kernels.py``.  This package is shared code of the
bundled plugins, not a plugin itself.
"""
