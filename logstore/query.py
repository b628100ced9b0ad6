"""Reading the log store (VictoriaLogs' LogsQL API): entries by trace, by service, since a time."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

from stack.probes import ProbeFailed

# What an entry shows, in order (the store keeps more: the raw line, the file it came from).
ENTRY_FIELDS = ("_time", "pod", "source", "user", "destination", "responseCode", "responseSize", "latency",
                "method", "url", "userAgent", "traceId", "spanId", "requestId", "sid", "msg", "classtype", "priority",
                "eventId", "sourceIp", "destinationIp", "ruleId", "rules", "anomalyScore", "blocked", "clientIp",
                "level", "kind", "entryId")  # fmt: skip
NUMBERS = {"responseCode": int, "responseSize": int, "latency": float, "sid": int, "priority": int, "eventId": int,
           "anomalyScore": int}  # fmt: skip
TRACE_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{16}")
SERVICE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
SINCE = re.compile(r"([1-9][0-9]{0,8})([smhd])")
MAX_LIMIT = 10_000
# Each entry once: a line the shipper sent again (killed before it saved its offset) is stored
# twice with the same entryId.
ONCE = "sort by (_time) limit 1 partition by (entryId)"


class LogQueryError(ValueError):
    """A filter the store cannot be asked; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class LogStoreError(RuntimeError):
    """The store did not answer a query; the message says why."""


@dataclass(frozen=True)
class LogFilter:
    """Which entries: of a trace, of a service (its pods' entries and the entries it sent), of
    the last ``since`` (``30s``, ``10m``, ``2h``, ``7d``), with a user-agent, of a stream."""

    trace: str | None = None
    service: str | None = None
    since: str | None = None
    user_agent: str | None = None
    stream: str | None = None

    def check(self) -> None:
        if self.trace is not None and not TRACE_ID.fullmatch(self.trace):
            raise LogQueryError("trace", f"trace {self.trace!r} is not a trace id (32 or 16 lowercase hex digits)")
        if self.service is not None and not SERVICE.fullmatch(self.service):
            raise LogQueryError("service", f"service {self.service!r} is not a service or pod name (a-z, 0-9, -)")
        if self.since is not None and not SINCE.fullmatch(self.since):
            raise LogQueryError("since", f"since {self.since!r} is not a duration such as 30s, 10m, 2h or 7d")

    def logsql(self) -> str:
        """The LogsQL filter (values quoted as LogsQL strings, never spliced in raw)."""
        self.check()
        terms = []
        if self.since is not None:
            terms.append(f"_time:{self.since}")
        if self.stream is not None:
            terms.append(f"stream:={_quote(self.stream)}")
        if self.trace is not None:
            terms.append(f"traceId:={_quote(self.trace)}")
        if self.service is not None:
            quoted = _quote(self.service)
            terms.append(f"(destination:={quoted} or pod:={quoted} or source:={quoted})")
        if self.user_agent is not None:
            terms.append(f"userAgent:={_quote(self.user_agent)}")
        return " ".join(terms) or "*"


def _quote(value: str) -> str:
    return json.dumps(value)


def entry(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as an access-log entry: its fields in order, numbers as numbers."""
    shown: dict[str, Any] = {}
    for name in ENTRY_FIELDS:
        if name in row:
            value = row[name]
            convert = NUMBERS.get(name)
            if convert is not None:
                with contextlib.suppress(TypeError, ValueError):
                    value = convert(value)
            shown["time" if name == "_time" else name] = value
    return shown


class LogStore:
    """A client of the VictoriaLogs HTTP API at ``url``."""

    def __init__(self, url: str, timeout: float = 10.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        # A session that carries credentials, e.g. the API server's when url is its service proxy.
        self.session = session

    def _rows(self, query: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
        params: dict[str, str] = {"query": query}
        if limit is not None:
            params["limit"] = str(limit)
        try:
            post = self.session.post if self.session is not None else requests.post
            answer = post(f"{self.url}/select/logsql/query", data=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise LogStoreError(f"Error connecting to the log store at {self.url}: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise LogStoreError(f"the log store at {self.url} answered {answer.status_code}: {answer.text[:300]}")
        for line in answer.text.splitlines():
            if line.strip():
                yield json.loads(line)

    def probe(self) -> None:
        """Readiness: the store answers a query."""
        try:
            list(self._rows("_time:1m | limit 1"))
        except LogStoreError as exc:
            raise ProbeFailed(str(exc)) from None

    def search(self, where: LogFilter, limit: int = 100) -> list[dict[str, Any]]:
        """The access and alert entries ``where`` selects, oldest first (at most ``limit``: the newest ones)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise LogQueryError("limit", f"limit {limit} must be between 1 and {MAX_LIMIT}")
        fields = ", ".join(ENTRY_FIELDS)
        query = (f"{where.logsql()} kind:in(access, alert) | {ONCE} | sort by (_time desc) | limit {limit}"
                 f" | fields {fields}")  # fmt: skip
        rows = [entry(row) for row in self._rows(query)]
        return rows[::-1]

    def slowest(self, where: LogFilter, limit: int = 10) -> list[dict[str, Any]]:
        """The ``limit`` slowest requests ``where`` selects, slowest first: each trace's access
        entry with the highest latency (its first hop in the chain, which waited for the rest)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise LogQueryError("limit", f"limit {limit} must be between 1 and {MAX_LIMIT}")
        query = (f"{where.logsql()} kind:=access | {ONCE} | sort by (latency desc) limit 1 partition by (traceId)"
                 f" | sort by (latency desc) | limit {limit} | fields {', '.join(ENTRY_FIELDS)}")  # fmt: skip
        return [entry(row) for row in self._rows(query)]

    def count_by(self, field: str, where: LogFilter) -> dict[str, int]:
        """How many entries ``where`` selects (each entryId once), per value of ``field``."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", field):
            raise LogQueryError("field", f"field {field!r} is not a field name")
        rows = self._rows(f"{where.logsql()} | stats by ({field}) count_uniq(entryId) as n")
        return {str(row.get(field, "")): int(row["n"]) for row in rows}

    def count_entries(self, query: str) -> int:
        """How many entries a LogsQL filter selects, each entryId once."""
        return self._count(query, "count_uniq(entryId)")

    def count(self, query: str) -> int:
        """How many stored lines a LogsQL filter selects (a line shipped twice counts twice)."""
        return self._count(query, "count()")

    def _count(self, query: str, function: str) -> int:
        rows = list(self._rows(f"{query} | stats {function} as n"))
        return int(rows[0]["n"]) if rows else 0
