"""The error root for the core library and the operations above it (see events.errors)."""

from __future__ import annotations

from events.errors import PermanentError, VarroError

__all__ = ["PermanentError", "UsageProblem", "VarroError"]


class UsageProblem(PermanentError):
    """A request that cannot be carried out as asked; the message says what to change."""
