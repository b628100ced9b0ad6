"""The published figures: one declaration, its formats, and which source a service's figures come from."""

from __future__ import annotations

import json

from clover import figures, keys
from jobs import kinds
from jobs.aggregates import Aggregate, bin_of
from jobs.publish import Window, headline_source, service_hashes


def requests(durations_us: list[int], errors: int = 0, n4xx: int = 0, first_us: int = 0) -> Aggregate:
    bins: dict[int, int] = {}
    for d in durations_us:
        bins[bin_of(d)] = bins.get(bin_of(d), 0) + 1
    return Aggregate(count=len(durations_us), errors=errors, n4xx=n4xx, sum_us=sum(durations_us),
                     min_us=min(durations_us), max_us=max(durations_us), first_us=first_us,
                     last_us=first_us + 9_000_000, bins=bins)  # fmt: skip


def test_a_period_is_published_in_the_original_formats_and_na_without_requests() -> None:
    agg = requests([1000, 2000, 3000, 4000], errors=1, n4xx=1)
    published = figures.publish(figures.Period(agg, 10.0, "jaeger"))
    assert {k: published[k] for k in ("min_rt", "avg_rt", "max_rt", "request_count", "errors", "errors_4xx")} == {
        "min_rt": "1.00", "avg_rt": "2.50", "max_rt": "4.00", "request_count": "4", "errors": "1", "errors_4xx": "1",
    }  # fmt: skip
    assert (published["error_rate"], published["request_rate"], published["source"]) == ("0.2500", "0.40", "jaeger")
    empty = figures.publish(figures.Period(Aggregate(), None, None))
    assert set(empty) == {f.field for f in figures.FIGURES}
    assert {k: v for k, v in empty.items() if v != "NA"} == {"request_count": "0", "errors": "0", "errors_4xx": "0",
                                                             "errors_5xx": "0"}  # fmt: skip
    assert figures.by_json_name({"p99_rt": "3.00"})["p99"] == "3.00"
    assert figures.BY_JSON["error_rate"].unit.show("0.0125") == "1.25%"


def test_the_source_that_saw_more_requests_wins_and_a_tie_goes_to_the_applications_tracer() -> None:
    assert headline_source({"clovisor": requests([1] * 3), "jaeger": requests([1] * 2)}) == "clovisor"
    assert headline_source({"clovisor": requests([1] * 2), "jaeger": requests([1] * 2)}) == "jaeger"
    assert headline_source({"zipkin": requests([1] * 2), "clovisor": requests([1] * 2)}) == "zipkin"
    assert headline_source({"other": requests([1] * 2), "clovisor": requests([1] * 2)}) == "clovisor"
    assert headline_source({}) is None


def test_a_service_gets_its_headline_figures_each_sources_own_and_urls_once_each() -> None:
    now_us = 1_000_000_000_000
    totals = {
        kinds.REQUESTS.key("svc", "jaeger"): requests([1000] * 4, first_us=now_us - 100_000_000),
        kinds.REQUESTS.key("svc", "clovisor"): requests([1200] * 5, first_us=now_us - 60_000_000),
        kinds.REQUESTS.key("svc-other", "jaeger"): requests([9000] * 7),
        kinds.URL_REQUESTS.key("svc", "clovisor", "/x?y=1"): requests([1200] * 5, first_us=now_us - 60_000_000),
        kinds.URL_REQUESTS.key("svc", "jaeger", "/x?y=1"): requests([1000] * 4, first_us=now_us - 100_000_000),
    }
    window = {kinds.REQUESTS.key("svc", "jaeger"): requests([1000] * 3, first_us=now_us - 100_000_000)}
    hashes = service_hashes(totals, window, Window(now_us - 300_000_000, now_us), "svc")
    assert set(hashes) == {keys.service_stats("svc"), keys.service_window("svc"), keys.url_stats("svc"),
                           keys.url_window_stats("svc")} | {
        key(svc, source) for svc in ("svc",) for source in ("jaeger", "clovisor")
        for key in (keys.service_stats, keys.service_window, keys.url_stats, keys.url_window_stats)}  # fmt: skip
    whole = hashes[keys.service_stats("svc")]
    assert (whole["request_count"], whole["source"], whole["avg_rt"]) == ("5", "clovisor", "1.20")
    assert hashes[keys.service_stats("svc", "jaeger")]["request_count"] == "4"
    assert json.loads(hashes[keys.url_stats("svc")]["/x?y=1"])["request_count"] == "5"
    # The window: only the tracer saw requests; the rate counts from the service's first request (100 s ago).
    recent = hashes[keys.service_window("svc")]
    assert (recent["request_count"], recent["source"], recent["request_rate"]) == ("3", "jaeger", "0.03")
    assert hashes[keys.service_window("svc", "clovisor")]["request_count"] == "0"
    assert Window(0, 300_000_000).seconds(None) == 300.0
    assert Window(0, 300_000_000).seconds(240_000_000) == 60.0
