"""The logging room without services: settings, the store's query text, the pods' access-log
writer and its rotation."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from clover.config import ConfigError
from clover.logs import JsonFormatter, setup_logging
from logstore.query import LogFilter, LogQueryError, entry
from logstore.settings import LogSettings
from sdc.accesslog import AccessEntry, AccessLog, open_access_log, timestamp


def make_entry(n: int) -> AccessEntry:
    """Entry ``n`` (0..899): every entry's line has the same length."""
    return AccessEntry(time=timestamp(1_765_000_000 + n / 1000), stream="clover", pod="http-lb-v1",
                       source="proxy-access-control", user="proxy-access-control", destination="http-lb",
                       responseCode=200, responseSize=100 + n, latency=1.25, method="GET", url=f"http://lb/{100 + n}",
                       userAgent="ua", traceId=f"{n:032x}", spanId=f"{n:016x}", requestId=str(100 + n))  # fmt: skip


def test_settings_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = LogSettings.from_env({"CLOVER_STATE_DIR": str(tmp_path)})
    assert (defaults.store_url, defaults.store_port, defaults.stream) == ("http://127.0.0.1:9428", 9428, "clover")
    assert defaults.access_log_dir == tmp_path / "access-logs"
    env = {"CLOVER_LOG_STORE_URL": "http://logs.example:19428/", "CLOVER_LOG_STREAM": "ci-1",
           "CLOVER_LOG_RETENTION_DAYS": "30", "CLOVER_ACCESS_LOG_MAX_BYTES": "4096"}  # fmt: skip
    custom = LogSettings.from_env(env)
    assert (custom.store_url, custom.store_port, custom.stream) == ("http://logs.example:19428", 19428, "ci-1")
    assert (custom.retention_days, custom.access_log_max_bytes) == (30, 4096)


@pytest.mark.parametrize(
    ("name", "value"),
    [("CLOVER_LOG_STORE_URL", "logs:9428"), ("CLOVER_LOG_STREAM", "Has Spaces"), ("CLOVER_LOG_RETENTION_DAYS", "0"),
     ("CLOVER_LOG_SHIPPER_METRICS_PORT", "eighty"), ("CLOVER_ACCESS_LOG_KEEP", "-1"), ("CLOVER_ACCESS_LOG", "syslog")],
)  # fmt: skip
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        LogSettings.from_env({name: value})


def test_filter_is_logsql_with_quoted_values() -> None:
    where = LogFilter(trace="a" * 32, service="http-lb", since="10m", stream="clover", user_agent='ua "1"')
    assert where.logsql() == (
        '_time:10m stream:="clover" traceId:="' + "a" * 32 + '" '
        '(destination:="http-lb" or pod:="http-lb" or source:="http-lb") userAgent:="ua \\"1\\""'
    )
    assert LogFilter().logsql() == "*"


@pytest.mark.parametrize(
    ("where", "field"),
    [(LogFilter(trace="xyz"), "trace"), (LogFilter(service="http lb"), "service"),
     (LogFilter(since="ten minutes"), "since"), (LogFilter(since="0s"), "since"),
     (LogFilter(service='a" or *'), "service")],
)  # fmt: skip
def test_bad_filters_name_their_field(where: LogFilter, field: str) -> None:
    with pytest.raises(LogQueryError) as raised:
        where.logsql()
    assert raised.value.field == field


def test_stored_rows_become_entries_with_numbers() -> None:
    row = {"_time": "2026-12-06T00:00:00Z", "pod": "p", "responseCode": "503", "responseSize": "12",
           "latency": "1.5", "log.file.name": "p.log", "_msg": "{}"}  # fmt: skip
    assert entry(row) == {"time": "2026-12-06T00:00:00Z", "pod": "p", "responseCode": 503, "responseSize": 12,
                          "latency": 1.5}  # fmt: skip


def test_an_entry_is_one_json_line_with_the_original_fields() -> None:
    line = make_entry(7).line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    fields = json.loads(line)
    assert {k: fields[k] for k in ("source", "user", "destination", "responseCode", "responseSize", "latency")} == {
        "source": "proxy-access-control", "user": "proxy-access-control", "destination": "http-lb",
        "responseCode": 200, "responseSize": 107, "latency": 1.25}  # fmt: skip
    assert (fields["traceId"], fields["spanId"], fields["time"]) == ("0" * 31 + "7", "0" * 15 + "7",
                                                                      "2025-12-06T05:46:40.007000Z")  # fmt: skip


