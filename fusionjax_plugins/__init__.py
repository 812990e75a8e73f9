"""fusionjax's bundled plugins (installed as ``fusionjax_plugins``), laid out by kind.

* ``encoders/``, ``fusions/``, ``heads/``, ``datasets/``: one plugin each (entry points in
  the ``fusionjax.plugins`` group, discovered exactly like a third-party plugin), one
  module per component.  Each ``__init__`` holds only the registration hook, with lazy
  ``"module:attr"`` targets, so listing plugins imports no model code.
* ``kernels/``: the fast paths (a plugin that registers fast-path names, no components).
* ``layers/``: shared layers; not a plugin.
"""
