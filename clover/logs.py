"""One logging setup for every Clover process: text lines, or with ``CLOVER_LOG_FORMAT=json`` one
JSON object per line (``time``, ``level``, ``logger``, ``message``, ``pid``; ``error`` with a
traceback), the structured form a log shipper reads."""

from __future__ import annotations

import datetime
import json
import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """A record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at ``level`` (default: ``CLOVER_LOG_LEVEL`` or INFO), in ``CLOVER_LOG_FORMAT``
    (text, the default, or json)."""
    chosen = (level or os.environ.get("CLOVER_LOG_LEVEL") or "INFO").upper()
    form = os.environ.get("CLOVER_LOG_FORMAT", "text")
    if form not in FORMATS:
        raise ValueError(f"CLOVER_LOG_FORMAT={form!r} must be text or json")
    if form == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=chosen, handlers=[handler])
    else:
        logging.basicConfig(level=chosen, format=FORMAT)
