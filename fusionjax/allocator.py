"""glibc malloc settings that keep XLA:CPU's step buffers mapped between steps.

XLA:CPU allocates one buffer for all of a compiled step's intermediates each time
the step runs (139 MB for benchmark workload ``small``), on one of its worker
threads.  A glibc thread arena cannot hold a chunk that large, so glibc maps it
with ``mmap`` and unmaps it when the step ends; the next step page-faults every
page of it in again (34,000 faults, a third of the step time on the 2-core
benchmark machine).  With one arena (the main heap, which grows with ``brk``),
``mmap`` off for chunks and a high trim threshold, the freed buffer stays in the
heap and the next step reuses it: 119 -> 80 ms per step, 34,000 -> 1,400 faults.

The cost: up to :data:`TRIM_THRESHOLD` of freed memory stays with the process
instead of going back to the OS, and every thread allocates from one arena.

It must happen before JAX starts its threads (a thread keeps the arena it first
allocated from), so :mod:`fusionjax` applies it when it is imported.  It is a fast
path like the others: ``FUSIONJAX_FAST_PATHS=-malloc`` leaves glibc's defaults.
Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import os

from fusionjax import fast_paths

MALLOC = fast_paths.declare(
    "malloc", "glibc malloc: one arena, no mmap'd chunks, 1 GiB trim threshold (set at import)")

# mallopt parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20

_applied: dict[str, int] | None = None


def tune() -> dict[str, int] | None:
    """Apply the settings once (no-op when switched off or not on glibc); returns
    what was set, or None."""
    global _applied
    if _applied is not None or not fast_paths.enabled(MALLOC) or not _is_glibc():
        return _applied
    libc = ctypes.CDLL(None)
    settings = {"M_ARENA_MAX": (_M_ARENA_MAX, 1), "M_MMAP_MAX": (_M_MMAP_MAX, 0),
                "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                "M_TOP_PAD": (_M_TOP_PAD, TOP_PAD)}
    _applied = {name: value for name, (param, value) in settings.items()
                if libc.mallopt(param, value) == 1}
    return _applied


def applied() -> dict[str, int] | None:
    """The settings in force (None if :func:`tune` did nothing)."""
    return _applied


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False
