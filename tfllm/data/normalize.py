"""Text normalization: Unicode form, markup, control characters, whitespace.

Example:

>>> from tfllm.data.normalize import NormalizeOptions, normalize
>>> normalize("Caf\\u0065\\u0301 <b>bold</b>&amp;\\x07  <unk>  done", NormalizeOptions())
'Café bold& <unk> done'
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

# Only real HTML element names count as markup: corpora such as WikiText use
# placeholders like `<unk>` that must survive cleaning.
_HTML_ELEMENTS = (
    "a abbr address area article aside audio b base bdi bdo blockquote body br button canvas "
    "caption cite code col colgroup data datalist dd del details dfn dialog div dl dt em embed "
    "fieldset figcaption figure font footer form h1 h2 h3 h4 h5 h6 head header hr html i iframe "
    "img input ins kbd label legend li link main map mark meta meter nav noscript object ol "
    "optgroup option output p param picture pre progress q rp rt ruby s samp script section "
    "select small source span strike strong style sub summary sup table tbody td template "
    "textarea tfoot th thead time title tr track tt u ul var video wbr center big"
).split()
_TAG = re.compile(r"</?(?:" + "|".join(_HTML_ELEMENTS) + r")\b[^<>]*/?>", re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BLOCK_TAG = re.compile(r"<(?:br|p|div|li|tr|h[1-6])\b[^<>]*/?>", re.IGNORECASE)
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")


@dataclass
class NormalizeOptions:
    """How to clean each document before filtering and dedup."""

    unicode_form: str | None = "NFC"  # NFC, NFKC, NFD, NFKD or None
    strip_markup: bool = True
    strip_control: bool = True
    collapse_whitespace: bool = True


def strip_markup(text: str) -> str:
    """Remove HTML comments, script/style blocks and tags; decode entities."""
    text = _COMMENT.sub(" ", text)
    text = _SCRIPT.sub(" ", text)
    text = _BLOCK_TAG.sub(" ", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


def strip_control(text: str) -> str:
    """Drop control, format, private-use and unassigned characters; keep tabs and newlines."""
    if text.isascii():
        return _ASCII_CONTROL.sub("", text)
    return "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch)[0] != "C")


def collapse_whitespace(text: str) -> str:
    """Runs of spaces become one space; line breaks are kept (one per break)."""
    text = _SPACES.sub(" ", text)
    return _NEWLINES.sub("\n", text).strip()


def normalize(text: str, options: NormalizeOptions) -> str:
    """Apply the enabled steps in a fixed order: markup, Unicode form, control, whitespace."""
    if options.strip_markup and ("<" in text or "&" in text):
        text = strip_markup(text)
    if options.unicode_form:
        if options.unicode_form not in ("NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(f"unicode_form must be NFC, NFKC, NFD, NFKD or null, got "
                             f"{options.unicode_form!r}")
        text = unicodedata.normalize(options.unicode_form, text)
    if options.strip_control:
        text = strip_control(text)
    if options.collapse_whitespace:
        text = collapse_whitespace(text)
    return text
