"""Document filters: length bounds and the share of symbol characters.

Example:

>>> from tfllm.data.filters import FilterOptions, rejection_reason
>>> opts = FilterOptions(min_chars=5)
>>> [rejection_reason(t, opts) for t in ("hi", "$$$ %%% ### !!!", "fine text")]
['too_short', 'symbols', None]
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FilterOptions:
    """Bounds a document must meet to be kept (characters counted after normalization)."""

    min_chars: int = 20
    max_chars: int = 200_000
    max_symbol_ratio: float = 0.3


def symbol_ratio(text: str) -> float:
    """Share of non-space characters that are neither letters nor digits."""
    visible = [c for c in text if not c.isspace()]
    if not visible:
        return 0.0
    return sum(1 for c in visible if not c.isalnum()) / len(visible)


def rejection_reason(text: str, options: FilterOptions) -> str | None:
    """Why `text` is filtered out (`too_short`, `too_long`, `symbols`), or None to keep it."""
    if len(text) < options.min_chars:
        return "too_short"
    if len(text) > options.max_chars:
        return "too_long"
    if symbol_ratio(text) > options.max_symbol_ratio:
        return "symbols"
    return None
