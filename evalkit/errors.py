"""User-facing errors. The CLI prints ``EvalkitError`` as one line and exits non-zero; anything
else is a bug and keeps its traceback."""

from __future__ import annotations


class EvalkitError(Exception):
    """A problem the user can fix: the message names the file/field/flag and the fix."""


class UnknownNameError(EvalkitError):
    """A model/task/judge name that no registry knows."""


class SpecError(EvalkitError):
    """A malformed model or task spec."""


class ModelError(Exception):
    """A model call that failed. ``transient`` failures (timeouts, 429, 5xx, dropped connections)
    are retried with backoff; the rest are recorded at once."""

    def __init__(self, kind: str, message: str, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.transient = transient
        self.retry_after = retry_after


class EndpointUnreachable(EvalkitError):
    """The model server cannot be reached at all (checked once before a run starts)."""


class UserTurnError(EvalkitError):
    """A user turn produced at run time could not be made (the user simulator or the speech model
    failed, or said nothing): the turn is recorded as failed, like a failed model turn."""
