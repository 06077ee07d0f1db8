"""The request rules every small JSON app server here shares (`route`, `search`): a body
size limit, JSON that is an object, a list of non-empty strings under one key (or one string
under its singular), a cap on how many; each breach a 4xx with a JSON `error` naming the
part of the request at fault.

Example:

>>> body = b'{"texts": ["card lost", "refund please"]}'
>>> texts_from(parse_body(body, max_body=1024), "texts", "text", max_texts=8)
['card lost', 'refund please']
>>> try:
...     texts_from(parse_body(b'{"texts": []}', 1024), "texts", "text", 8)
... except RequestError as err:
...     err.status, err.message
(400, 'give "text": str or "texts": [str, ...] (non-empty)')
"""

from __future__ import annotations

import json
from typing import Any


class RequestError(Exception):
    """A bad request: the HTTP status and the message the client sees."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def parse_body(body: bytes, max_body: int) -> dict[str, Any]:
    """The body as a JSON object (413 over `max_body` bytes, 400 when not a JSON object)."""
    if len(body) > max_body:
        raise RequestError(413, f"body over {max_body} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "body must be a JSON object")
    return data


def texts_from(data: dict[str, Any], many: str, one: str, max_texts: int) -> list[str]:
    """`data[many]` (a list of non-empty strings) or `[data[one]]`, at most `max_texts`."""
    texts = data.get(many, [data[one]] if one in data else None)
    if (not isinstance(texts, list) or not texts
            or not all(isinstance(t, str) and t.strip() for t in texts)):
        raise RequestError(400, f'give "{one}": str or "{many}": [str, ...] (non-empty)')
    if len(texts) > max_texts:
        raise RequestError(400, f'"{many}": at most {max_texts} per request')
    return texts


def int_field(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    """`data[name]` as an integer in [low, high] (default when absent), else a 400."""
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(400, f'"{name}" must be an integer from {low} to {high}')
    return value
