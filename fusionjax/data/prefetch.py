"""Prepare batch n+1 on the host while the device runs batch n."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


class Prefetcher:
    """Iterate ``transform(item)`` for each item of ``source``, computed ``size`` items
    ahead in a background thread.  An exception in the thread is re-raised in the
    consumer; :meth:`close` stops the thread."""

    def __init__(self, source: Iterator[Any], transform: Callable[[Any], Any] = lambda x: x,
                 size: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, transform), daemon=True,
                                        name="fusionjax-prefetch")
        self._thread.start()

    def _run(self, source, transform) -> None:
        try:
            for item in source:
                if self._stop.is_set():
                    return
                self._put(("ok", transform(item)))
            self._put(("ok", _DONE))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(("error", e))

    def _put(self, entry) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self):
        kind, value = self._queue.get()
        if kind == "error":
            self.close()
            raise value
        if value is _DONE:
            raise StopIteration
        return value

    def close(self) -> None:
        """Stop the thread and wait for it: a thread still inside JAX when the interpreter
        exits is torn down mid-call, and the process aborts."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=60)
