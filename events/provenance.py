"""When and by which code an entry was written: the stamp every appended event carries."""

from __future__ import annotations

import datetime as dt
import importlib.metadata


def installed_version() -> str:
    """The installed Varro distribution's version, recorded in every event (events/ must not import varro/)."""
    try:
        return importlib.metadata.version("varro")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    """Now, as recorded in `recorded_at` and beside dead letters and quarantined entries."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
