"""Errors that the CLI turns into exit codes.

``UserError`` (exit 2) means the input was wrong: the message says what and where, and how to fix it.
``TrainingError`` (exit 1) means training failed after it started: the message says why and where the log is.
"""

from __future__ import annotations


class TricklabError(Exception):
    """Base of every error tricklab raises on purpose."""


class UserError(TricklabError, ValueError):
    """Bad input: a recipe, a name, an argument, a missing folder. The CLI exits with status 2."""


class ConfigError(UserError):
    """A recipe or override that does not validate."""


class UnknownNameError(UserError, KeyError):
    """A registry lookup for a name that is not registered; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConflictError(UserError):
    """Two techniques that cannot run together (e.g. two writers of an exclusive state slot)."""


class DataError(UserError):
    """A data set that cannot be found or read."""


class CheckpointError(TricklabError):
    """A checkpoint that is missing, truncated or fails its checksum."""


class TrainingError(TricklabError, RuntimeError):
    """Training stopped after it began (e.g. too many non-finite steps in a row). The CLI exits with 1."""
