"""``cloverctl check visibility``: CI-grade assertions over the analysed results.

A limit is ``SERVICE=VALUE`` (one service, ``-`` or ``_`` form) or ``VALUE`` (every tracked
service). Durations: ``50ms``, ``0.5s``, ``800us``, or a bare number of milliseconds. Rates:
``1%`` or ``0.01``. Counts: whole numbers. A service without results, or a figure the analytics
could not measure ("NA"), fails its check ("no data") unless ``--allow-missing`` is given:
a check that could not be made has not passed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from clover import keys
from clover.figures import CHECKED_FIGURES, COUNT, FRACTION, MS, Figure

PASS, FAIL, NO_DATA, SKIPPED = "ok", "FAIL", "NO DATA", "skipped"
EVERY = "*"


class SpecError(ValueError):
    """A limit that cannot be read; the message says which and why."""


# The figures a limit can bound, each with its option (--max-p99, --min-requests, ...).
METRICS: tuple[Figure, ...] = CHECKED_FIGURES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m)?\s*$")
_TO_MS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, None: 1.0}


def parse_duration_ms(text: str) -> float:
    """``50ms`` -> 50.0, ``0.5s`` -> 500.0, ``800us`` -> 0.8, ``12`` -> 12.0 (ms)."""
    m = _DURATION.match(text)
    if not m:
        raise SpecError(f"{text!r} is not a duration (like 50ms, 0.5s, 800us)")
    return float(m.group(1)) * _TO_MS[m.group(2)]


def parse_rate(text: str) -> float:
    """``1%`` -> 0.01, ``0.5%`` -> 0.005, ``0.01`` -> 0.01."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise SpecError(f"{text!r} is not a rate (like 1% or 0.01)") from None
    if not 0 <= value <= 1:
        raise SpecError(f"{text!r} is outside 0%..100%")
    return value


def parse_value(metric: Figure, text: str) -> float:
    if metric.unit is MS:
        return parse_duration_ms(text)
    if metric.unit is FRACTION:
        return parse_rate(text)
    whole = metric.unit is COUNT
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise SpecError(f"{text!r} is not a {'whole number' if whole else 'number'}") from None
    if value < 0:
        raise SpecError(f"{text!r} must not be negative")
    return float(value)


@dataclass(frozen=True)
class Limit:
    service: str  # hyphen form, or EVERY
    metric: Figure
    value: float


def parse_limit(metric: Figure, spec: str) -> Limit:
    """``proxy-access-control=50ms`` or ``50ms``."""
    service, sep, value = spec.rpartition("=")
    if sep and not service.strip():
        raise SpecError(f"{metric.check} {spec!r}: the service before '=' is empty")
    try:
        number = parse_value(metric, value)
    except SpecError as exc:
        raise SpecError(f"{metric.check} {spec!r}: {exc}") from None
    return Limit(keys.hyphen(service.strip()) if sep else EVERY, metric, number)


def show(metric: Figure, value: float | None) -> str:
    if value is None:
        return "NA"
    if metric.unit is MS:
        return f"{value:.2f} ms"
    if metric.unit is FRACTION:
        return f"{100 * value:.2f}%"
    if metric.unit is COUNT:
        return f"{value:.0f}"
    return f"{value:.2f}"


@dataclass(frozen=True)
class Outcome:
    service: str
    check: str
    limit: str
    actual: str
    result: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def evaluate(
    limits: Sequence[Limit], rows: Sequence[Mapping[str, Any]], window: bool = False, allow_missing: bool = False
) -> list[Outcome]:
    """Each limit against the services' figures (``response_times`` of the stats JSON); a limit
    for every service is checked once per tracked service."""
    by_name = {keys.hyphen(str(r["name"])): (r.get("window") or {}) if window else r for r in rows}
    outcomes = []
    for limit in limits:
        services = sorted(by_name) if limit.service == EVERY else [limit.service]
        bound = "≤" if limit.metric.bound == "max" else "≥"
        wanted = f"{bound} {show(limit.metric, limit.value)}"
        if limit.service == EVERY and not services:
            outcomes.append(Outcome("(every service)", _name(limit.metric), wanted, "NA",
                                    SKIPPED if allow_missing else NO_DATA))  # fmt: skip
        for service in services:
            figures = by_name.get(service)
            actual = _number(figures.get(limit.metric.json)) if figures is not None else None
            if actual is None:
                result = SKIPPED if allow_missing else NO_DATA
            elif limit.metric.bound == "max":
                result = PASS if actual <= limit.value else FAIL
            else:
                result = PASS if actual >= limit.value else FAIL
            outcomes.append(Outcome(service, _name(limit.metric), wanted, show(limit.metric, actual), result))
    order = {_name(m): i for i, m in enumerate(METRICS)}
    return sorted(outcomes, key=lambda o: (o.service, order[o.check]))


def _name(metric: Figure) -> str:
    return metric.label.lower()


def failed(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.result in (FAIL, NO_DATA)]


def table(outcomes: Sequence[Outcome]) -> str:
    head = ("SERVICE", "CHECK", "LIMIT", "ACTUAL", "RESULT")
    rows = [head] + [(o.service, o.check, o.limit, o.actual, o.result) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
