"""Typed errors. `VarroError` is the root of every error Varro raises on purpose;
`PermanentError` marks the ones a retry cannot fix (a missing predecessor, bad
input, a corrupted file), so workers fail them at once with their reason instead
of retrying them as if they were transient. They live here, in the lowest layer,
so every package can raise them; the event log's own errors follow."""

from __future__ import annotations


class VarroError(Exception):
    """Base of every error Varro raises on purpose."""


class PermanentError(VarroError):
    """Retrying cannot help: the inputs or the request are wrong, and the message says how."""


class EventError(VarroError):
    """Base of every error the event log raises on purpose."""


class EventDecodeError(EventError, PermanentError):
    """Stored bytes are not an event this code can read; the message says why."""


class PreconditionError(EventError, PermanentError):
    """An event's required predecessor (type and date) is not in the namespace."""


class ChainConflict(EventError):
    """Another writer moved the chain tip between read and append; append retries."""


class NamespaceNotEmpty(EventError, PermanentError):
    """Import refuses to mix a restored log with events already recorded."""
