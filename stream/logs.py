"""Log output for the CLI: readable lines, or one JSON object per line (``--log-format json``).

pedsam logs ids, counts, shapes and timings only, never pixels or tensor values; the JSON form
carries the same message plus the logger, level and time, and any ``extra`` fields a call adds.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["FORMATS", "JsonFormatter", "configure"]

FORMATS: tuple[str, ...] = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``error`` (exception type and message, never a traceback) and ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {error}"
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int, log_format: str = "text") -> None:
    """Set up the root logger once for a command: ``level`` and ``log_format`` (see :data:`FORMATS`)."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; choose one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
