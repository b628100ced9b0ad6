"""One logging setup for every Clover process."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at ``level`` (default: ``CLOVER_LOG_LEVEL`` or INFO)."""
    chosen = (level or os.environ.get("CLOVER_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=chosen, format=FORMAT)
