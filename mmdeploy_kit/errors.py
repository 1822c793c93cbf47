"""The MmdkError family: every user-facing failure is one line (what went wrong + how to fix it).

The CLI prints ``error: <message> (hint: <hint>)`` and exits with ``exit_code``; no traceback unless
``--debug``. Library callers catch ``MmdkError`` (or a subclass) and read ``.message`` / ``.hint``.
"""

from __future__ import annotations


class MmdkError(Exception):
    """Base class. ``message`` says what went wrong, ``hint`` how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = " ".join(str(message).split())  # always one line
        self.hint = " ".join(str(hint).split()) if hint else None

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UserInputError(MmdkError):
    """Bad arguments, paths, specs, recipes or data supplied by the user."""

    exit_code = 2


class CheckpointError(UserInputError):
    """A checkpoint is missing, truncated, corrupt, or of a kind we cannot load."""


class SpecError(UserInputError):
    """An I/O spec is malformed or does not match the module it describes."""


class DataError(UserInputError):
    """A data manifest / calibration set is missing, malformed or does not match the tower."""


class MissingBackendError(MmdkError):
    """An optional dependency (tensorrt, neural-compressor, ...) is not installed."""

    exit_code = 3


class BackendUnavailableError(MmdkError):
    """The hardware a target/backend needs is absent (e.g. --target gpu on a CPU-only machine)."""

    exit_code = 3


class ExportError(MmdkError):
    """An exporter failed (unsupported operator, tracing failure, ...)."""

    exit_code = 4


class VerificationError(MmdkError):
    """An artifact's outputs disagree with its source beyond tolerance (or contain NaN/Inf)."""

    exit_code = 5


class BudgetError(MmdkError):
    """An accuracy budget could not be met."""

    exit_code = 6


class RegressionError(MmdkError):
    """A benchmark gate failed (latency or accuracy regression)."""

    exit_code = 1


class RemoteError(MmdkError):
    """A run on a remote device (``--host``) failed on the way: SSH connection or host key, remote mmdk
    missing or of another version, disk full on the device, connection lost / device rebooted mid-run.
    Exit code 7. An error the remote mmdk itself reports keeps the remote exit code (see mmdeploy_kit/remote)."""

    exit_code = 7


def validation_message(exc: Exception) -> str:
    """First problem of a pydantic ``ValidationError`` as ``field.path: message (got X)`` (duck-typed, so
    this module needs no pydantic import); any other exception's text as is."""
    errors = getattr(exc, "errors", None)
    if not callable(errors) or not errors():
        return str(exc)
    err = errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    msg = err.get("msg", "")
    if err.get("type") == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    return f"{loc}: {msg}" if loc else msg
