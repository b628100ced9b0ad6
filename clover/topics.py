"""Kafka topic names shared by the producers (collector, clovisor) and the ingest job."""

SPANS = "clover.spans"
METRICS = "clover.metrics"
ALL = (SPANS, METRICS)
