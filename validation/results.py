"""A run's results: the per-request JTL CSV, the summariser lines of the log, and the
per-label summary the original lacked (count, error %, throughput, latency percentiles).

Percentiles are nearest-rank: pN is the smallest elapsed time that at least N % of the
samples do not exceed. Throughput is samples per second between the first sample's start and
the last sample's end (JMeter's Summary Report definition).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# The original guide's JTL columns, in order.
JTL_COLUMNS = (
    "timeStamp",
    "elapsed",
    "label",
    "responseCode",
    "responseMessage",
    "threadName",
    "dataType",
    "success",
    "failureMessage",
    "bytes",
    "sentBytes",
    "grpThreads",
    "allThreads",
    "Latency",
    "IdleTime",
    "Connect",
)
TOTAL = "TOTAL"

SUMMARISER_LINE = re.compile(
    r"summary\s*(?P<kind>[+=])\s*(?P<count>\d+) in (?P<hms>\d+:\d\d:\d\d) =\s*(?P<rate>[\d.]+)/s"
    r" Avg:\s*(?P<avg>-?\d+) Min:\s*(?P<min>-?\d+) Max:\s*(?P<max>-?\d+) Err:\s*(?P<err>\d+)"
    r" \((?P<errpct>[\d.]+)%\)"
)


@dataclass(frozen=True)
class Sample:
    """One row of the JTL."""

    timestamp: int
    elapsed: int
    label: str
    response_code: str
    response_message: str
    thread_name: str
    success: bool
    failure_message: str
    bytes: int
    sent_bytes: int
    latency: int
    connect: int

    @property
    def end(self) -> int:
        return self.timestamp + self.elapsed


@dataclass(frozen=True)
class LabelSummary:
    label: str
    samples: int
    errors: int
    error_percent: float
    throughput: float
    mean_ms: float
    min_ms: int
    max_ms: int
    p50_ms: int
    p90_ms: int
    p99_ms: int
    p999_ms: int


@dataclass(frozen=True)
class SummariserLine:
    """``summary + 3 in 00:00:00 = 111.1/s Avg: 7 Min: 6 Max: 8 Err: 0 (0.00%)``; kind ``+`` is
    one interval, ``=`` the running total (the last ``=`` line is the whole run)."""

    kind: str
    count: int
    seconds: int
    rate: float
    avg: int
    min: int
    max: int
    errors: int
    error_percent: float

    def text(self) -> str:
        h, rest = divmod(self.seconds, 3600)
        m, s = divmod(rest, 60)
        return (
            f"{self.count} in {h:02d}:{m:02d}:{s:02d} = {self.rate}/s Avg: {self.avg} Min: {self.min}"
            f" Max: {self.max} Err: {self.errors} ({self.error_percent:.2f}%)"
        )


def _int(value: str) -> int:
    return int(value) if value else 0


def parse_jtl(text: str) -> list[Sample]:
    """The samples of a JTL CSV (with its header line). Rows a running test has not finished
    writing are skipped."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return []
    index = {name: i for i, name in enumerate(header)}
    missing = [c for c in ("timeStamp", "elapsed", "label", "success") if c not in index]
    if missing:
        raise ValueError(f"not a JTL CSV: no {', '.join(missing)} column")

    def col(row: list[str], name: str) -> str:
        i = index.get(name)
        return row[i] if i is not None else ""

    samples: list[Sample] = []
    for row in reader:
        if len(row) != len(header):
            continue
        try:
            samples.append(
                Sample(
                    timestamp=int(col(row, "timeStamp")),
                    elapsed=int(col(row, "elapsed")),
                    label=col(row, "label"),
                    response_code=col(row, "responseCode"),
                    response_message=col(row, "responseMessage"),
                    thread_name=col(row, "threadName"),
                    success=col(row, "success").lower() == "true",
                    failure_message=col(row, "failureMessage"),
                    bytes=_int(col(row, "bytes")),
                    sent_bytes=_int(col(row, "sentBytes")),
                    latency=_int(col(row, "Latency")),
                    connect=_int(col(row, "Connect")),
                )
            )
        except ValueError:
            continue
    return samples


