"""The collector's gRPC control server (original: ``collector.Controller`` on port 50054).

It manages exactly one collection worker: starting twice leaves one worker, stopping a stopped
collector says so. InitVisibility applies ``clover/schema.cql``; TruncateVisibility truncates
the listed tables (all of the schema's when none are listed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import redis
from cassandra.cluster import Cluster

from clover import keys, schema, topics
from clover.config import Config
from clover.lease import visibility_cleared
from clover.logs import setup_logging
from collector.metrics import PrometheusSource
from collector.publisher import KafkaPublisher
from collector.sources import make_source
from collector.worker import Collector
from protos import collector_pb2, collector_pb2_grpc

log = logging.getLogger(__name__)


class InvalidRequest(ValueError):
    """A request field holds a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class WorkerSettings:
    backend: str
    trace_url: str
    prometheus_url: str
    interval_s: float


def settings_from(request: collector_pb2.ConfigCollector, cfg: Config) -> WorkerSettings:
    """The worker's settings: the request's fields where given, the configuration's otherwise."""
    backend = request.t_backend or cfg.trace_backend
    if backend not in ("jaeger", "zipkin"):
        raise InvalidRequest(f"t_backend {backend!r} must be jaeger or zipkin")
    for name in ("t_port", "m_port", "c_port"):
        port = getattr(request, name)
        if not 0 <= port < 65536:
            raise InvalidRequest(f"{name} {port} is outside 1..65535")
    if request.sinterval < 0:
        raise InvalidRequest(f"sinterval {request.sinterval} must be positive")
    if (request.t_host == "") != (request.t_port == 0):
        raise InvalidRequest("t_host and t_port must be given together")
    if (request.m_host == "") != (request.m_port == 0):
        raise InvalidRequest("m_host and m_port must be given together")
    default_trace = cfg.jaeger_url if backend == "jaeger" else cfg.zipkin_url
    return WorkerSettings(
        backend=backend,
        trace_url=f"http://{request.t_host}:{request.t_port}" if request.t_host else default_trace,
        prometheus_url=f"http://{request.m_host}:{request.m_port}" if request.m_host else cfg.prometheus_url,
        interval_s=request.sinterval or 5.0,
    )


def cassandra_session(hosts: list[str], port: int) -> tuple[Any, Any]:
    cluster = Cluster(hosts, port=port, connect_timeout=5)
    return cluster, cluster.connect()


def seed_default_tracking(store: redis.Redis) -> None:
    """Track the original's default services and metric names when nothing is configured yet."""
    if not store.exists(keys.VISIBILITY_SERVICES):
        store.sadd(keys.VISIBILITY_SERVICES, *keys.DEFAULT_SERVICES)
    if not store.exists(keys.METRIC_PREFIXES) and not store.exists(keys.METRIC_SUFFIXES):
        store.sadd(keys.METRIC_PREFIXES, *keys.DEFAULT_METRIC_PREFIXES)
        store.sadd(keys.METRIC_SUFFIXES, *keys.DEFAULT_METRIC_SUFFIXES)


