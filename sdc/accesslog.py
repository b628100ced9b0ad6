"""Each pod's access log: one JSON line per request it answered, read by the log shipper; and
the IDS's alert log, one JSON line per alert, beside them.

The original's fields (``source``, ``user``, ``destination``, ``responseCode``, ``responseSize``,
``latency``) plus the request's method, URL, user-agent, trace and span ids, and the entry's own
id (``entryId``). ``source`` is the calling pod's service (``unknown`` for a client outside the
chain) and ``user`` its identity, the pod's name; ``destination`` is this pod's service. The file
is rotated past a size: renamed to ``<pod>.log.<n>`` (the shipper reads the rotated generations
too) and the oldest beyond ``keep`` removed.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import math
import os
import random
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from clover.config import Config
from logstore.settings import LogSettings
from sdc import topology

UNKNOWN = "unknown"


def unique_id() -> Any:
    """An entry's ``entryId``, new for each entry: a shipper killed between sending lines and
    saving its offset sends them again, and every reader counts an entryId once."""
    return field(default_factory=random_uuid4_hex)


def random_uuid4_hex() -> str:
    """``uuid.uuid4().hex`` from the process's random generator (reseeded in a forked child) rather
    than a system call per entry."""
    value = random.getrandbits(128) & ~(0xC000 << 48) | 0x8000 << 48  # the RFC 4122 variant
    return f"{value & ~(0xF000 << 64) | 4 << 76:032x}"  # version 4


@dataclass
class JsonLine:
    """An entry written as one JSON line (compact, UTF-8), as the shipper reads it.

    Not frozen: an entry is made per request, and a frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) costs about four times as much."""

    def line(self) -> bytes:
        # Every field is a plain value: vars() in field order is what asdict gives, without its deep copy.
        fields = vars(self)
        try:
            return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # a lone surrogate (bytes a client sent that are not UTF-8): escaped
            return (json.dumps(fields, separators=(",", ":")) + "\n").encode()


@dataclass
class AccessEntry(JsonLine):
    """One request as a pod answered it."""

    time: str
    stream: str
    pod: str
    source: str
    user: str
    destination: str
    responseCode: int  # the original's field names (camelCase)
    responseSize: int
    latency: float
    method: str
    url: str
    userAgent: str
    traceId: str
    spanId: str
    requestId: str
    level: str = "info"
    kind: str = "access"
    entryId: str = unique_id()


@dataclass
class AlertEntry(JsonLine):
    """One IDS alert: the rule that fired, the addresses of the request, its trace."""

    time: str
    stream: str
    pod: str
    sid: int
    msg: str
    classtype: str
    priority: int
    eventId: int  # the original's snort_event:<id> in Redis (camelCase like the access fields)
    sourceIp: str
    destinationIp: str
    traceId: str
    level: str = "warning"
    kind: str = "alert"
    entryId: str = unique_id()


@dataclass
class WafAlertEntry(JsonLine):
    """One WAF alert (modsecurity-crs), as the waf_event:<id> hash has it, with the request's trace."""

    time: str
    stream: str
    pod: str
    ruleId: str
    msg: str
    anomalyScore: int
    rules: str
    blocked: bool
    responseCode: int
    clientIp: str
    method: str
    url: str
    userAgent: str
    traceId: str
    requestId: str
    eventId: int
    level: str = "warning"
    kind: str = "alert"
    entryId: str = unique_id()


def timestamp(epoch_seconds: float) -> str:
    """``epoch_seconds`` in UTC with microseconds, rounded as ``datetime.fromtimestamp`` rounds them."""
    fraction, whole = math.modf(epoch_seconds)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    return f"{_utc_second(int(whole))}.{micros:06d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(epoch_second: int) -> str:
    return datetime.datetime.fromtimestamp(epoch_second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class HeldLines:
    """Lines written from an event loop are held until the loop's current round of callbacks is
    done, then written with one system call (a pod answers many requests per round); a line
    written where no loop runs is written at once. ``close`` writes what is held."""

    def __init__(self) -> None:
        self.written = 0
        self._held: list[bytes] = []

    def write(self, entry: AccessEntry | AlertEntry | WafAlertEntry) -> None:
        self._held.append(entry.line())
        self.written += 1
        if len(self._held) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        if self._held:
            lines = b"".join(self._held)
            self._held.clear()
            self._emit(lines)

    def _emit(self, lines: bytes) -> None:
        raise NotImplementedError


class AccessLog(HeldLines):
    """Appends entries to ``<directory>/<pod>.log``, whole lines per write, rotating by size."""

    def __init__(self, directory: Path, pod: str, max_bytes: int, keep: int = 5):
        super().__init__()
        self.path = directory / f"{pod}.log"
        self.max_bytes = max_bytes
        self.keep = keep
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 - held for the pod's life
        self._size = self._file.tell()

    def _emit(self, lines: bytes) -> None:
        if self._size and self._size + len(lines) > self.max_bytes:
            self.rotate()
        self._file.write(lines)
        self._file.flush()
        self._size += len(lines)

    def rotated(self) -> list[Path]:
        """The rotated generations, oldest first."""
        found = [p for p in self.path.parent.glob(f"{self.path.name}.*") if p.suffix[1:].isdigit()]
        return sorted(found, key=lambda p: int(p.suffix[1:]))

    def rotate(self) -> None:
        generations = self.rotated()
        number = int(generations[-1].suffix[1:]) + 1 if generations else 1
        self._file.close()
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{number}"))
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0
        for old in generations[: max(0, len(generations) + 1 - self.keep)]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()
        self._file.close()


class StdoutLog(HeldLines):
    """Entries on the process's standard output, whole lines per write (``CLOVER_ACCESS_LOG=stdout``,
    in the cluster): the container runtime keeps and rotates the pod's log under /var/log/pods.
    One lock for the process: the IDS's access entries and its alerts share the stream."""

    _lock = threading.Lock()

    def _emit(self, lines: bytes) -> None:
        with self._lock:
            sys.stdout.buffer.write(lines)
            sys.stdout.buffer.flush()

    def close(self) -> None:
        self.flush()
        sys.stdout.buffer.flush()


def open_access_log(pod: str) -> tuple[AccessLog | StdoutLog, str]:
    """The pod's access log as ``CLOVER_ACCESS_LOG*`` configure it, and the stream its entries name."""
    settings = LogSettings.from_env(os.environ)
    if settings.access_log == "stdout":
        return StdoutLog(), settings.stream
    log = AccessLog(settings.access_log_dir, pod, settings.access_log_max_bytes, settings.access_log_keep)
    return log, settings.stream


def sources(cfg: Config) -> dict[str, tuple[str, str]]:
    """The chain's pods by address: (service, pod name), to name who sent a request."""
    if topology.mode(cfg) == topology.CLUSTER:
        return {}
    return {topology.pod_ip(cfg, p.name): (p.service, p.name) for p in topology.POD_SPECS}
