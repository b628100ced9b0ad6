"""A collector process the fault tests start, stop and kill, and what reached Kafka.

``python -m tests.integration.collector_harness --listen ADDR`` runs ``collector.server`` as it is
deployed, with two changes a test may ask for: ``--overlap`` (how far before its watermark a cycle
reads again; a test cannot wait 30 s for a span to fall behind it) and ``--hold-after-ack FILE``:
once Kafka acknowledged a flush, the publisher writes the number of records acknowledged to FILE
and waits (at most ``HOLD_SECONDS``) before it returns, so before the collector records anything
in Redis; the test kills it meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from kafka import KafkaConsumer, TopicPartition

from clover import topics
from clover.config import Config
from clover.logs import setup_logging
from collector import client, server
from collector.publisher import KafkaPublisher, Record
from collector.worker import OVERLAP_SECONDS, Collector
from protos import collector_pb2, records_pb2
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
HOLD_SECONDS = 120.0


class HoldingPublisher(KafkaPublisher):
    """A publisher that stops after the first flush Kafka acknowledged, before its caller goes on."""

    def __init__(self, bootstrap: str, marker: Path):
        super().__init__(bootstrap)
        self.marker = marker

    def flush(self) -> list[Record]:
        acked = super().flush()
        if acked:
            self.marker.write_text(str(len(acked)))
            time.sleep(HOLD_SECONDS)
        return acked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--overlap", type=float, default=OVERLAP_SECONDS)
    parser.add_argument("--hold-after-ack", type=Path)
    args = parser.parse_args()
    setup_logging()
    server.Collector = functools.partial(Collector, overlap_s=args.overlap)  # type: ignore[misc]
    if args.hold_after_ack:
        server.KafkaPublisher = functools.partial(HoldingPublisher, marker=args.hold_after_ack)  # type: ignore[misc]
    server.serve(Config.from_env(), args.listen)


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class CollectorProcess:
    """One collector server process at a time, started with the collector running; stopped
    (SIGTERM) or killed (SIGKILL) by the test, and killed on leaving the ``with`` block."""

    def __init__(self, log: Path, overlap_s: float = OVERLAP_SECONDS, hold_marker: Path | None = None):
        self.log = log
        self.overlap_s = overlap_s
        self.hold_marker = hold_marker
        self.address = free_address()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.kill()

    def start(self, interval_s: float = 0.5) -> None:
        assert self.proc is None, "already running"
        argv = [sys.executable, "-u", "-m", "tests.integration.collector_harness", "--listen", self.address,
                "--overlap", str(self.overlap_s)]  # fmt: skip
        if self.hold_marker is not None:
            argv += ["--hold-after-ack", str(self.hold_marker)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._answers, 60, what=f"the collector on {self.address} (log: {self.log})")
        assert client.start_collector(self.address, sinterval=interval_s).startswith("Started collector")

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"the collector exited; see {self.log}"
        try:
            client.collector_status(self.address, timeout=2)
        except client.CollectorUnavailable:
            return False
        return True

    def status(self) -> collector_pb2.CollectorStatus:
        return client.collector_status(self.address)

    def wait_cycles(self, count: int = 2, drained: bool = True, timeout: float = 120) -> None:
        """Wait until ``count`` more cycles have completed (so at least one started after now) and,
        when ``drained``, nothing waits in the Kafka buffer."""
        target = self.status().cycles + count

        def done() -> bool:
            status = self.status()
            return status.cycles >= target and (not drained or status.buffered_records == 0)

        wait_until(done, timeout, what=f"{count} more collector cycles{' and an empty buffer' if drained else ''}")

    def stop(self) -> None:
        self._end(signal.SIGTERM, 90)

    def kill(self) -> None:
        self._end(signal.SIGKILL, 30)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # it died already
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            raise AssertionError(f"the collector did not stop on {sig.name} within {timeout:.0f}s") from None
        finally:
            self.proc = None


def kafka_mark(cfg: Config, topic: str = topics.SPANS) -> dict[TopicPartition, int]:
    """The end offsets of ``topic``'s partitions now: where reading back what follows starts."""
    topics.ensure_topics(cfg.kafka_bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        assert partitions, f"{topic} has no partitions"
        return dict(consumer.end_offsets(partitions))
    finally:
        consumer.close()


def kafka_spans(
    cfg: Config, since: dict[TopicPartition, int], trace_ids: Iterable[str], max_polls: int = 120
) -> Counter[tuple[str, str]]:
    """How often each (trace id, span id) of ``trace_ids`` was published to clover.spans after ``since``."""
    wanted = set(trace_ids)
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, enable_auto_commit=False)
    try:
        partitions = list(since)
        consumer.assign(partitions)
        end = consumer.end_offsets(partitions)
        for partition, offset in since.items():
            consumer.seek(partition, offset)
        seen: Counter[tuple[str, str]] = Counter()
        for _ in range(max_polls):
            if all(consumer.position(p) >= end[p] for p in partitions):
                return seen
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    span = records_pb2.Span.FromString(record.value)
                    if span.trace_id in wanted:
                        seen[(span.trace_id, span.span_id)] += 1
        raise AssertionError(f"clover.spans not read to its end ({end}) in {max_polls} polls")
    finally:
        consumer.close()


def exactly(idents: Iterable[tuple[str, str]], times: int = 1) -> Counter[tuple[str, str]]:
    return Counter({ident: times for ident in idents})


if __name__ == "__main__":
    main()
