"""Results: the JTL CSV, the summariser lines, and the per-label summary with exact values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validation.results import (
    JTL_COLUMNS,
    TOTAL,
    JtlCounter,
    LabelSummary,
    Sample,
    final_summary,
    format_summary,
    parse_jtl,
    parse_summariser,
    percentile,
    summarise,
    summary_csv,
    summary_json,
)

HEADER = ",".join(JTL_COLUMNS)
# The detail rows shown in the original guide.
GUIDE_ROWS = """\
1541567388622,14,url1,200,OK,ThreadGroup 1-4,text,true,,843,0,1,1,14,0,0
1541567388637,8,url2,200,OK,ThreadGroup 1-4,text,true,,843,0,1,1,8,0,0
1541567388646,6,url1,200,OK,ThreadGroup 1-4,text,true,,843,0,1,1,6,0,0
1541567388653,7,url2,200,OK,ThreadGroup 1-4,text,true,,843,0,1,1,7,0,0
1541567400622,12,url1,200,OK,ThreadGroup 1-5,text,true,,843,0,1,1,12,0,0
1541567400637,8,url2,200,OK,ThreadGroup 1-5,text,true,,843,0,1,1,8,0,0
1541567400645,7,url1,200,OK,ThreadGroup 1-5,text,true,,843,0,1,1,7,0,0
1541567400653,6,url2,200,OK,ThreadGroup 1-5,text,true,,843,0,1,1,6,0,0
"""


def jtl(rows: str) -> str:
    return HEADER + "\n" + rows


def row(ts: int, elapsed: int, label: str, success: bool = True, code: str = "200") -> str:
    return f"{ts},{elapsed},{label},{code},OK,ThreadGroup 1-1,text,{str(success).lower()},,100,50,1,1,{elapsed},0,0\n"


def test_the_guide_columns() -> None:
    assert HEADER == (
        "timeStamp,elapsed,label,responseCode,responseMessage,threadName,dataType,success,"
        "failureMessage,bytes,sentBytes,grpThreads,allThreads,Latency,IdleTime,Connect"
    )


def test_the_guide_rows_parse_to_samples() -> None:
    samples = parse_jtl(jtl(GUIDE_ROWS))
    assert len(samples) == 8
    assert samples[0] == Sample(
        timestamp=1541567388622,
        elapsed=14,
        label="url1",
        response_code="200",
        response_message="OK",
        thread_name="ThreadGroup 1-4",
        success=True,
        failure_message="",
        bytes=843,
        sent_bytes=0,
        latency=14,
        connect=0,
    )
    assert [s.label for s in samples] == ["url1", "url2"] * 4


def test_summary_of_the_guide_rows() -> None:
    rows = summarise(parse_jtl(jtl(GUIDE_ROWS)))
    # url1 elapsed 14, 6, 12, 7 from 1541567388622 to 1541567400652 (12.030 s)
    # url2 elapsed 8, 7, 8, 6 from 1541567388637 to 1541567400659 (12.022 s)
    assert rows == [
        LabelSummary("url1", 4, 0, 0.0, 4 * 1000 / 12030, 9.75, 6, 14, 7, 14, 14, 14),
        LabelSummary("url2", 4, 0, 0.0, 4 * 1000 / 12022, 7.25, 6, 8, 7, 8, 8, 8),
        LabelSummary(TOTAL, 8, 0, 0.0, 8 * 1000 / 12037, 8.5, 6, 14, 7, 14, 14, 14),
    ]


def test_errors_and_nearest_rank_percentiles() -> None:
    # label a: elapsed 1..100 ms, one sample per 10 ms; every 10th fails.
    rows = "".join(row(1_000_000 + 10 * i, i, "a", success=i % 10 != 0) for i in range(1, 101))
    rows += row(1_000_000, 500, "b", success=False, code="503")
    a, b, total = summarise(parse_jtl(jtl(rows)))
    assert a == LabelSummary("a", 100, 10, 10.0, 100 * 1000 / (1_001_100 - 1_000_010), 50.5, 1, 100, 50, 90, 99, 100)
    assert b == LabelSummary("b", 1, 1, 100.0, 1000 / 500, 500.0, 500, 500, 500, 500, 500, 500)
    assert (total.samples, total.errors, total.p50_ms, total.p99_ms, total.max_ms) == (101, 11, 51, 100, 500)
    assert total.error_percent == pytest.approx(100 * 11 / 101)


def test_percentile_is_nearest_rank() -> None:
    values = [10, 20, 30, 40]
    assert [percentile(values, p) for p in (1, 25, 26, 50, 75, 76, 99.9, 100)] == [10, 10, 20, 20, 30, 40, 40, 40]


def test_no_samples_no_rows() -> None:
    assert summarise([]) == []
    assert parse_jtl("") == []
    assert format_summary([]) == "no samples yet\n"


def test_labels_with_commas_and_quotes_survive_the_csv() -> None:
    text = jtl('1,5,"a,b ""x""",200,OK,T 1-1,text,true,,1,1,1,1,5,0,0\n')
    assert [s.label for s in parse_jtl(text)] == ['a,b "x"']


