"""The dashboard's figures and tables, from stats the test writes: top N with "others",
percentile and error-rate bars, the user-agent share, WebGL series, alert and summary rows."""

from __future__ import annotations

from typing import Any

from dashboard import figures, views


def test_top_n_keeps_the_largest_and_sums_the_rest_into_others() -> None:
    pairs = [["/a", 5.0], ["/b", 7.0], ["/c", 1.0], ["/d", 7.0], ["/e", 2.0]]
    assert figures.top_n(pairs, 2) == (["/b", "/d", "others (3)"], [7.0, 7.0, 8.0], 3)
    assert figures.top_n(pairs, 10) == (["/b", "/d", "/a", "/e", "/c"], [7.0, 7.0, 5.0, 2.0, 1.0], 0)
    assert figures.top_n([], 3) == ([], [], 0)


def test_count_bars_are_horizontal_largest_on_top_with_a_grey_others_bar() -> None:
    fig = figures.count_bars([["/a", 5], ["/b", 7], ["/c", 1], ["/d", 2]], "Per URL Counts", "URLs", 2)
    bar = fig["data"][0]
    assert (bar["type"], bar["orientation"]) == ("bar", "h")
    assert bar["y"] == ["others (2)", "/a", "/b"]
    assert bar["x"] == [3.0, 5.0, 7.0]
    assert bar["marker"]["color"] == ["#9ca3af", "#4c78a8", "#4c78a8"]
    assert bar["text"] == ["3 spans in 2 more", "", ""]
    assert "range" not in fig["layout"]["xaxis"]


def test_an_others_bar_that_dwarfs_the_top_runs_off_the_axis_with_its_value_written() -> None:
    pairs = [[f"/u{i}", 10.0] for i in range(100)] + [["/top", 40.0]]
    fig = figures.count_bars(pairs, "Per URL Counts", "URLs", 3)
    bar = fig["data"][0]
    assert bar["y"][0] == "others (98)" and bar["x"][0] == 980.0
    assert bar["text"][0] == "980 spans in 98 more ▶"
    assert fig["layout"]["xaxis"]["range"] == [0, 40.0 * 1.15]


def test_long_labels_are_shortened_on_the_axis_and_whole_in_the_hover() -> None:
    url = "http://proxy-access-control.default.svc.cluster.local:9180/a/very/long/path"
    fig = figures.count_bars([[url, 3]], "t", "URLs", 5)
    assert fig["data"][0]["y"] == [url]
    assert fig["layout"]["yaxis"]["ticktext"] == [url[:39] + "…"]


def test_the_user_agent_pie_shows_rounded_percentages_and_the_counts_in_the_hover() -> None:
    fig = figures.share_pie([["chrome", 1], ["safari", 2], ["curl", 1]], "User-Agent Percentage", 5)
    pie = fig["data"][0]
    assert pie["labels"] == ["safari", "chrome", "curl"]
    assert pie["values"] == [50, 25, 25]
    assert pie["customdata"] == [["safari", 2.0], ["chrome", 1.0], ["curl", 1.0]]
    assert figures.share_pie([], "t", 5)["data"] == []


ROWS: list[dict[str, Any]] = [
    {"name": "proxy-access-control", "request_count": "200", "p50": "4.00", "p90": "9.00", "p99": "60.00",
     "error_rate_4xx": "0.0100", "error_rate_5xx": "0.0200", "error_rate": "0.0300"},
    {"name": "clover-server1", "request_count": "50", "p50": "1.50", "p90": "NA", "p99": None,
     "error_rate_4xx": "0.0000", "error_rate_5xx": "0.0400", "error_rate": "0.0400"},
    {"name": "clover-server2", "request_count": "NA"},
]  # fmt: skip


def test_percentile_bars_group_p50_p90_p99_for_the_busiest_services() -> None:
    fig = figures.latency_bars(ROWS, 2)
    assert [t["name"] for t in fig["data"]] == ["p50", "p90", "p99"]
    assert [t["x"] for t in fig["data"]] == [["proxy-access-control", "clover-server1"]] * 3
    assert [t["y"] for t in fig["data"]] == [[4.0, 1.5], [9.0, None], [60.0, None]]
    assert fig["layout"]["barmode"] == "group"
    assert fig["layout"]["title"]["text"] == "Response time percentiles (ms) — 2 busiest of 3 services"


def test_error_bars_stack_4xx_and_5xx_rates_in_percent() -> None:
    fig = figures.error_bars(ROWS, 5)
    assert [(t["name"], t["y"]) for t in fig["data"]] == [("4xx", [1.0, 0.0, None]), ("5xx", [2.0, 4.0, None])]
    assert fig["layout"]["barmode"] == "stack"


