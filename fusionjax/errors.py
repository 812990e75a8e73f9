"""The errors fusionjax raises at its users.

Every error a user can cause is a :class:`FusionJaxError`: it says *what* is
wrong, *where* (a config key path, a file, a plugin and its package) and *how*
to fix it.  ``assert`` only guards internal invariants.

    FusionJaxError
    ├── ConfigError      a config file, an override or a component parameter
    ├── ComponentError   an unknown or ambiguous component name
    ├── PluginError      a plugin that cannot be loaded (strict mode)
    ├── DataError        a data set that cannot deliver what the model needs
    ├── TrainingError    a run that cannot go on (the loss became NaN/Inf)
    └── RunError         a run directory that cannot be used as asked
        ├── NotARunError         no run there (no config.json)
        ├── UnfinishedRunError   a run that has no final model yet (resume it)
        ├── FinishedRunError     a finished run, which is never overwritten
        ├── RunConfigMismatch    an unfinished run of another config
        └── CorruptRunError      a file of the run that is unreadable or does not fit

The command line exits with 2 for a usage, config or run-directory error and with 1
for a data or training failure.
"""

from __future__ import annotations

import difflib
import itertools
import math
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

# The most characters of a config error's message (key path, text and hint together)
# and of one value quoted in a message: whatever a config holds, what a user reads
# stays a few lines long.
MAX_MESSAGE = 4096
SHOWN_LIMIT = 200


class FusionJaxError(Exception):
    """Base of every user-facing fusionjax error."""


class ConfigError(FusionJaxError, ValueError):
    """A bad config value.  ``key`` is the dotted path of the offending key.

    Components may raise it from their constructors with a key *relative* to
    their own section (``raise ConfigError("must be even", key="n_fft")``);
    assembly prefixes the section path, so the user reads
    ``model.encoders.audio.n_fft: must be even``.
    """

    def __init__(self, message: str, *, key: str | None = None, hint: str | None = None):
        self.key = key
        self.message = message
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        return capped(f"{text}\n  hint: {self.hint}" if self.hint else text, MAX_MESSAGE)

    def under(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` put in front of its key path."""
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigError(self.message, key=key, hint=self.hint)


class ComponentError(FusionJaxError, LookupError):
    """A component name that does not resolve to exactly one registered component."""


class PluginError(FusionJaxError):
    """A plugin that failed to load (raised only in strict mode)."""


class DataError(FusionJaxError):
    """A data set that cannot deliver what the model asks of it."""


def did_you_mean(word: Any, choices: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``''``.  Anything
    that is not a string (a YAML ``1:`` or ``null:`` key) and any string far longer
    than every choice has no suggestion."""
    if not isinstance(word, str):
        return ""
    choices = [c for c in choices if isinstance(c, str)]
    if not choices or len(word) > 2 * max(map(len, choices)) + 10:
        return ""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(shown(c) for c in close) + "?)"


def capped(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text``, or its beginning and end with a note of how much was cut from the middle
    (the end is kept: that is where a message's hint is)."""
    if len(text) <= limit:
        return text
    note = f" ... [{len(text) - limit:,} characters cut] ... "
    tail = limit // 4
    return text[: max(0, limit - tail - len(note))] + note + text[len(text) - tail:]


class _Shown(reprlib.Repr):
    """``reprlib`` truncation by isinstance (so dict/list/str subclasses and Mappings
    are bounded too), insertion order for mappings, and huge ints by their size."""

    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel = 4
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 8
        self.maxdict = 6
        self.maxstring = max(24, limit // 3)
        self.maxlong = self.maxother = max(24, limit // 2)

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, bool) or x is None:
            return repr(x)
        if isinstance(x, int):
            return self.repr_int(int(x), level)
        if isinstance(x, float):
            return repr(float(x))
        if isinstance(x, str):
            return self.repr_str(str(x), level)
        if isinstance(x, Mapping):
            return self._mapping(x, level)
        if isinstance(x, list | tuple):
            left, right = ("[", "]") if isinstance(x, list) else ("(", ")")
            return self._items(x, level, left, right, self.maxlist)
        if isinstance(x, set | frozenset):
            return self._items(x, level, "{", "}", self.maxset) if x else "set()"
        return self.repr_instance(x, level)

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr is quadratic, and refused past 4,300 digits
            return f"<an int of {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)

    def _items(self, x, level: int, left: str, right: str, most: int) -> str:
        if not x:
            return left + right
        if level <= 0:
            return left + self.fillvalue + right
        pieces = [self.repr1(v, level - 1) for v in itertools.islice(x, most)]
        if len(x) > most:
            pieces.append(self.fillvalue)
        return left + ", ".join(pieces) + right

    def _mapping(self, x: Mapping, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{" + self.fillvalue + "}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                  for k, v in itertools.islice(x.items(), self.maxdict)]
        if len(x) > self.maxdict:
            pieces.append(self.fillvalue)
        return "{" + ", ".join(pieces) + "}"


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters however large, deep
    or self-referencing ``value`` is: long strings and ints keep their two ends, long
    lists and tables their first items, deep ones their top levels."""
    r = _Shown(limit)
    if isinstance(value, str):
        r.maxstring = max(24, limit - 2)  # a string alone may use the whole limit
    try:
        text = r.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails: name its type only
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


class TrainingError(FusionJaxError, RuntimeError):
    """A run that cannot continue, e.g. its loss became NaN or infinite.  The
    message names the step and the last good checkpoint."""


class RunError(FusionJaxError):
    """A run directory that cannot be used as asked; ``path`` is the directory."""

    def __init__(self, message: str, *, path=None, hint: str | None = None):
        self.path, self.message, self.hint = path, message, hint
        text = f"{path}: {message}" if path is not None else message
        super().__init__(f"{text}\n  hint: {hint}" if hint else text)


class NotARunError(RunError):
    """No fusionjax run in that directory."""


class UnfinishedRunError(RunError):
    """The run has no final model yet: it is still training, or was stopped."""


class FinishedRunError(RunError):
    """The directory holds a finished run; fusionjax never overwrites one."""


class RunConfigMismatch(RunError):
    """The directory holds an unfinished run of a different config."""


class CorruptRunError(RunError):
    """A file of the run is unreadable, or does not fit the run's model."""