def test_a_half_written_last_row_is_skipped() -> None:
    text = jtl(row(1000, 5, "a") + "1010,7,a,200,O")
    assert [s.timestamp for s in parse_jtl(text)] == [1000]


def test_a_file_that_is_not_a_jtl_is_refused() -> None:
    with pytest.raises(ValueError) as exc:
        parse_jtl("label,other\nx,y\n")
    assert str(exc.value) == "not a JTL CSV: no timeStamp, elapsed, success column"


def test_summary_formats() -> None:
    rows = summarise(parse_jtl(jtl(GUIDE_ROWS)))
    assert format_summary(rows).splitlines() == [
        "label  samples  errors  error %     req/s     mean    min    p50    p90    p99  p99.9    max  (ms)",
        "url1         4       0    0.00%      0.33      9.8      6      7     14     14     14     14",
        "url2         4       0    0.00%      0.33      7.2      6      7      8      8      8      8",
        "TOTAL        8       0    0.00%      0.66      8.5      6      7     14     14     14     14",
    ]
    assert summary_csv(rows).splitlines()[0] == (
        "label,samples,errors,error_percent,throughput,mean_ms,min_ms,max_ms,p50_ms,p90_ms,p99_ms,p999_ms"
    )
    assert summary_csv(rows).splitlines()[3].startswith("TOTAL,8,0,0.0,")
    assert [r["label"] for r in json.loads(summary_json(rows))] == ["url1", "url2", "TOTAL"]


GUIDE_LOG = """\
2018-11-07 05:09:48,591 INFO o.a.j.r.Summariser: summary +      3 in 00:00:00 =  111.1/s Avg:     7 Min:     6 Max:     8 Err:     0 (0.00%) Active: 1 Started: 1 Finished: 0
2018-11-07 05:10:36,700 INFO o.a.j.r.Summariser: summary =     20 in 00:00:48 =    0.4/s Avg:    10 Min:     6 Max:    31 Err:     0 (0.00%)
"""  # noqa: E501


def test_summariser_lines_of_the_guide() -> None:
    first, last = parse_summariser(GUIDE_LOG)
    assert (first.kind, first.count, first.seconds, first.rate, first.avg, first.min, first.max) == (
        "+", 3, 0, 111.1, 7, 6, 8
    )  # fmt: skip
    assert last.text() == "20 in 00:00:48 = 0.4/s Avg: 10 Min: 6 Max: 31 Err: 0 (0.00%)"
    assert final_summary(GUIDE_LOG) == last
    assert final_summary("no summary here") is None


def test_jtl_counter_reads_only_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "default.jtl"
    counter = JtlCounter(path)
    assert counter.update() == (0, 0)
    path.write_text(HEADER + "\n" + row(1, 1, "a") + row(2, 1, "a", success=False) + "1,2,a")
    assert counter.update() == (2, 1)
    with open(path, "a") as f:
        f.write(",200,OK,ThreadGroup 1-1,text,true,,1,1,1,1,1,0,0\n" + row(3, 1, "b", success=False))
    assert counter.update() == (4, 2)
    assert counter.update() == (4, 2)
