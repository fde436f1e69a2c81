"""A day's headline source: the `HeadlineSource` a request records, and the spec strings people type.

People name a source as ``sample``, ``rss`` or ``files:PATH[,PATH]`` (the
`workers.daily_source` setting, `varro daily --source`), or as ``--source files
--file PATH ...`` (one path per option, so a path may hold a comma). The
request records a `HeadlineSource` with absolute paths, read back by the fetch
worker possibly much later and on another machine. A source that cannot work
(an unknown kind, a missing file, live RSS for a past day, a day the sample
does not cover) is refused by `check_source` before the request is recorded,
since a recorded request is kept for ever and its day can only be re-requested
with --force.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from events.schema import HeadlineSource
from varro.errors import UsageProblem
from varro.headlines.collect import SOURCE_KINDS, PastDateError, check_source_dates, sample_dates


def source_from_spec(spec: str) -> HeadlineSource:
    """The source a spec string names: ``files:`` paths split on commas, ``replay:NS``."""
    kind, _, rest = spec.partition(":")
    if kind == "replay":
        return HeadlineSource(kind="replay", namespace=rest)
    return HeadlineSource(kind=kind, paths=[p for p in rest.split(",") if p])


def files_source(paths: Sequence[str | Path]) -> HeadlineSource:
    """Files as a worker elsewhere must find them: absolute, one string each (commas allowed)."""
    return HeadlineSource(kind="files", paths=[str(Path(p).resolve()) for p in paths])


def as_source(source: HeadlineSource | str) -> HeadlineSource:
    return source if isinstance(source, HeadlineSource) else source_from_spec(source)


def describe(source: HeadlineSource) -> str:
    """One line for people: ``files: /a, /b``, ``replay of ns``, ``sample``."""
    if source.kind == "replay":
        return f"replay of {source.namespace}"
    return f"{source.kind}: {', '.join(source.paths)}" if source.paths else source.kind


def check_source(source: HeadlineSource | str, dates: Sequence[str], *, today: str | None = None) -> HeadlineSource:
    """The source, with absolute paths, if it can supply `dates`; else UsageProblem naming what is wrong."""
    source = as_source(source)
    kind, paths = source.kind, [Path(p) for p in source.paths]
    if kind not in SOURCE_KINDS:
        raise UsageProblem(f"unknown headline source {describe(source)!r}: use sample, rss or files:PATH[,PATH]")
    if kind == "files":
        if not paths:
            raise UsageProblem("the files source names no file: use files:PATH[,PATH] or --file PATH")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UsageProblem(f"headline file not found: {', '.join(missing)}")
        source = files_source(paths)
    elif paths:
        raise UsageProblem(f"headline source {kind!r} takes no paths (got {describe(source)!r})")
    if kind == "sample":
        covered = sample_dates()
        outside = [d for d in dates if d not in covered]
        if outside:
            raise UsageProblem(
                f"no bundled sample headlines for {outside[0]}: the sample covers {covered[0]} .. {covered[-1]}"
            )
    try:
        check_source_dates(kind, dates, today=today)
    except PastDateError as exc:
        raise UsageProblem(str(exc)) from None
    return source
