"""Rule-based sentence splitting for building NSP segments.

A line break always ends a sentence; inside a line, `.`, `!` or `?` (with closing
quotes or brackets) followed by space and an upper-case letter, digit or opening
quote ends one, unless the word before is a known abbreviation or a single initial.

Example:

>>> from tfllm.data.sentences import split_sentences
>>> split_sentences("Dr. Smith met H. americanus. It grew!  Then (it) slept.\\nNew line")
['Dr. Smith met H. americanus.', 'It grew!', 'Then (it) slept.', 'New line']
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e fig no vol approx inc ltd co corp dept "
    "gen gov sen rep rev lt col sgt capt jan feb mar apr jun jul aug sep sept oct nov dec "
    "u.s u.k a.m p.m".split()
)
_BOUNDARY = re.compile(r"""([.!?]+["')\]]*)\s+(?=["'(\[]?[A-Z0-9])""")


def _ends_with_abbreviation(text: str) -> bool:
    last = text.rsplit(None, 1)[-1] if text.strip() else ""
    word = last.rstrip(".").lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(text: str) -> list[str]:
    """Split a document into sentences (empty pieces dropped)."""
    sentences: list[str] = []
    for line in text.split("\n"):
        start = 0
        for match in _BOUNDARY.finditer(line):
            candidate = line[start : match.end(1)]
            if match.group(1).startswith(".") and _ends_with_abbreviation(candidate):
                continue
            sentences.append(candidate.strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]
