"""What a set of parts needs around them on this machine, beyond their own processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Progress = Callable[[str], None]


class HostSetup(Protocol):
    """Set up before the first of its parts starts, undone after the last of them stops.

    Both are idempotent: ``setup`` with some of the parts still running changes nothing they
    use, and ``teardown`` with nothing set up does nothing."""

    name: str

    def setup(self, progress: Progress) -> None: ...

    def teardown(self, progress: Progress) -> None: ...
