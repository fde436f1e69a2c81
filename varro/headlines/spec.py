"""A day's headline source as a request records it: ``sample``, ``rss`` or ``files:PATH[,PATH]``.

The spec is written into `DailyRunRequested` and read back by the fetch
worker, possibly much later and on another machine. A spec that cannot work
(an unknown kind, a missing file, live RSS for a past day, a day the sample
does not cover) is refused by `check_source` before the request is recorded,
since a recorded request is kept for ever and its day can only be re-requested
with --force.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from varro.errors import UsageProblem
from varro.headlines.collect import SOURCE_KINDS, PastDateError, check_source_dates, sample_dates


def parse_source(spec: str) -> tuple[str, list[Path]]:
    """(kind, file paths) of a spec; the inverse of `files_spec` for files."""
    kind, _, paths = spec.partition(":")
    return kind, [Path(p) for p in paths.split(",") if p] if paths else []


def files_spec(paths: Sequence[str | Path]) -> str:
    return "files:" + ",".join(str(Path(p).resolve()) for p in paths)


def check_source(spec: str, dates: Sequence[str], *, today: str | None = None) -> None:
    """Raise UsageProblem naming what is wrong with `spec` for `dates`; return None if it can supply them."""
    kind, paths = parse_source(spec)
    if kind not in SOURCE_KINDS:
        raise UsageProblem(f"unknown headline source {spec!r}: use sample, rss or files:PATH[,PATH]")
    if kind == "files":
        if not paths:
            raise UsageProblem(f"headline source {spec!r} names no file: use files:PATH[,PATH]")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UsageProblem(f"headline file not found: {', '.join(missing)}")
    elif paths:
        raise UsageProblem(f"headline source {kind!r} takes no paths (got {spec!r})")
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