def read_jtl(path: Path) -> list[Sample]:
    return parse_jtl(path.read_text(errors="replace")) if path.exists() else []


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _summary(label: str, group: Sequence[Sample]) -> LabelSummary:
    elapsed = sorted(s.elapsed for s in group)
    errors = sum(1 for s in group if not s.success)
    span_ms = max(s.end for s in group) - min(s.timestamp for s in group)
    return LabelSummary(
        label=label,
        samples=len(group),
        errors=errors,
        error_percent=100.0 * errors / len(group),
        throughput=len(group) * 1000.0 / max(span_ms, 1),
        mean_ms=sum(elapsed) / len(elapsed),
        min_ms=elapsed[0],
        max_ms=elapsed[-1],
        p50_ms=percentile(elapsed, 50),
        p90_ms=percentile(elapsed, 90),
        p99_ms=percentile(elapsed, 99),
        p999_ms=percentile(elapsed, 99.9),
    )


def summarise(samples: Iterable[Sample]) -> list[LabelSummary]:
    """One row per label (in order of first appearance), then the TOTAL row; [] without samples."""
    groups: dict[str, list[Sample]] = {}
    everything: list[Sample] = []
    for s in samples:
        groups.setdefault(s.label, []).append(s)
        everything.append(s)
    if not everything:
        return []
    return [*(_summary(label, group) for label, group in groups.items()), _summary(TOTAL, everything)]


def format_summary(rows: Sequence[LabelSummary]) -> str:
    """A fixed-width table, one line per label."""
    if not rows:
        return "no samples yet\n"
    width = max(5, *(len(r.label) for r in rows))
    head = (
        f"{'label':<{width}} {'samples':>8} {'errors':>7} {'error %':>8} {'req/s':>9} {'mean':>8}"
        f" {'min':>6} {'p50':>6} {'p90':>6} {'p99':>6} {'p99.9':>6} {'max':>6}  (ms)"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.label:<{width}} {r.samples:>8} {r.errors:>7} {r.error_percent:>7.2f}% {r.throughput:>9.2f}"
            f" {r.mean_ms:>8.1f} {r.min_ms:>6} {r.p50_ms:>6} {r.p90_ms:>6} {r.p99_ms:>6} {r.p999_ms:>6} {r.max_ms:>6}"
        )
    return "\n".join(lines) + "\n"


def summary_csv(rows: Sequence[LabelSummary]) -> str:
    out = io.StringIO()
    fields = list(LabelSummary.__dataclass_fields__)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for r in rows:
        writer.writerow([getattr(r, f) for f in fields])
    return out.getvalue()


def summary_json(rows: Sequence[LabelSummary]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2) + "\n"


def samples_json(samples: Sequence[Sample]) -> str:
    return json.dumps([asdict(s) for s in samples], indent=2) + "\n"


def parse_summariser(log_text: str) -> list[SummariserLine]:
    """The summariser lines of a JMeter log or console output, in order."""
    lines = []
    for m in SUMMARISER_LINE.finditer(log_text):
        h, mi, s = (int(x) for x in m["hms"].split(":"))
        lines.append(
            SummariserLine(
                kind=m["kind"],
                count=int(m["count"]),
                seconds=h * 3600 + mi * 60 + s,
                rate=float(m["rate"]),
                avg=int(m["avg"]),
                min=int(m["min"]),
                max=int(m["max"]),
                errors=int(m["err"]),
                error_percent=float(m["errpct"]),
            )
        )
    return lines


def final_summary(log_text: str) -> SummariserLine | None:
    """The last running-total (``=``) line: the whole run once JMeter has finished."""
    totals = [line for line in parse_summariser(log_text) if line.kind == "="]
    return totals[-1] if totals else None


class JtlCounter:
    """Counts the samples and failed samples of a JTL that is still being written, reading
    only what was appended since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.success_column: int | None = None
        self.columns = 0
        self.samples = 0
        self.errors = 0

    def update(self) -> tuple[int, int]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.samples, self.errors
        end = chunk.rfind(b"\n")
        if end < 0:
            return self.samples, self.errors
        self.offset += end + 1
        rows = csv.reader(io.StringIO(chunk[: end + 1].decode("utf-8", errors="replace")))
        for row in rows:
            if self.success_column is None:
                if "success" not in row:
                    continue
                self.success_column = row.index("success")
                self.columns = len(row)
                continue
            if len(row) != self.columns:
                continue
            self.samples += 1
            if row[self.success_column].lower() != "true":
                self.errors += 1
        return self.samples, self.errors
