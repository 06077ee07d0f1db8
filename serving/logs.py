"""JSON log lines (one object per line) for the server's own logs and its access log.

>>> import logging, io
>>> stream = io.StringIO()
>>> setup_logging("info", stream)
>>> logging.getLogger("tfllm_serving.test").info("hello", extra={"model": "sst2"})
>>> json.loads(stream.getvalue())["model"]
'sst2'
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,  # which worker, when several serve one port
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "color_message":
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str = "info", stream: IO[str] | None = None) -> None:
    """Route the server's, uvicorn's and the access logs through one JSON handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("tfllm_serving", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
