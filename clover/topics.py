"""Kafka topic names shared by the producers (collector, clovisor) and the ingest job."""

from __future__ import annotations

import contextlib

SPANS = "clover.spans"
METRICS = "clover.metrics"
ALL = (SPANS, METRICS)
# Partitions when Clover creates the topics: spans are the bulk and are read in parallel.
PARTITIONS = {SPANS: 4, METRICS: 1}


def ensure_topics(bootstrap: str, timeout_s: float = 30.0) -> list[str]:
    """Create whichever of Clover's topics do not exist yet; returns the ones created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        missing = [t for t in ALL if t not in set(admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(t, PARTITIONS[t], 1) for t in missing])
        return missing
    finally:
        admin.close()
