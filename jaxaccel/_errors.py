"""The error root: every error jaxaccel (and the packages built on it) raises for bad input."""

from __future__ import annotations

__all__ = ["Error", "ConfigError", "InputError", "CheckpointError"]


class Error(Exception):
    """Root of the errors raised for bad input or a run that cannot go on.

    The ``jaxaccel`` command prints an `Error` as one line and exits with status 2 (``--debug``
    shows the traceback); anything else is a bug and keeps its traceback.
    """


class ConfigError(Error, ValueError):
    """A job configuration key is unknown, of the wrong type or out of range.

    Attributes:
        key: the dotted config key (``"priors.alpha"``) or command-line flag.
        source: where the value came from (a TOML file's path, ``"command line"``, ``"defaults"``).
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.key, self.source, self.detail = key, source, message
        where = ": ".join(s for s in (source, key) if s)
        super().__init__(f"{where}: {message}" if where else message)

    def with_source(self, source: str) -> ConfigError:
        """The same error, naming ``source`` (if it named none yet)."""
        if self.source is not None:
            return self
        return ConfigError(self.detail, key=self.key, source=source)


class InputError(Error, ValueError, TypeError):
    """A bad argument or bad data given to a library function (names the argument or leaf path).

    Derives from both `ValueError` and `TypeError` so callers catching either keep working.
    """


class CheckpointError(Error):
    """A checkpoint cannot be used (it belongs to another run, or is unreadable)."""
