"""Publishing records to Kafka through a bounded buffer that survives a Kafka outage.

Records wait in the buffer until Kafka acknowledges them; a failed or uncertain send keeps them
there to be sent again (at-least-once; the ingest's upserts make a repeat harmless). When the
buffer is full, ``offer`` refuses, and the caller stops pulling new data instead of dropping it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes


class KafkaPublisher:
    """A bounded, ordered buffer in front of a KafkaProducer created (and re-created) lazily."""

    def __init__(
        self,
        bootstrap: str,
        capacity: int = 200_000,
        batch: int = 5_000,
        compression: str = "lz4",
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
                linger_ms=20,
                batch_size=256 * 1024,
                max_block_ms=3000,
                request_timeout_ms=3000,
                delivery_timeout_ms=max(int(self.send_timeout_s * 1000), 3100),
                retries=3,
            )
        return self._producer

    def _drop_producer(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):  # closing a broken producer may fail; it is gone either way
                self._producer.close(timeout=1)
            self._producer = None

    def flush(self) -> int:
        """Send everything buffered; returns how many records Kafka acknowledged."""
        sent = 0
        while self._buffer:
            with self._lock:
                chunk = [self._buffer[i] for i in range(min(self.batch, len(self._buffer)))]
            try:
                producer = self._connect()
                futures = [producer.send(r.topic, key=r.key, value=r.value) for r in chunk]
                producer.flush(timeout=self.send_timeout_s)
                for future in futures:
                    future.get(timeout=0)
            except (KafkaError, OSError, AssertionError) as exc:
                self.state = "unavailable"
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Kafka unavailable, %d records kept for the next attempt: %s", len(self._buffer), exc)
                self._drop_producer()
                return sent
            with self._lock:
                for _ in chunk:
                    self._buffer.popleft()
            sent += len(chunk)
            self.published += len(chunk)
            self.state = "connected"
        return sent

    def close(self) -> None:
        self._drop_producer()
