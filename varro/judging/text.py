"""Word-level text helpers shared by the lexical and semantic judges."""

from __future__ import annotations

import re

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our ours out over own same she should so some such than
    that the their theirs them then there these they this those through to too under until up very was
    we were what when where which while who whom why will with would you your yours""".split()
)

_WORD = re.compile(r"[a-z0-9]+(?:['.-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, inner apostrophes, dots and hyphens kept)."""
    return _WORD.findall(text.casefold())


def content_words(text: str) -> list[str]:
    """Words that carry meaning: no stop words, no single characters."""
    return [w for w in words(text) if len(w) > 1 and w not in STOPWORDS]