def test_with_clover_access_log_stdout_entries_are_lines_on_stdout_each_with_its_own_id(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLOVER_ACCESS_LOG", "stdout")
    log, stream = open_access_log("http-lb-v1")
    for n in range(3):
        log.write(make_entry(n))
    written = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [e["responseSize"] for e in written] == [100, 101, 102]
    assert len({e["entryId"] for e in written}) == 3 and stream == "clover"


def test_rotation_keeps_every_line_in_order_across_generations(tmp_path: Path) -> None:
    size = len(make_entry(0).line())
    log = AccessLog(tmp_path, "http-lb-v1", max_bytes=size * 10, keep=100)
    for n in range(95):
        log.write(make_entry(n))
    log.close()
    generations = [*log.rotated(), log.path]
    assert [p.name for p in generations] == [f"http-lb-v1.log.{i}" for i in range(1, 10)] + ["http-lb-v1.log"]
    lines = [json.loads(line) for p in generations for line in p.read_text().splitlines()]
    assert [e["responseSize"] - 100 for e in lines] == list(range(95))


def test_lines_written_in_one_round_of_the_event_loop_are_written_together_after_it(tmp_path: Path) -> None:
    log = AccessLog(tmp_path, "p", max_bytes=1 << 20)

    async def run() -> tuple[str, str, str]:
        for n in range(3):
            log.write(make_entry(n))
        during = log.path.read_text()
        await asyncio.sleep(0)
        after = log.path.read_text()
        log.write(make_entry(3))
        log.close()  # before the loop's next round: close writes it
        return during, after, log.path.read_text()

    during, after, closed = asyncio.run(run())
    assert during == ""
    assert [json.loads(line)["responseSize"] - 100 for line in after.splitlines()] == [0, 1, 2]
    assert [json.loads(line)["responseSize"] - 100 for line in closed.splitlines()] == [0, 1, 2, 3]
    assert log.written == 4


def test_an_entry_with_bytes_a_client_sent_that_are_not_utf8_is_written_with_them_escaped() -> None:
    entry = make_entry(0)
    entry.userAgent = "curl \udcff"  # how aiohttp hands over a header byte that is not UTF-8
    line = entry.line()
    assert line.endswith(b"\n") and b"\\udcff" in line
    assert json.loads(line)["userAgent"] == "curl \udcff"
    plain = make_entry(1)
    assert plain.line() == (json.dumps(vars(plain), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def test_rotation_keeps_only_the_newest_generations(tmp_path: Path) -> None:
    size = len(make_entry(0).line())
    log = AccessLog(tmp_path, "p", max_bytes=size * 2, keep=3)
    for n in range(20):
        log.write(make_entry(n))
    log.close()
    assert [p.name for p in log.rotated()] == ["p.log.7", "p.log.8", "p.log.9"]


def test_a_reopened_log_appends_and_rotates_from_its_size(tmp_path: Path) -> None:
    size = len(make_entry(0).line())
    first = AccessLog(tmp_path, "p", max_bytes=size * 3)
    first.write(make_entry(0))
    first.write(make_entry(1))
    first.close()
    again = AccessLog(tmp_path, "p", max_bytes=size * 3)
    again.write(make_entry(2))
    again.write(make_entry(3))
    again.close()
    assert [len(p.read_text().splitlines()) for p in [*again.rotated(), again.path]] == [3, 1]


def test_clovers_own_logs_as_json_lines_with_levels() -> None:
    try:
        raise ValueError("bad field x")
    except ValueError:
        record = logging.LogRecord("collector", logging.WARNING, __file__, 1, "retry %d", (3,), sys.exc_info())
    record.created = 1_765_000_000.25
    entry = json.loads(JsonFormatter().format(record))
    shown = {k: entry[k] for k in ("time", "level", "logger", "message")}
    assert shown == {"time": "2025-12-06T05:46:40.250000Z", "level": "warning", "logger": "collector",
                     "message": "retry 3"}  # fmt: skip
    assert entry["error"].endswith("ValueError: bad field x")


def test_an_unknown_log_format_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOVER_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="CLOVER_LOG_FORMAT='xml' must be text or json"):
        setup_logging()
