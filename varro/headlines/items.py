"""What a source hands to `collect`: raw items as read, plus how the read went."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Category = Literal["general", "markets"]
CATEGORIES: tuple[str, ...] = ("general", "markets")


@dataclass(frozen=True, slots=True)
class RawItem:
    """One entry as its source gave it; nothing is trusted or normalised yet.

    Slotted: a headline file of a million short records keeps a million of these."""

    title: str | None
    link: str | None
    published: object = None
    source: str | None = None
    source_title: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class FilePayload:
    """A source's raw bytes left in their file: a streamed import never holds a whole file in memory.

    `sha256` and `size` are of the bytes the import read; the fetch job copies the file
    into the artifact store by streaming and refuses it if it no longer hashes the same.
    """

    path: Path
    sha256: str
    size: int

    def read(self) -> bytes:
        """The whole file (for tests and small files), refused if it changed since it was read."""
        data = self.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ValueError(f"{self.path} changed since it was read")
        return data


@dataclass
class SourceRead:
    """One feed or file: its items, or why it failed, and the raw bytes it came as
    (in memory, or as a `FilePayload` for a file read record by record).

    `default_source` names items that do not name their publisher; `date_hint`
    (a file named YYYY-MM-DD.*) dates items that carry no timestamp.
    """

    name: str
    category: Category
    status: Literal["ok", "failed", "not_modified"] = "ok"
    items: list[RawItem] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    payload: bytes | FilePayload | None = None
    default_source: str | None = None
    date_hint: str | None = None
    final_url: str | None = None  # a feed served from elsewhere after redirects
    warnings: Counter[str] = field(default_factory=Counter)  # kept going, but worth knowing (recorded)
    # Item positions by UTC day of publication (None: undated), when items carry normalised times:
    # a day of a many-day file then touches its own items only.
    by_day: dict[str | None, list[int]] | None = None

    @classmethod
    def failed(
        cls, name: str, category: Category, error: str, payload: bytes | FilePayload | None = None
    ) -> SourceRead:
        return cls(name=name, category=category, status="failed", error=error, payload=payload)
