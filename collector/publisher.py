"""Publishing records to Kafka through a bounded buffer that survives a Kafka outage.

Records wait in the buffer until Kafka acknowledges them; ``flush`` hands back the records
Kafka acknowledged, so the caller can record them as sent. A failed or uncertain send keeps
its records there to be sent again (at-least-once; the producer is idempotent, so its own
retries add no copy, and the ingest's upserts make a repeat harmless). When the buffer is full,
``offer`` refuses, and the caller stops pulling new data instead of dropping it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka import KafkaProducer
from kafka.errors import KafkaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    # What the caller needs to know once Kafka acknowledged the record (``flush`` returns it).
    receipt: object = field(default=None, compare=False)


class KafkaPublisher:
    """A bounded, ordered buffer in front of a KafkaProducer created (and re-created) lazily."""

    def __init__(
        self,
        bootstrap: str,
        capacity: int = 200_000,
        batch: int = 5_000,
        compression: Literal["gzip", "snappy", "lz4", "zstd"] | None = "lz4",
        send_timeout_s: float = 15.0,
    ):
        self.bootstrap = bootstrap
        self.capacity = capacity
        self.batch = batch
        self.compression = compression
        self.send_timeout_s = send_timeout_s
        self._buffer: deque[Record] = deque()
        self._lock = threading.Lock()
        self._producer: Any = None
        self.state = "not connected"
        self.published = 0
        self.last_error = ""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def room(self) -> int:
        return self.capacity - len(self._buffer)

    def offer(self, records: list[Record]) -> bool:
        """Buffer all of ``records``, or none of them when they do not fit."""
        with self._lock:
            if len(records) > self.room():
                return False
            self._buffer.extend(records)
            return True

    def _connect(self) -> Any:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                compression_type=self.compression,
                acks="all",
                enable_idempotence=True,  # the producer's own retries write no second copy
                linger_ms=20,
                batch_size=256 * 1024,
                max_block_ms=3000,
                bootstrap_timeout_ms=3000,  # while Kafka is down, a cycle waits 3 s for it, not 30
                request_timeout_ms=3000,
                delivery_timeout_ms=max(int(self.send_timeout_s * 1000), 3100),
                retries=3,
            )
        return self._producer

    def _drop_producer(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):  # closing a broken producer may fail; it is gone either way
                self._producer.close(timeout=0)  # what it did not send stays buffered here
            self._producer = None

    def flush(self) -> list[Record]:
        """Send everything buffered; returns the records Kafka acknowledged, in buffer order. A
        record Kafka did not acknowledge stays buffered, in its place."""
        acked: list[Record] = []
        while self._buffer:
            with self._lock:
                chunk = [self._buffer[i] for i in range(min(self.batch, len(self._buffer)))]
            futures: list[Any] = []
            error: BaseException | None = None
            try:
                producer = self._connect()
                futures = [producer.send(r.topic, key=r.key, value=r.value) for r in chunk]
                producer.flush(timeout=self.send_timeout_s)
            except (KafkaError, OSError, AssertionError) as exc:
                error = exc
            done = [record for record, future in zip(chunk, futures, strict=False) if future.succeeded()]
            if error is None and len(done) < len(chunk):
                error = next((f.exception for f in futures if f.failed()), None) or KafkaError("no acknowledgement")
            self._forget(chunk, done)
            acked += done
            self.published += len(done)
            if error is not None:
                self.state = "unavailable"
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning("Kafka unavailable, %d records kept for the next attempt: %s", len(self._buffer), error)
                self._drop_producer()
                return acked
            self.state = "connected"
        return acked

    def _forget(self, chunk: list[Record], done: list[Record]) -> None:
        """Take the acknowledged ``done`` out of ``chunk``, the head of the buffer."""
        gone = {id(record) for record in done}
        with self._lock:
            for _ in chunk:
                self._buffer.popleft()
            self._buffer.extendleft(reversed([record for record in chunk if id(record) not in gone]))

    def close(self) -> None:
        self._drop_producer()
