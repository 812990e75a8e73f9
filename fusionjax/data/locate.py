"""Where a bundled data set's files are.

In order: the data set's ``root`` parameter, the ``FUSIONJAX_DATA`` environment
variable, then the small subset shipped in the repository (``examples/data``).
Point either at a folder laid out like ``../shared/data`` (``mnist/``, ``fsdd/``,
``sms_spam/``) to use the full sets.
"""

from __future__ import annotations

import os
from pathlib import Path

from fusionjax.errors import ConfigError

ENV = "FUSIONJAX_DATA"


def shipped_root() -> Path:
    """The repository's ``examples/data`` (present in a source checkout / editable install)."""
    import fusionjax_plugins

    return Path(fusionjax_plugins.__file__).resolve().parent.parent / "examples" / "data"


def data_dir(root: str | None, name: str) -> Path:
    """The folder holding data set ``name`` (e.g. ``"mnist"``), checked to exist."""
    if root is not None:
        base, source = Path(root).expanduser(), "the data set's `root`"
    elif os.environ.get(ENV):
        base, source = Path(os.environ[ENV]).expanduser(), f"${ENV}"
    else:
        base, source = shipped_root(), "the repository's shipped subset"
    folder = base.resolve() / name
    if not folder.is_dir():
        raise ConfigError(
            f"no {name!r} folder under {str(base)!r} ({source})", key="root",
            hint=f"set root (or ${ENV}) to a folder with {name}/ in it, e.g. ../shared/data")
    return folder