def test_metric_series_share_one_webgl_plot_per_prefix_and_suffix() -> None:
    entries = [
        {"prefix": "p_", "suffix": "_s", "service": "a", "values": ["1", "2", "3"]},
        {"prefix": "p_", "suffix": "_s", "service": "b", "values": ["9"]},
        {"prefix": "p_", "suffix": "_s", "service": "c", "values": []},
        {"prefix": "q_", "suffix": "_s", "service": "a", "values": []},
    ]
    plots = figures.metric_plots(entries, 1)
    assert len(plots) == 2
    (line,) = plots[0]["data"]
    assert (line["type"], line["name"], line["x"], line["y"]) == ("scattergl", "b", [0], [9.0])
    assert plots[0]["layout"]["title"]["text"] == "p_<b>&lt;service&gt;</b>_s (1 of 2 services)"
    assert plots[1]["data"] == []


def test_the_load_test_latency_plot_has_a_series_per_label_in_webgl_when_long() -> None:
    samples = [{"label": "url1", "timestamp": 1_700_000_000_000 + i, "elapsed": i % 7} for i in range(300)]
    samples += [{"label": "url2", "timestamp": 1_700_000_000_500, "elapsed": 12}]
    fig = figures.latency_timeline(samples)
    assert [(t["name"], t["type"], len(t["y"])) for t in fig["data"]] == [("url1", "scattergl", 300),
                                                                          ("url2", "scatter", 1)]  # fmt: skip
    assert fig["data"][1]["x"] == ["2023-11-14T22:13:20.500000+00:00"]
    assert fig["data"][1]["y"] == [12]


def test_the_response_time_table_rows() -> None:
    row = {"name": "a", "request_count": "3", "min": "1.00", "avg": "NA", "max": None, "p50": "2.00", "p90": "2.50",
           "p99": "3.00", "p999": "3.10", "error_rate": "0.0125", "request_rate": "0.50",
           "source": "jaeger"}  # fmt: skip
    rows = views.response_time_rows([row])
    logs = views.Link("logs", "/logs?service=a&since=1h&format=html")
    assert rows == [["a", "3", "1.00", "—", "—", "2.00", "2.50", "3.00", "3.10", "1.25%", "0.50", "jaeger", logs]]
    assert views.RT_HEADER == ("Service", "Requests", "Min (ms)", "Avg (ms)", "Max (ms)", "p50 (ms)", "p90 (ms)",
                               "p99 (ms)", "p99.9 (ms)", "Error rate", "Req/s", "Source", "Logs")  # fmt: skip
    assert "[logs](/logs?service=a&since=1h&format=html)" in views.table(views.RT_HEADER, rows, "t").children


def test_alert_rows_read_the_alert_hash_fields() -> None:
    alert = {"event-id": "7", "event-second": "1790000000", "msg": "MALWARE-CNC User-Agent ASafaWeb Scan",
             "generator-id": "1", "signature-id": "10000003", "signature-revision": "1", "priority": "1",
             "source-ip": "10.177.0.200", "sport-itype": "40000", "destination-ip": "10.177.0.30",
             "dport-icode": "80", "blocked": "0"}  # fmt: skip
    assert views.alert_rows([alert]) == [[
        "7", "2026-09-21 14:13:20", "MALWARE-CNC User-Agent ASafaWeb Scan", "1:10000003:1", "1",
        "10.177.0.200:40000 → 10.177.0.30:80", "0",
    ]]  # fmt: skip


def test_a_details_list_is_cut_with_a_count_of_the_rest() -> None:
    pre = views.text_list([f"/u{i}" for i in range(views.DETAIL_LIMIT + 3)], "request URLs")
    assert pre.children.endswith("/u499\n… and 3 more (GET /visibility/get/stats/tracing for all)")
    assert views.text_list([], "user agents").children == "no user agents yet"


def test_a_very_long_load_test_series_is_thinned() -> None:
    samples = [{"label": "u", "timestamp": 1_700_000_000_000 + i, "elapsed": 1} for i in range(45_000)]
    fig = figures.latency_timeline(samples)
    assert len(fig["data"][0]["y"]) == 15_000  # every 3rd sample
    assert fig["layout"]["title"]["text"] == "Load test latency (ms) (every n-th sample, at most 20,000 per label)"


def test_the_ids_status_line_names_the_pid_only_while_running() -> None:
    running = {"running": True, "pid": 42, "rules_loaded": 3, "requests_inspected": 120, "alerts": 2}
    assert views.ids_status_line(running) == "running (pid 42), 3 rules loaded, 120 requests inspected, 2 alerts"
    assert views.ids_status_line({}) == "stopped, 0 rules loaded, 0 requests inspected, 0 alerts"
