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


def _reply(address: str, method: str, request: object, timeout: float) -> str:
    """The message of a call that returns a CollectorReply."""
    reply = _call(address, method, request, timeout)
    assert isinstance(reply, collector_pb2.CollectorReply)
    return reply.message


def init_visibility(address: str, hosts: Iterable[str] = (), port: int = 0, timeout: float = 120) -> str:
    request = collector_pb2.ConfigCassandra(cassandra_hosts=list(hosts), cassandra_port=port)
    return _reply(address, "InitVisibility", request, timeout)


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
    return _reply(address, "StartCollector", request, timeout)


def stop_collector(address: str, timeout: float = 90) -> str:
    return _reply(address, "StopCollector", collector_pb2.ConfigCollector(), timeout)


def truncate_visibility(address: str, tables: Iterable[str] = (), timeout: float = 300) -> str:
    request = collector_pb2.Schemas(schemas=list(tables))
    return _reply(address, "TruncateVisibility", request, timeout)


def collector_status(address: str, timeout: float = 5) -> collector_pb2.CollectorStatus:
    result = _call(address, "Status", collector_pb2.StatusRequest(), timeout)
    assert isinstance(result, collector_pb2.CollectorStatus)
    return result
