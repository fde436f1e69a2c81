"""The structure score: what fraction of the six prediction sections a roll-out has.

A section counts when its name opens a line as a heading, however it is
dressed: markdown heading marks (``##``), bold or italics (``**Market
Impact:**``), list numbers or bullets (``1.``, ``2)``, ``-``), any case, and a
colon, dash or line end after the name. A name merely mentioned inside a
sentence ("the market impact is small") does not count, nor does a misspelt or
partial name ("Market Impacts", "Risk:"): the score measures whether the model
followed the format, not whether the words appear.
"""

from __future__ import annotations

import re

SECTIONS: tuple[str, ...] = (
    "Market Impact",
    "Specific Assets",
    "Trade Recommendation",
    "Timeframe",
    "Risk Factors",
    "World View",
)

# "Time frame" and "Time-frame" are common spellings of the same heading.
_NAME_PATTERNS = {
    name: r"time[\s-]?frame" if name == "Timeframe" else r"\s+".join(name.lower().split()) for name in SECTIONS
}
_LEAD = r"^[ \t>]*(?:#{1,6}[ \t]*)?(?:(?:\d{1,2}|[a-f])[.)][ \t]*|[-*+•][ \t]+)?[*_]{0,3}[ \t]*"
_TAIL = r"[ \t]*[*_]{0,3}[ \t]*(?:[:\uff1a\-–—.]|$)"
_HEADING = {
    name: re.compile(_LEAD + pattern + _TAIL, re.IGNORECASE | re.MULTILINE) for name, pattern in _NAME_PATTERNS.items()
}


def sections_present(text: str) -> list[str]:
    """The section names found as headings in `text`, in canonical order."""
    return [name for name in SECTIONS if _HEADING[name].search(text)]


def section_texts(text: str) -> dict[str, str]:
    """Each section's body: from the end of its heading to the next section heading (or the end).

    A heading that opens a line with its text on the same line ("Timeframe: two
    weeks") keeps that text. When a section appears twice, the first counts.
    """
    starts = sorted(
        (match.start(), match.end(), name)
        for name in SECTIONS
        for match in [_HEADING[name].search(text)]
        if match is not None
    )
    out: dict[str, str] = {}
    for i, (_, end, name) in enumerate(starts):
        stop = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        out[name] = text[end:stop].strip(" \t\n*_:")
    return out


def structure_score(text: str) -> float:
    """Fraction of the six sections present as headings, in [0, 1]."""
    return len(sections_present(text)) / len(SECTIONS)
