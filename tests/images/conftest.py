"""The images, built (``stack.images.build``, cached) and run in a private containerd without
the cluster. These tests run only when chosen: ``pytest -m images tests/images``
(``make images-test``). They need root; the first build takes about ten minutes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clover.config import Config
from stack.images import build
from stack.images.oci import normalized
from tests.images.runtime import Containerd

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / ".clover-test-images"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = "images" in (config.option.markexpr or "")
    for item in items:
        if Path(str(item.fspath)).parent.name == "images":
            item.add_marker(pytest.mark.images)
            if not chosen:
                item.add_marker(pytest.mark.skip(reason="the image tests run with -m images (make images-test)"))
            elif os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="building and running images needs root"))


class Timings(dict[str, float]):
    """Seconds each phase took, printed at the end of the session (tests assert no timing)."""


@pytest.fixture(scope="session")
def timings() -> Iterator[Timings]:
    found = Timings()
    yield found
    print("\n[images] timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in found.items()))


@pytest.fixture(scope="session")
def built(timings: Timings) -> dict[str, build.Built]:
    """Every image, built (a second build only checks its stamps)."""
    started = time.monotonic()
    done = build.build(Config.from_env(), lambda line: print(f"[images] {line}", flush=True))
    timings["build"] = time.monotonic() - started
    return {b.reference: b for b in done}


@pytest.fixture(scope="session")
def containerd(built: dict[str, build.Built], timings: Timings) -> Iterator[Containerd]:
    """A containerd of the tests' own with every image imported."""
    runtime = Containerd(HOME / "containerd")
    runtime.start()
    try:
        started = time.monotonic()
        for b in built.values():
            runtime.import_archive(b.archive)
        timings["import"] = time.monotonic() - started
        yield runtime
    finally:
        runtime.stop()


def ref(name: str) -> str:
    """The reference an image of the catalogue was imported as (default repository and tag)."""
    return normalized(f"opnfv/{name}:latest")
