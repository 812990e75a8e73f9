"""The hooks a fusionjax plugin implements (pluggy, project name ``fusionjax``).

A plugin is a module (or object) named by an entry point in the group
``fusionjax.plugins``.  It implements one or more hooks below, marked with
:data:`hookimpl`::

    # my_plugin/__init__.py
    from fusionjax.hookspecs import hookimpl

    @hookimpl
    def fusionjax_register_components(registrar):
        registrar.encoder("bow_text", "my_plugin.encoder:BagOfWords")

    # pyproject.toml
    [project.entry-points."fusionjax.plugins"]
    my_plugin = "my_plugin"
"""

from __future__ import annotations

import pluggy

PROJECT = "fusionjax"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def fusionjax_register_components(registrar) -> None:
    """Register this plugin's components on ``registrar`` (a :class:`fusionjax.plugins.Registrar`).

    Called once per plugin.  Registration is all-or-nothing: if this hook raises,
    none of the components it registered are kept.  A target may be the class
    itself or a lazy ``"module:attr"`` string (imported on first use, which keeps
    ``fusionjax plugins list`` fast)::

        registrar.fusion("gated", GatedFusion)
        registrar.encoder("vit_image", "my_plugin.vit:ViTEncoder", summary="ViT-S/16")
    """
