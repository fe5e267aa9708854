"""Errors that end a command with one clear line and a chosen exit code."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: printed as one line, ``exit_code`` returned.

    Exit code 2 means bad input or a failed start-up check; 1 means the
    operation itself failed (e.g. a sync that could not complete).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __str__(self) -> str:  # keep it to one line whatever the cause said
        return " ".join(super().__str__().split())


class ConfigError(UserError):
    """An invalid setting, named in the message (exit code 2)."""


class OperationFailed(UserError):
    """The requested operation could not complete (exit code 1 unless given)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message, exit_code)
