"""Reading one letter out of a language model's reply, strictly.

A reply is accepted when, after any reasoning block, it is one letter among
the remaining ones, on its own or as the head of an explanation:

    "B", " **(c).** ", "B.", "B\\n\\nBecause ...", "B. Because ...", "B) oil ..."

The letter must stand alone: it is followed by nothing, by a line break, or by
a closing mark (".", ":", ")") and a space. So "Because ..." is not "B", "A good
one is C" is not "A", "I think B" is nothing, and a reply that offers a second
lone letter on a later line ("A\\nB") is ambiguous and refused. A reasoning
block (``<think>...</think>``) is dropped first; one that never closes means
the model ran out of tokens while thinking, which is an answer we cannot read.
"""

from __future__ import annotations

import json
import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

_LEAD = r"""^[\s"'`*_(\[]*"""
# The whole reply is one letter with decoration: "B", " **(c).** ".
_BARE = re.compile(_LEAD + r"""([A-Za-z])[\s"'`*_)\].:]*$""")
# The letter heads a longer reply: alone on its first line, or closed by ". " / ": " / ") ".
_HEAD = re.compile(_LEAD + r"""([A-Za-z])(?:[ \t"'`*_)\].:]*\n|[`*_"')\]]*[.:)][`*_"']*\s)""")


class BadAnswer(ValueError):
    """The server answered, but not with a valid letter."""


def strip_reasoning(content: str) -> str:
    """The reply after its reasoning block (servers that prefill ``<think>`` send only the close)."""
    if THINK_CLOSE in content:
        return content.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in content:
        raise BadAnswer(f"the reasoning block never closed (raise judge.http_max_tokens?): {content[:80]!r}")
    return content


def parse_letter(content: str, letters: str) -> int:
    """Shown position of the single letter `content` answers with; BadAnswer otherwise."""
    text = strip_reasoning(content)
    match = _BARE.match(text) or _HEAD.match(text)
    if match is None:
        raise BadAnswer(f"not a single letter: {content[:80]!r}")
    rest = text[match.end() :]
    if any(_BARE.match(line) for line in rest.splitlines()):
        raise BadAnswer(f"more than one lone letter: {content[:80]!r}")
    letter = match.group(1).upper()
    if letter not in letters:
        raise BadAnswer(f"letter {letter!r} is not among the remaining {letters}")
    return letters.index(letter)


def parse_choice_json(content: str, letters: str) -> int:
    """Shown position from a JSON reply ``{"choice": "B"}`` (the json_schema constraint)."""
    text = strip_reasoning(content).strip()
    try:
        value = json.loads(text)
    except ValueError:
        raise BadAnswer(f"not JSON: {content[:80]!r}") from None
    if not isinstance(value, dict) or not isinstance(value.get("choice"), str):
        raise BadAnswer(f'not an object with a "choice" string: {content[:80]!r}')
    choice = value["choice"].strip()
    if len(choice) != 1:
        raise BadAnswer(f"choice is not a single letter: {choice[:80]!r}")
    return parse_letter(choice, letters)
