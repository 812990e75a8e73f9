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
from collections.abc import Iterable


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
        return f"{text}\n  hint: {self.hint}" if self.hint else text

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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``''``."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


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
