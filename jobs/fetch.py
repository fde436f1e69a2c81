"""Fetch a day's headlines and record them as one `HeadlinesFetched` event.

The event carries the normalised headlines and, per source, the sha256 of the
raw bytes as received (stored content-addressed), so a replay re-reads exactly
what was fetched. A day already recorded is returned as it is, without going
to any source; only `force` fetches again, as a new event that says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from events.errors import PermanentError
from events.ids import derive_event_id, validate_date
from events.schema import ArtifactRef, DailyRunRequested, HeadlinesFetched
from events.store import Appended, EventStore
from jobs.context import JobContext, force_input
from varro.artifacts import ArtifactError
from varro.headlines.collect import NoHeadlinesError, SourceKind, collect
from varro.headlines.items import FilePayload, SourceRead

PAYLOAD_KIND = "feed-payload"


class ReplaySourceMissing(PermanentError, LookupError):
    """A replay asked for a day its source namespace never fetched."""


def feed_state_path(ctx: JobContext) -> Path:
    """Conditional-GET validators belong to the machine's feeds, not to a namespace."""
    return ctx.cfg.data_path / "feeds" / "state.json"


def fetch_headlines(
    ctx: JobContext,
    date: str,
    *,
    source: SourceKind = "sample",
    paths: Sequence[Path] = (),
    force: bool = False,
    today: str | None = None,
    on_source: Callable[[SourceRead], None] | None = None,
) -> Appended:
    """Record day `date`'s headlines from `source`; returns the store's `Appended`.

    Raises `PastDateError` for RSS on any day but today, and `NoHeadlinesError`
    (recording nothing) when no source yielded a headline, so a later retry can
    still record the day.
    """
    validate_date(date)
    if not force:
        recorded = ctx.store.latest_of(HeadlinesFetched, date)
        if recorded is not None:
            entry_id = ctx.store.entry_id(recorded.event_id)
            assert entry_id is not None  # `latest` found the event through this same id index
            return Appended(entry_id, recorded, False)
    inputs = [source, force_input(ctx.store, "HeadlinesFetched", date)] if force else [source]
    event_id = derive_event_id(ctx.ns, "HeadlinesFetched", date, inputs)
    cfg = ctx.cfg.headlines
    day = collect(
        source,
        date,
        cfg,
        paths=paths,
        today=today,
        state_path=feed_state_path(ctx),
        recall=lambda sha: _recall(ctx, sha),
        on_source=on_source,
    )
    if not day.headlines:
        failures = "; ".join(f"{r.source}: {r.error}" for r in day.reports if r.error) or "every item was dropped"
        raise NoHeadlinesError(f"no headlines for {date} from {source} ({failures}); nothing recorded", day.reports)
    refs = {name: _store_payload(ctx, data) for name, data in day.payloads.items()}
    reports = [msgspec.structs.replace(r, payload=refs.get(r.source)) for r in day.reports]
    request = ctx.store.latest_of(DailyRunRequested, date)
    event = HeadlinesFetched(
        event_id=event_id,
        ns=ctx.ns,
        date=date,
        correlation_id=ctx.correlation_id or (request.correlation_id if request else event_id),
        causation_id=request.event_id if request else None,
        headlines=day.headlines,
        sources=reports,
        source_kind=source,
        forced=force,
        filter_mode=cfg.filter,
        cap=cfg.cap_per_day if cfg.cap_per_day > 0 else None,
    )
    appended = ctx.store.append(event)
    ctx.log.info(
        "headlines fetched",
        date=date,
        source=source,
        headlines=len(day.headlines),
        failed_sources=sum(r.status == "failed" for r in reports),
        created=appended.created,
        forced=force,
    )
    return appended


def _store_payload(ctx: JobContext, data: bytes | FilePayload) -> ArtifactRef:
    """A source's raw bytes into the store; a streamed file is copied from the file, never read whole."""
    if isinstance(data, FilePayload):
        return ctx.artifacts.put_file(data.path, data.sha256, kind=PAYLOAD_KIND)
    return ctx.artifacts.put(data, kind=PAYLOAD_KIND)


def _recall(ctx: JobContext, sha256: str) -> bytes | None:
    """An earlier payload, for a feed that answered 304; None when it is not (intact) on disk."""
    try:
        return ctx.artifacts.get(sha256)
    except ArtifactError:
        return None


def copy_recorded_headlines(ctx: JobContext, date: str, source_ns: str) -> Appended:
    """Replay's fetch: re-record exactly what `source_ns` fetched that day; never the network."""
    recorded = EventStore(ctx.store.redis, source_ns).latest_of(HeadlinesFetched, date)
    if recorded is None:
        raise ReplaySourceMissing(f"namespace {source_ns!r} has no HeadlinesFetched for {date} to replay")
    event_id = derive_event_id(ctx.ns, "HeadlinesFetched", date, [f"replay:{recorded.event_id}"])
    copy = msgspec.structs.replace(
        recorded,
        event_id=event_id,
        ns=ctx.ns,
        correlation_id=ctx.correlation_id or event_id,
        causation_id=recorded.event_id,
        prev_hash="",
        recorded_at="",
    )
    return ctx.store.append(copy)
