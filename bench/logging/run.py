"""Benchmark: access-log entries from the pods' files to searchable in the store, against the
same entries written straight to the store's bulk API.

  .venv/bin/python -m bench.logging.run [--entries 50000] [--files 9] [--rate 1000] [--seconds 5] [--down]

Runs on the benchmark stack (bench/stack_env.py: ports +20000, state in .clover-bench/), the
``logging`` group started if needed. Entries are the chain pods' own (``sdc.accesslog``), each
load with a user-agent of its own:
1. throughput — ``--entries`` entries written as fast as they go, spread over ``--files`` pod
   logs (rotating as the pods do), and the clock runs from the first write until the store
   counts them all; the baseline posts the same entries in batches of 1,000 to VictoriaLogs'
   JSON-lines bulk API (``/insert/jsonline``);
2. delay — ``--rate`` entries/s for ``--seconds``, the store's count polled every 50 ms; an
   entry's delay is the first poll that counts it (the store counts in write order, within
   one poll) less its write time; p50 and p95 for both paths.
Prints both figures per path and the ratios, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable

import requests

from bench import stack_env  # noqa: F401  (first: the benchmark stack's ports and state directory)
from logstore.local import GROUP
from logstore.query import LogFilter, LogStore
from logstore.settings import LogSettings
from sdc.accesslog import AccessEntry, AccessLog, timestamp
from stack.catalogue import local_stack
from stack.secrets import local_config

BENCH_PORTS = {"CLOVER_LOG_STORE_URL": "http://127.0.0.1:29428", "CLOVER_LOG_SHIPPER_METRICS_PORT": "28889"}
BATCH = 1000
POLL = 0.05
Writer = Callable[[list[AccessEntry]], None]


def make_entry(i: int, agent: str, stream: str, files: int, now: float) -> AccessEntry:
    return AccessEntry(time=timestamp(now), stream=stream, pod=f"bench-pod-{i % files}", source="proxy-access-control",
                       user="proxy-access-control", destination="http-lb", responseCode=200, responseSize=612,
                       latency=1.5, method="GET", url=f"http://http-lb:9180/item/{i}", userAgent=agent,
                       traceId=uuid.uuid4().hex, spanId=uuid.uuid4().hex[:16], requestId=str(i))  # fmt: skip


def make_entries(count: int, agent: str, stream: str, files: int) -> list[AccessEntry]:
    now = time.time()
    return [make_entry(i, agent, stream, files, now) for i in range(count)]


def file_writer(settings: LogSettings, files: int) -> tuple[Writer, Callable[[], None]]:
    logs = [AccessLog(settings.access_log_dir, f"bench-pod-{i}", settings.access_log_max_bytes) for i in range(files)]

    def write(batch: list[AccessEntry]) -> None:
        for entry in batch:
            logs[int(entry.pod.rsplit("-", 1)[1])].write(entry)

    def close() -> None:
        for log in logs:
            log.close()

    return write, close


def bulk_writer(settings: LogSettings) -> Writer:
    session = requests.Session()
    url = f"{settings.store_url}/insert/jsonline"
    params = {"_time_field": "time", "_stream_fields": "stream,pod", "_msg_field": "url"}

    def write(batch: list[AccessEntry]) -> None:
        for start in range(0, len(batch), BATCH):
            body = b"".join(e.line() for e in batch[start : start + BATCH])
            answer = session.post(url, params=params, data=body, timeout=30)
            answer.raise_for_status()

    return write


def count_of(store: LogStore, settings: LogSettings, agent: str) -> int:
    return sum(store.count_by("stream", LogFilter(user_agent=agent, stream=settings.stream)).values())


def wait_all(store: LogStore, settings: LogSettings, agent: str, total: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while (seen := count_of(store, settings, agent)) < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {seen} of {total} entries searchable after {timeout:.0f}s")
        time.sleep(POLL)
    return time.monotonic()


def throughput(write: Writer, store: LogStore, settings: LogSettings, count: int, files: int) -> float:
    agent = f"bench-logging/{uuid.uuid4().hex}"
    entries = make_entries(count, agent, settings.stream, files)
    start = time.monotonic()
    write(entries)
    return count / (wait_all(store, settings, agent, count) - start)


def delays(write: Writer, store: LogStore, settings: LogSettings, rate: int, seconds: float, files: int) -> list[float]:
    agent = f"bench-logging-delay/{uuid.uuid4().hex}"
    total = int(rate * seconds)
    entries = make_entries(total, agent, settings.stream, files)
    per_tick = max(1, rate // 20)
    written: list[float] = []
    polls: list[tuple[float, int]] = []
    start = time.monotonic()
    for i in range(0, total, per_tick):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        write(entries[i : i + per_tick])
        written += [time.monotonic()] * len(entries[i : i + per_tick])
        polls.append((time.monotonic(), count_of(store, settings, agent)))
    while polls[-1][1] < total:
        time.sleep(POLL)
        polls.append((time.monotonic(), count_of(store, settings, agent)))
    out = []
    for index, at in enumerate(written):
        seen_at = next(t for t, n in polls if n > index)
        out.append(max(0.0, seen_at - at))
    return out


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=9, help="pod logs the entries are spread over (the chain has 9)")
    parser.add_argument("--rate", type=int, default=1000, help="entries/s of the delay load")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--down", action="store_true", help="stop the logging group at the end")
    args = parser.parse_args()
    for name, value in BENCH_PORTS.items():
        os.environ.setdefault(name, value)
    cfg = local_config()
    settings = LogSettings.from_env(os.environ)
    stack = local_stack(cfg)
    stack.up([GROUP], progress=lambda m: print(f"[stack] {m}"))
    store = LogStore(settings.store_url)
    write, close = file_writer(settings, args.files)
    try:
        shipped = throughput(write, store, settings, args.entries, args.files)
        direct = throughput(bulk_writer(settings), store, settings, args.entries, args.files)
        shipped_delay = delays(write, store, settings, args.rate, args.seconds, args.files)
        direct_delay = delays(bulk_writer(settings), store, settings, args.rate, args.seconds, args.files)
    finally:
        close()
        if args.down:
            stack.down([GROUP])
    figures = {
        "entries": args.entries, "files": args.files, "shipper_entries_per_s": round(shipped),
        "bulk_entries_per_s": round(direct), "throughput_ratio": round(shipped / direct, 3),
        "rate": args.rate, "seconds": args.seconds,
        "shipper_delay_p50_ms": round(p(shipped_delay, 50) * 1000, 1),
        "shipper_delay_p95_ms": round(p(shipped_delay, 95) * 1000, 1),
        "bulk_delay_p50_ms": round(p(direct_delay, 50) * 1000, 1),
        "bulk_delay_p95_ms": round(p(direct_delay, 95) * 1000, 1),
    }  # fmt: skip
    print(f"files -> shipper -> store: {figures['shipper_entries_per_s']:,} entries/s; "
          f"bulk API: {figures['bulk_entries_per_s']:,} entries/s; ratio {figures['throughput_ratio']}")  # fmt: skip
    print(f"delay at {args.rate}/s: shipper p50 {figures['shipper_delay_p50_ms']} ms, "
          f"p95 {figures['shipper_delay_p95_ms']} ms; bulk API p50 {figures['bulk_delay_p50_ms']} ms, "
          f"p95 {figures['bulk_delay_p95_ms']} ms")  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
