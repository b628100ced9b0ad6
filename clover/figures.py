"""The figures Clover publishes for a service and for each of its URLs: declared once, here.

A ``Figure`` names the field of the Redis hash the analytics writes, the name the REST JSON and
the dashboard use, its unit (how it is written to Redis and how it is shown), its label, how it
is measured from the aggregate of a period, and the ``cloverctl check visibility`` option that
bounds it. The publisher (jobs/publish.py), the REST stats and their OpenAPI schema
(controller/), the dashboard tables and ``cloverctl get|check visibility`` all derive theirs
from ``FIGURES``: adding a figure is one line here (plus a method on the aggregate when it
needs a new kind of measurement).

The figures of a service count its requests once: from its own server-side spans (span kind
SERVER; an outbound call is a CLIENT span of the caller, never a request), taken from one
measurement point, the *source* (``jaeger``/``zipkin``: the application's own tracer, in
process; ``clovisor``: the network, on the pod's veth). Each source's figures are published
apart too, so the two views of one service can be compared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from clover import keys

NOT_AVAILABLE = keys.NOT_AVAILABLE

# The sources a span can come from, in the order that wins a tie for a service's headline figures:
# the application's own tracers first (they measure inside the process), then the network's.
SOURCES = ("jaeger", "zipkin", "clovisor")


class Measurable(Protocol):
    """What a figure reads: the aggregate of a service's requests over a period (jobs/aggregates.py)."""

    count: int
    errors: int
    n4xx: int
    n5xx: int
    request_bytes: int
    response_bytes: int
    min_us: int | None
    max_us: int | None

    def mean_us(self) -> float | None: ...

    def quantile_us(self, q: float) -> float | None: ...


@dataclass(frozen=True)
class Period:
    """A service's (or one of its URLs') requests over a period, with what the figures need besides."""

    aggregate: Measurable
    seconds: float | None  # the period's length, for rates; None when nothing was measured
    source: str | None  # the source the aggregate comes from


Value = float | int | str | None


@dataclass(frozen=True)
class Unit:
    """How a figure is written to Redis (``publish``) and shown to people (``show``)."""

    name: str
    description: str  # what the published text is
    symbol: str  # in column headers: "p99 (ms)"
    decimals: int | None  # None: written as a whole number, or as text
    scale: float = 1.0  # published value = measured value * scale
    percent: bool = False  # shown as a percentage (a fraction 0..1 is published)

    def publish(self, value: Value) -> str:
        if value is None:
            return NOT_AVAILABLE
        if isinstance(value, str):
            return value
        if self.decimals is None:
            return str(round(value))
        return f"{value * self.scale:.{self.decimals}f}"

    def show(self, text: str | None) -> str | None:
        """The published text for people: a fraction as a percentage; None and "NA" as None."""
        if text in (None, "", NOT_AVAILABLE):
            return None
        if self.percent:
            try:
                return f"{100 * float(text):.2f}%"
            except ValueError:
                return text
        return text


MS = Unit("ms", "milliseconds, two decimals", "ms", 2, scale=0.001)  # measured in µs
COUNT = Unit("count", "a whole number", "", None)
BYTES = Unit("bytes", "bytes, a whole number", "B", None)
FRACTION = Unit("fraction", "a fraction 0..1, four decimals", "%", 4, percent=True)
PER_SECOND = Unit("per_second", "per second, two decimals", "req/s", 2)
TEXT = Unit("text", "text", "", None)


@dataclass(frozen=True)
class Figure:
    json: str  # name in the REST JSON, the dashboard and cloverctl -o json
    field: str  # field of the service hash in Redis (and key of a URL's JSON)
    unit: Unit
    label: str  # column header and check name
    measure: Callable[[Period], Value]
    check: str | None = None  # the `cloverctl check visibility` option: --max-... or --min-...
    in_tables: bool = True  # a column of the dashboard's and cloverctl's response-time tables

    @property
    def header(self) -> str:
        return f"{self.label} ({self.unit.symbol})" if self.unit is MS else self.label

    @property
    def bound(self) -> str | None:
        """ "max" or "min": what the check option bounds."""
        return None if self.check is None else self.check[2:5]


