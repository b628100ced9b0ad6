"""Readiness probes: each asks a part to do real work and raises ProbeFailed when it cannot."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

import requests


class ProbeFailed(RuntimeError):
    """The part did not answer its readiness question; the message says why."""


def redis_ping(url: str) -> None:
    """A Redis PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            if not client.ping():
                raise ProbeFailed("PING did not answer PONG")
        finally:
            client.close()
    except redis.RedisError as exc:
        raise ProbeFailed(f"PING failed: {exc}") from None


def redis_refuses_anonymous(url: str) -> None:
    """Redis turns away a client without the password (NOAUTH): a Redis started before the stack
    had a password (by an older Clover) still accepts anyone until it is restarted."""
    import redis

    parts = urlsplit(url)
    anonymous = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    client = redis.Redis.from_url(anonymous, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.AuthenticationError:
        return
    except redis.RedisError as exc:
        raise ProbeFailed(f"PING without the password failed: {exc}") from None
    finally:
        client.close()
    raise ProbeFailed(
        f"Redis on port {parts.port} answers clients without the password (it was started without one); "
        "restart it: cloverctl local down redis && cloverctl local up redis"
    )


def kafka_metadata(bootstrap: str) -> None:
    """A Kafka metadata request that lists the brokers."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    except (KafkaError, OSError, ValueError) as exc:
        raise ProbeFailed(f"metadata request failed: {exc}") from None
    try:
        cluster = admin.describe_cluster()
    except (KafkaError, OSError) as exc:
        raise ProbeFailed(f"metadata request failed: {exc}") from None
    finally:
        admin.close()
    if not cluster.get("brokers"):
        raise ProbeFailed("metadata lists no broker")


def cql_query(hosts: tuple[str, ...], port: int) -> None:
    """A CQL query against ``system.local``."""
    from cassandra.cluster import Cluster, NoHostAvailable
    from cassandra.policies import RoundRobinPolicy

    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    cluster = Cluster(
        list(hosts), port=port, connect_timeout=3, protocol_version=5, load_balancing_policy=RoundRobinPolicy()
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local", timeout=5).one()
        if row is None:
            raise ProbeFailed("system.local returned no row")
    except (NoHostAvailable, OSError) as exc:
        raise ProbeFailed(f"CQL query failed: {exc}") from None
    except Exception as exc:  # the driver raises many unrelated types while a node boots
        raise ProbeFailed(f"CQL query failed: {type(exc).__name__}: {exc}") from None
    finally:
        cluster.shutdown()


def http_ok(url: str) -> None:
    """An HTTP GET answered with 200."""
    try:
        response = requests.get(url, timeout=3)
    except requests.RequestException as exc:
        raise ProbeFailed(f"GET {url} failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise ProbeFailed(f"GET {url} answered {response.status_code}")
