"""What the controller, cloverctl and dashboard tests run beside the test stack: the controller
part and the services it relays to (collector, sample chain, validation), on this suite's
ports. Imported by those test modules before the configuration is read."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from sdc import topology
from stack.launcher import Launcher

OFFSET = int(os.environ.get("CLOVER_TEST_PORT_OFFSET", "0"))
# The same sample-chain settings as tests/integration/test_sdc_chain.py, so one session can run both.
_N = 100 + OFFSET // 1000 % 100
_MODE = os.environ.get("CLOVER_SDC_MODE", "auto")
NETNS = _MODE == "netns" or (_MODE == "auto" and topology.netns_available())
os.environ.setdefault("CLOVER_SDC_SUBNET", f"10.177.{_N}.0/24" if NETNS else f"127.177.{_N}.0/24")
os.environ.setdefault("CLOVER_SDC_TAG", f"sdt{_N - 100}")
os.environ.setdefault("CLOVER_SDC_STATS_PORT", str(25090 + OFFSET))
os.environ.setdefault("CLOVER_SDC_BLOCK_SECONDS", "4")
# The validation service on a port of this suite's own (the default one may serve a demo).
os.environ.setdefault("CLOVER_VALIDATION_GRPC", f"127.0.0.1:{50257 + OFFSET}")

CHAIN = ["controller", "collector", "validation", "sdc"]


@contextmanager
def running(stack: Launcher, names: list[str]) -> Iterator[Launcher]:
    """Start the named parts (or groups) that are not running; stop those again afterwards."""
    before = {p.name for p in stack.running()}
    stack.up(names, progress=lambda m: print(f"[stack] {m}"))
    started = [p.name for p in stack.running() if p.name not in before]
    try:
        yield stack
    finally:
        if started:
            stack.down(started)


def flush_visibility(store: redis.Redis) -> None:
    """Remove every visibility key a test may have written (not the IDS alerts of the chain)."""
    doomed = [k for k in store.scan_iter(count=1000) if not str(k).startswith(("snort_", "clovisor_"))]
    if doomed:
        store.delete(*doomed)
