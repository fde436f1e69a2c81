"""Typed errors of the event log, so callers can tell a bad payload from a
missing predecessor from a busy chain without parsing messages."""

from __future__ import annotations


class EventError(Exception):
    """Base of every error the event log raises on purpose."""


class EventDecodeError(EventError):
    """Stored bytes are not an event this code can read; the message says why."""


class PreconditionError(EventError):
    """An event's required predecessor (type and date) is not in the namespace."""


class ChainConflict(EventError):
    """Another writer moved the chain tip between read and append; append retries."""


class NamespaceNotEmpty(EventError):
    """Import refuses to mix a restored log with events already recorded."""
