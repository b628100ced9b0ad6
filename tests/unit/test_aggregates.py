"""Mergeable aggregates and the quantile sketch's stated error."""

from __future__ import annotations

import random

import pytest

from jobs.aggregates import RELATIVE_ACCURACY, Aggregate, SlidingExtremes, bin_of, merged, quantile


def aggregate_of(durations: list[int]) -> Aggregate:
    agg = Aggregate()
    for d in durations:
        bins: dict[int, int] = {bin_of(d): 1}
        agg.add(Aggregate(count=1, sum_us=d, min_us=d, max_us=d, first_us=0, last_us=0, bins=bins))
    return agg


def exact_quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 0.999])
def test_quantiles_are_within_the_stated_relative_error(q: float) -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 1.5)) + 1 for _ in range(20_000)]
    estimate = quantile(aggregate_of(values).bins, q)
    exact = exact_quantile(values, q)
    assert estimate is not None
    assert abs(estimate - exact) <= RELATIVE_ACCURACY * exact


def test_merging_parts_equals_aggregating_the_union() -> None:
    a, b = [120, 5000, 33], [7, 90000]
    whole = aggregate_of(a + b)
    parts = merged([aggregate_of(a), aggregate_of(b)])
    assert (parts.count, parts.sum_us, parts.min_us, parts.max_us, parts.bins) == (
        5,
        95160,
        7,
        90000,
        whole.bins,
    )


def test_a_grown_bucket_replaces_its_old_contribution() -> None:
    old, grown = aggregate_of([1000]), aggregate_of([1000, 3000])
    old.request_bytes, grown.request_bytes, grown.response_bytes = 300, 700, 9000
    total = merged([aggregate_of([10, 20]), old])
    total.subtract(old)
    total.add(grown)
    expected = aggregate_of([10, 20, 1000, 3000])
    assert (total.request_bytes, total.response_bytes) == (700, 9000)
    assert (total.count, total.sum_us, total.min_us, total.max_us, total.bins) == (
        expected.count,
        expected.sum_us,
        10,
        3000,
        expected.bins,
    )


def test_a_quantile_never_lies_beyond_the_exact_min_and_max() -> None:
    agg = aggregate_of([2020, 5000, 8000])  # their bins read as 2,018.7, 4,965.3 and 8,024.5 µs
    assert [agg.quantile_us(q) for q in (0.0, 0.5, 1.0)] == [2020, quantile(agg.bins, 0.5), 8000]
    assert round(quantile(agg.bins, 0.0) or 0, 1) == 2018.7 and round(quantile(agg.bins, 1.0) or 0, 1) == 8024.5
    assert Aggregate().quantile_us(0.5) is None


def test_an_empty_sketch_has_no_quantile() -> None:
    assert quantile({}, 0.5) is None
    assert quantile(aggregate_of([0]).bins, 0.5) == 0.0


def test_sliding_extremes_are_the_exact_min_and_max_of_the_buckets_still_retained() -> None:
    rng = random.Random(11)
    data: dict[int, list[int]] = {}
    extremes = SlidingExtremes()
    expired_before = 0
    for step in range(3000):
        if step % 50 == 49:  # the oldest buckets leave
            expired_before += 7
            extremes.expire(expired_before)
            data = {b: v for b, v in data.items() if b >= expired_before}
        else:  # new spans, mostly in new buckets, some late ones in a bucket seen before
            bucket = expired_before + rng.randrange(40)
            data.setdefault(bucket, []).extend(rng.randrange(1, 10**6) for _ in range(rng.randrange(1, 4)))
            extremes.update(bucket, min(data[bucket]), max(data[bucket]))
        retained = [v for values in data.values() for v in values]
        assert (extremes.low(), extremes.high()) == ((min(retained), max(retained)) if retained else (None, None))
    assert len(extremes.lows) + len(extremes.highs) < 40


def test_sliding_extremes_of_rising_values_keep_every_bucket_for_the_min_and_one_for_the_max() -> None:
    extremes = SlidingExtremes()
    for bucket in range(5):
        extremes.update(bucket * 10, 100 + bucket, 200 + bucket)
    assert (extremes.lows, extremes.highs) == ({0: 100, 10: 101, 20: 102, 30: 103, 40: 104}, {40: 204})
    extremes.expire(30)
    assert (extremes.low(), extremes.high()) == (103, 204)