def _quantile(q: float) -> Callable[[Period], Value]:
    return lambda p: p.aggregate.quantile_us(q)


def _share(part: Callable[[Measurable], int]) -> Callable[[Period], Value]:
    return lambda p: part(p.aggregate) / p.aggregate.count if p.aggregate.count else None


def _when_measured(value: Callable[[Measurable], int | None]) -> Callable[[Period], Value]:
    return lambda p: value(p.aggregate) if p.aggregate.count else None


def _rate(p: Period) -> Value:
    return p.aggregate.count / p.seconds if p.aggregate.count and p.seconds else None


FIGURES: tuple[Figure, ...] = (
    Figure("request_count", "request_count", COUNT, "Requests", lambda p: p.aggregate.count, "--min-requests"),
    Figure("min", keys.RT_MIN, MS, "Min", _when_measured(lambda a: a.min_us)),
    Figure("avg", keys.RT_AVG, MS, "Avg", lambda p: p.aggregate.mean_us(), "--max-avg"),
    Figure("max", keys.RT_MAX, MS, "Max", _when_measured(lambda a: a.max_us), "--max-max"),
    Figure("p50", "p50_rt", MS, "p50", _quantile(0.5), "--max-p50"),
    Figure("p90", "p90_rt", MS, "p90", _quantile(0.9), "--max-p90"),
    Figure("p99", "p99_rt", MS, "p99", _quantile(0.99), "--max-p99"),
    Figure("p999", "p999_rt", MS, "p99.9", _quantile(0.999), "--max-p999"),
    Figure("errors", "errors", COUNT, "Errors", lambda p: p.aggregate.errors, in_tables=False),
    Figure("errors_4xx", "errors_4xx", COUNT, "4xx", lambda p: p.aggregate.n4xx, in_tables=False),
    Figure("errors_5xx", "errors_5xx", COUNT, "5xx", lambda p: p.aggregate.n5xx, in_tables=False),
    Figure("error_rate", "error_rate", FRACTION, "Error rate", _share(lambda a: a.errors), "--max-error-rate"),
    Figure("error_rate_4xx", "error_rate_4xx", FRACTION, "4xx rate", _share(lambda a: a.n4xx), "--max-4xx-rate",
           in_tables=False),
    Figure("error_rate_5xx", "error_rate_5xx", FRACTION, "5xx rate", _share(lambda a: a.n5xx), "--max-5xx-rate",
           in_tables=False),
    Figure("request_bytes", "request_bytes", BYTES, "Request bytes", _when_measured(lambda a: a.request_bytes),
           in_tables=False),
    Figure("response_bytes", "response_bytes", BYTES, "Response bytes", _when_measured(lambda a: a.response_bytes),
           in_tables=False),
    Figure("request_rate", "request_rate", PER_SECOND, "Req/s", _rate, "--min-request-rate"),
    Figure("source", "source", TEXT, "Source", lambda p: p.source if p.aggregate.count else None),
)  # fmt: skip

BY_JSON = {f.json: f for f in FIGURES}
TABLE_FIGURES = tuple(f for f in FIGURES if f.in_tables)
CHECKED_FIGURES = tuple(f for f in FIGURES if f.check)


def publish(period: Period) -> dict[str, str]:
    """The hash fields (or URL JSON) of a period: every figure, "NA" where nothing was measured."""
    return {f.field: f.unit.publish(f.measure(period)) for f in FIGURES}


def by_json_name(published: Mapping[str, str] | None) -> dict[str, str | None]:
    """Published fields under their JSON names; None where the hash lacks a field."""
    published = published or {}
    return {f.json: published.get(f.field) for f in FIGURES}
