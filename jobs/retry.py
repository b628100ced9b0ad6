"""Waiting out a backing service that is not there yet (or has gone away) with backoff."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("clover.retry")


class Stopped(RuntimeError):
    """Stop was requested while still waiting."""


def with_backoff(attempt: Callable[[], T], what: str, stop: threading.Event, longest: float = 30.0) -> T:
    """``attempt()`` until it returns, waiting 1 s, 2 s, 4 s … (at most ``longest``) between
    failures; raises Stopped when ``stop`` is set first."""
    delay = 1.0
    while True:
        try:
            return attempt()
        except Exception as exc:  # each backing service's client raises its own types
            if stop.is_set():
                raise Stopped(what) from exc
            log.warning("%s failed (%s: %s); retrying in %.0fs", what, type(exc).__name__, str(exc)[:200], delay)
        if stop.wait(delay):
            raise Stopped(what)
        delay = min(delay * 2, longest)
