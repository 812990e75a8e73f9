"""The progress bar of ``fusionjax train``: one line, redrawn in place on a terminal.

``[########------------] step 1200/3000 | loss 0.4321 | 1,070 ex/s | 0:01:12 | ETA 0:01:41``

It is drawn only when the stream is a terminal (``isatty()``), at most once every
``min_interval`` seconds, with a carriage return; on anything else (a CI log, a pipe,
a file) it writes nothing, and the periodic log lines are the whole output.  Log
lines printed through :meth:`Progress.around` erase the bar first (the next update
draws it again), so the two never garble each other.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any, TextIO


class Progress:
    """``update(step, value)`` after each step; ``loss_of(value)`` turns the value of the
    step *before* (its device work is done by then, so reading it does not stall the
    pipeline) into the loss shown, and is called only when the bar is drawn."""

    def __init__(self, total: int, batch_size: int, stream: TextIO | None, *,
                 loss_of: Callable[[Any], float | None] = lambda value: None,
                 min_interval: float = 0.25, clock: Callable[[], float] = time.perf_counter):
        self.total, self.batch_size, self.stream = total, batch_size, stream
        self.enabled = stream is not None and _isatty(stream)
        self.loss_of, self.min_interval, self.clock = loss_of, min_interval, clock
        self.t_start = clock()
        self._first: tuple[int, float] | None = None  # (step, time) once the compile is over
        self._drawn_at = -float("inf")
        self._previous = None
        self._step, self._loss, self._width = 0, None, 0

    def __enter__(self) -> Progress:
        if self.enabled:
            self._draw("compiling the first step")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, step: int, value: Any = None) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self._first is None:
            self._first = (step, now)
        previous, self._previous, self._step = self._previous, value, step
        if now - self._drawn_at >= self.min_interval or step == self.total:
            if previous is not None:
                # waits for the device to finish the step before, which JAX's asynchronous
                # dispatch may have queued far ahead: so the step and rate shown are true
                self._loss = self.loss_of(previous)
                now = self.clock()
            self._draw(self._status(now))
            self._drawn_at = now

    def around(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` that erases the bar before each line and redraws it after."""
        if not self.enabled:
            return log

        def logged(line: str) -> None:
            self._erase()
            log(line)
            self._drawn_at = -float("inf")  # the next update draws the bar again

        return logged

    def close(self) -> None:
        """Erase the bar (the last log line already says where training ended)."""
        if self.enabled:
            self._erase()

    def _status(self, now: float) -> str:
        done = self._step / self.total
        filled = int(20 * done)
        parts = [f"[{'#' * filled}{'-' * (20 - filled)}] step {self._step}/{self.total}"]
        if self._loss is not None:
            parts.append(f"loss {self._loss:.4f}")
        first_step, t_first = self._first
        rate = (self._step - first_step) / (now - t_first) if now > t_first else 0.0
        if rate > 0:
            parts.append(f"{rate * self.batch_size:,.0f} ex/s")
        parts.append(_clock(now - self.t_start))
        if rate > 0:
            parts.append(f"ETA {_clock((self.total - self._step) / rate)}")
        return " | ".join(parts)

    def _draw(self, text: str) -> None:
        text = text[: max(shutil.get_terminal_size((100, 24)).columns - 1, 20)]
        self.stream.write("\r" + text + " " * max(self._width - len(text), 0))
        self.stream.flush()
        self._width = len(text)

    def _erase(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
