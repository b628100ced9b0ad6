"""Calling the collector's gRPC control service (used by cloverctl and the controller)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from protos import collector_pb2, collector_pb2_grpc


class CollectorUnavailable(RuntimeError):
    """The collector could not be reached, or refused the request; the message says which."""


def _call(address: str, method: str, request: object, timeout: float) -> object:
    try:
        with grpc.insecure_channel(address) as channel:
            stub = collector_pb2_grpc.ControllerStub(channel)
            return getattr(stub, method)(request, timeout=timeout)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            raise CollectorUnavailable(f"invalid request: {exc.details()}") from None
        raise CollectorUnavailable(
            f"Error connecting to the collector at {address} via gRPC: {exc.code().name}"
        ) from None


def init_visibility(address: str, hosts: Iterable[str] = (), port: int = 0, timeout: float = 120) -> str:
    request = collector_pb2.ConfigCassandra(cassandra_hosts=list(hosts), cassandra_port=port)
    return str(_call(address, "InitVisibility", request, timeout).message)  # type: ignore[attr-defined]


def start_collector(
    address: str,
    *,
    t_host: str = "",
    t_port: int = 0,
    m_host: str = "",
    m_port: int = 0,
    sinterval: float = 0.0,
    t_backend: str = "",
    timeout: float = 30,
) -> str:
    request = collector_pb2.ConfigCollector(
        t_host=t_host, t_port=t_port, m_host=m_host, m_port=m_port, sinterval=sinterval, t_backend=t_backend
    )
    return str(_call(address, "StartCollector", request, timeout).message)  # type: ignore[attr-defined]


def stop_collector(address: str, timeout: float = 90) -> str:
    return str(_call(address, "StopCollector", collector_pb2.ConfigCollector(), timeout).message)  # type: ignore[attr-defined]


def truncate_visibility(address: str, tables: Iterable[str] = (), timeout: float = 300) -> str:
    request = collector_pb2.Schemas(schemas=list(tables))
    return str(_call(address, "TruncateVisibility", request, timeout).message)  # type: ignore[attr-defined]


def collector_status(address: str, timeout: float = 5) -> collector_pb2.CollectorStatus:
    result = _call(address, "Status", collector_pb2.StatusRequest(), timeout)
    assert isinstance(result, collector_pb2.CollectorStatus)
    return result
