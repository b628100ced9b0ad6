"""An exclusive, expiring lease on a Redis key: who may change the visibility state right now.

The analytics holds the lease for a whole run (its state writes and its publication); clearing
visibility (the collector's TruncateVisibility) takes it too, so a clear never interleaves with a
run: after the clear returns, no run that read the old data can still write or publish. A lease
expires ``ttl_s`` after its last renewal, so a holder that dies does not block the others; a
holder that lost it (expired, or Redis restarted) finds out at its next ``renew`` and stops.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

# Renew only while we still hold it, release only our own: compare and act in one step.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class LeaseLost(RuntimeError):
    """The lease expired or was taken while its holder was still working."""


class Lease:
    """``with Lease(store, key).held(wait_s=...)``: hold ``key`` exclusively, renewed in the background."""

    def __init__(self, store: Any, key: str, ttl_s: float = 15.0):
        self.store = store
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.token = ""
        self._lost = threading.Event()
        self._done = threading.Event()
        self._keeper: threading.Thread | None = None

    def try_acquire(self) -> bool:
        token = uuid.uuid4().hex
        if self.store.set(self.key, token, nx=True, px=self.ttl_ms):
            self.token = token
            return True
        return False

    def acquire(self, wait_s: float, poll_s: float = 0.1) -> bool:
        """Take the lease, waiting up to ``wait_s`` for its holder to release it or to expire."""
        deadline = time.monotonic() + wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
        self._lost.clear()
        self._done.clear()
        self._keeper = threading.Thread(target=self._keep, name=f"lease {self.key}", daemon=True)
        self._keeper.start()
        return True

    def _keep(self) -> None:
        while not self._done.wait(self.ttl_ms / 3000):
            try:
                renewed = self.store.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
            except Exception:  # Redis away: the lease may expire under us
                renewed = 0
            if not renewed:
                self._lost.set()
                return

    def holds(self, value: str | bytes | None) -> bool:
        """Whether ``value``, read from the lease's key, is this holder's token."""
        text = value.decode() if isinstance(value, bytes) else value
        return bool(self.token) and text == self.token

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still ours."""
        if self._lost.is_set() or not self.token:
            raise LeaseLost(f"lost the lease {self.key}")

    def release(self) -> None:
        self._done.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
            self._keeper = None
        if self.token:
            try:
                self.store.eval(_RELEASE, 1, self.key, self.token)
            finally:
                self.token = ""

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


@contextmanager
def visibility_cleared(store: Any, lease_key: str, flag_key: str, wait_s: float = 120.0) -> Iterator[Lease]:
    """Hold ``lease_key`` while visibility is cleared: ``flag_key`` asks a run in progress to give it
    up at its next step. Raises TimeoutError when the lease is not free within ``wait_s``."""
    store.set(flag_key, "1", ex=int(wait_s) + 30)
    lease = Lease(store, lease_key)
    try:
        if not lease.acquire(wait_s):
            raise TimeoutError(f"the analytics did not give up {lease_key} within {wait_s:.0f}s")
        with lease:
            yield lease
    finally:
        store.delete(flag_key)
