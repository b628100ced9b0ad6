"""Partial aggregates of spans that merge exactly: counts, sums, min, max and a quantile sketch.

The sketch is a logarithmic histogram (the DDSketch idea): a duration d > 0 µs falls in bin
``ceil(log(d) / log(GAMMA))`` and every value in a bin lies within ``RELATIVE_ACCURACY`` of the
bin's representative value, so a quantile read from merged bins is within 1% of the exact
quantile's value. Merging is adding bin counts; the same holds for the counts and sums, so
aggregates of time buckets add up to the aggregate of their union, and a bucket recomputed
with more spans replaces its old contribution by subtraction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)
ZERO_BIN = -(2**31)  # durations of 0 µs


def bin_of(duration_us: int) -> int:
    """The sketch bin of a duration (µs)."""
    if duration_us <= 0:
        return ZERO_BIN
    return math.ceil(math.log(duration_us) / LOG_GAMMA)


def bin_value(index: int) -> float:
    """The representative duration (µs) of a bin: within RELATIVE_ACCURACY of all its values."""
    if index == ZERO_BIN:
        return 0.0
    return 2 * GAMMA**index / (GAMMA + 1)


def quantile(bins: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of the durations in ``bins`` (µs), or None for an empty sketch.

    Uses the lower nearest rank: the value at 0-based rank floor(q * (n - 1))."""
    total = sum(bins.values())
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen > rank:
            return bin_value(index)
    return bin_value(max(bins))


@dataclass
class Aggregate:
    """What a group of spans adds up to. Durations and times in µs."""

    count: int = 0
    errors: int = 0  # HTTP status >= 400 or a gRPC status other than OK
    sum_us: int = 0
    min_us: int | None = None
    max_us: int | None = None
    n4xx: int = 0
    n5xx: int = 0
    request_bytes: int = 0  # the requests' sizes (bytes), as the source measured them
    response_bytes: int = 0
    first_us: int | None = None
    last_us: int | None = None
    bins: dict[int, int] = field(default_factory=dict)

    def add(self, other: Aggregate) -> None:
        """Merge ``other`` into this aggregate."""
        self.count += other.count
        self.errors += other.errors
        self.sum_us += other.sum_us
        self.n4xx += other.n4xx
        self.n5xx += other.n5xx
        self.request_bytes += other.request_bytes
        self.response_bytes += other.response_bytes
        self.min_us = _pick(min, self.min_us, other.min_us)
        self.max_us = _pick(max, self.max_us, other.max_us)
        self.first_us = _pick(min, self.first_us, other.first_us)
        self.last_us = _pick(max, self.last_us, other.last_us)
        for index, n in other.bins.items():
            self.bins[index] = self.bins.get(index, 0) + n

    def subtract(self, old: Aggregate) -> None:
        """Remove an earlier contribution ``old`` that is wholly contained in this aggregate.

        Counts, sums and bins are exact. Min, max, first and last cannot be taken back; they
        stay as they are, which is exact when the data only grew (a bucket recomputed after
        late spans arrived contains everything it contained before)."""
        self.count -= old.count
        self.errors -= old.errors
        self.sum_us -= old.sum_us
        self.n4xx -= old.n4xx
        self.n5xx -= old.n5xx
        self.request_bytes -= old.request_bytes
        self.response_bytes -= old.response_bytes
        for index, n in old.bins.items():
            left = self.bins.get(index, 0) - n
            if left > 0:
                self.bins[index] = left
            else:
                self.bins.pop(index, None)

    def mean_us(self) -> float | None:
        return self.sum_us / self.count if self.count else None

    def quantile_us(self, q: float) -> float | None:
        """The sketch's q-quantile, kept within the exact min and max: a bin's representative value
        lies up to RELATIVE_ACCURACY beyond the durations in it (8,000 µs reads as 8,024)."""
        value = quantile(self.bins, q)
        if value is None or self.min_us is None or self.max_us is None:
            return value
        return min(max(value, self.min_us), self.max_us)


@dataclass
class SlidingExtremes:
    """The exact min and max over buckets that are recomputed (a bucket's data only grows) and
    that leave from the oldest end.

    ``lows`` keeps each bucket whose min is below the min of every later bucket (values rise
    with the bucket), so the oldest entry is the min of all, and after the oldest buckets leave
    the oldest remaining entry is the min of what remains. ``highs`` does the same for the max.
    With durations in no particular order a few entries per key remain (about the logarithm of
    the number of buckets)."""

    lows: dict[int, int] = field(default_factory=dict)
    highs: dict[int, int] = field(default_factory=dict)

    def update(self, bucket: int, low: int | None, high: int | None) -> None:
        """A bucket's current min and max (its data only grew since an earlier update)."""
        if low is not None:
            _keep_extreme(self.lows, bucket, low, lambda a, b: a <= b)
        if high is not None:
            _keep_extreme(self.highs, bucket, high, lambda a, b: a >= b)

    def expire(self, before: int) -> None:
        """Forget the buckets older than ``before``."""
        for entries in (self.lows, self.highs):
            for bucket in [b for b in entries if b < before]:
                del entries[bucket]

    def low(self) -> int | None:
        return self.lows[min(self.lows)] if self.lows else None

    def high(self) -> int | None:
        return self.highs[min(self.highs)] if self.highs else None


def _keep_extreme(entries: dict[int, int], bucket: int, value: int, beats: Callable[[int, int], bool]) -> None:
    """Add ``value`` of ``bucket`` to a monotonic set of extremes (``beats(a, b)``: a is at least
    as extreme as b)."""
    for older in [b for b, v in entries.items() if b == bucket or (b < bucket and beats(value, v))]:
        del entries[older]
    if not any(b > bucket and beats(v, value) for b, v in entries.items()):
        entries[bucket] = value


def merged(parts: Iterable[Aggregate]) -> Aggregate:
    total = Aggregate()
    for part in parts:
        total.add(part)
    return total


def _pick(choose: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return choose(a, b)