class CollectorService(collector_pb2_grpc.ControllerServicer):  # type: ignore[misc]  # protoc's gRPC base is untyped
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.store = redis.Redis.from_url(cfg.redis_url, socket_timeout=10)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._collector: Collector | None = None
        self._request = collector_pb2.ConfigCollector()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def StartCollector(self, request: collector_pb2.ConfigCollector, context: Any) -> collector_pb2.CollectorReply:
        with self._lock:
            if self.running():
                self.store.set(keys.ANALYTICS_ENABLED, "1")  # a Redis that lost its data gets the flag back
                return collector_pb2.CollectorReply(message=f"Collector already running on pid: {os.getpid()}")
            try:
                settings = settings_from(request, self.cfg)
            except InvalidRequest as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            self._collector = Collector(
                store=self.store,
                source=make_source(settings.backend, settings.trace_url),
                prometheus=PrometheusSource(settings.prometheus_url),
                publisher=KafkaPublisher(self.cfg.kafka_bootstrap),
                interval_s=settings.interval_s,
            )
            self._request = request
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._collector.run, args=(self._stop,), name="collector", daemon=True
            )
            self._thread.start()
            self.store.set(keys.ANALYTICS_ENABLED, "1")
            log.info("collector started: %s", settings)
            return collector_pb2.CollectorReply(message=f"Started collector on pid: {os.getpid()}")

    def StopCollector(self, request: collector_pb2.ConfigCollector, context: Any) -> collector_pb2.CollectorReply:
        with self._lock:
            if not self.running():
                return collector_pb2.CollectorReply(message="Failed to stop collector: the collector is not running")
            self.stop_worker()
            self.store.set(keys.ANALYTICS_ENABLED, "0")
            return collector_pb2.CollectorReply(message=f"Stopped collector on pid: {os.getpid()}")

    def stop_worker(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._collector is not None:
            self._collector.publisher.close()
        self._thread = None

    def InitVisibility(self, request: collector_pb2.ConfigCassandra, context: Any) -> collector_pb2.CollectorReply:
        hosts = list(request.cassandra_hosts) or list(self.cfg.cassandra_hosts)
        port = request.cassandra_port or self.cfg.cassandra_port
        try:
            cluster, session = cassandra_session(hosts, port)
            try:
                schema.apply_schema(session, self.cfg)
            finally:
                cluster.shutdown()
            topics.ensure_topics(self.cfg.kafka_bootstrap)
            seed_default_tracking(self.store)
        except Exception as exc:  # the driver and Redis raise many types; the reply carries the reason
            log.error("InitVisibility failed: %s", exc)
            return collector_pb2.CollectorReply(message=f"Failed to initialize cassandra: {exc}")
        return collector_pb2.CollectorReply(message="Added visibility schemas in cassandra")

    def TruncateVisibility(self, request: collector_pb2.Schemas, context: Any) -> collector_pb2.CollectorReply:
        hosts = list(request.cassandra_hosts) or list(self.cfg.cassandra_hosts)
        port = request.cassandra_port or self.cfg.cassandra_port
        names = list(request.schemas) or list(schema.tables())
        try:
            # Under the visibility lease: no analytics run is reading or writing its state meanwhile.
            with visibility_cleared(self.store, keys.VISIBILITY_LEASE, keys.VISIBILITY_CLEAR_REQUESTED):
                cluster, session = cassandra_session(hosts, port)
                try:
                    schema.truncate(session, names)
                finally:
                    cluster.shutdown()
        except Exception as exc:  # unknown table, Cassandra unavailable, or the lease not free in time
            log.error("TruncateVisibility failed: %s", exc)
            return collector_pb2.CollectorReply(message=f"Failed to truncate visibility: {exc}")
        return collector_pb2.CollectorReply(message="Truncated visibility tables")

    def Status(self, request: collector_pb2.StatusRequest, context: Any) -> collector_pb2.CollectorStatus:
        status = collector_pb2.CollectorStatus(running=self.running(), config=self._request)
        if self._collector is not None:
            c = self._collector.counters
            p = self._collector.publisher
            status.cycles = c.cycles
            status.spans_published = c.spans_published
            status.metrics_published = c.metrics_published
            status.malformed_spans = c.malformed_spans
            status.duplicate_spans = c.duplicate_spans
            status.buffered_records = p.buffered
            status.kafka_state = p.state
            status.last_error = c.last_error or p.last_error
            status.last_cycle_seconds = c.last_cycle_seconds
            status.tracked_services.extend(c.tracked_services)
        return status


def start_server(cfg: Config, address: str) -> tuple[grpc.Server, CollectorService]:
    """A started gRPC server with the control service on ``address``."""
    service = CollectorService(cfg)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    collector_pb2_grpc.add_ControllerServicer_to_server(service, server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"clover-collector: cannot listen on {address}")
    server.start()
    log.info("collector gRPC server listening on %s", address)
    return server, service


def serve(cfg: Config, address: str | None = None, start: bool = False) -> None:
    """Serve until SIGTERM or SIGINT; the worker is stopped (and Kafka flushed) first."""
    server, service = start_server(cfg, address or cfg.collector_grpc)
    if start:
        service.StartCollector(collector_pb2.ConfigCollector(), None)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    log.info("stopping")
    service.stop_worker()
    server.stop(grace=5).wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Clover collector: trace backend + Prometheus -> Kafka")
    parser.add_argument("--listen", help="host:port for gRPC (default CLOVER_COLLECTOR_GRPC)")
    parser.add_argument("--start", action="store_true", help="start collecting at once with the defaults")
    args = parser.parse_args()
    setup_logging()
    serve(Config.from_env(), args.listen, args.start)


if __name__ == "__main__":
    main()
