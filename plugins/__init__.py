"""fusionjax's bundled plugins (installed as ``fusionjax_plugins``).

Each sub-package is one plugin, discovered through the ``fusionjax.plugins``
entry-point group exactly like a third-party plugin.  Its ``__init__`` holds only
the registration hook, with lazy ``"module:attr"`` targets, so listing plugins
does not import JAX model code.
"""
