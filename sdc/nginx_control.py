"""The ``nginx.Controller`` gRPC service every proxy, load balancer and server pod runs.

Each Modify* call is validated completely before anything changes and applied under a lock,
so concurrent calls do not interleave. A refused change answers INVALID_ARGUMENT (or
FAILED_PRECONDITION when sent to the wrong kind of pod) with "Failed to modify nginx config:
<reason naming the field>".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import grpc
from aiohttp import web

from protos import nginx_pb2, nginx_pb2_grpc
from sdc.runtime import ConfigRefused, Runtime, WrongPod

log = logging.getLogger(__name__)

MODIFIED = "Modified nginx config"
FAILED = "Failed to modify nginx config"
PROCESSED = "Processed alert"

_Req = TypeVar("_Req")


class Listener(Protocol):
    """What answers a pod's HTTP: the pod's own server (HttpListener) or nginx."""

    port: int

    async def bind(self, port: int) -> None: ...

    async def close(self, grace: float) -> None: ...


class HttpService:
    """A pod that answers HTTP on its address; subclasses implement the calls that apply."""

    kind = ""
    listener: Listener  # set by each subclass

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.lock = asyncio.Lock()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> None:
        """Called once the listeners are up."""

    async def stop(self) -> None:
        """Called after the listeners have drained."""

    def wrong_pod(self, rpc: str, applies_to: str) -> WrongPod:
        return WrongPod(f"{self.runtime.name} is a {self.kind}; {rpc} applies to {applies_to} pods")

    async def modify_proxy(self, request: nginx_pb2.ConfigProxy) -> str:
        raise self.wrong_pod("ModifyProxy", "proxy")

    async def modify_lb(self, request: nginx_pb2.ConfigLB) -> str:
        raise self.wrong_pod("ModifyLB", "http-lb")

    async def modify_server(self, request: nginx_pb2.ConfigServer) -> str:
        raise self.wrong_pod("ModifyServer", "clover-server")

    async def process_alert(self, request: nginx_pb2.AlertMessage) -> str:
        raise self.wrong_pod("ProcessAlerts", "proxy")

    def dump(self) -> nginx_pb2.ConfigDump:
        raise NotImplementedError


class NginxControl(nginx_pb2_grpc.ControllerServicer):  # type: ignore[misc]  # protoc's gRPC base is untyped
    """gRPC front of an HttpService."""

    def __init__(self, service: HttpService):
        self.service = service
        self.runtime = service.runtime

    async def _apply(
        self,
        context: grpc.aio.ServicerContext[_Req, nginx_pb2.NginxReply],
        method: str,
        fn: Callable[[_Req], Awaitable[str]],
        request: _Req,
        failed: str = FAILED,
    ) -> nginx_pb2.NginxReply:
        span = self.runtime.rpc_span(context, f"nginx.Controller/{method}")
        registry = self.runtime.registry
        try:
            async with self.service.lock:
                message = await fn(request)
        except ConfigRefused as exc:
            registry.inc("clover_sdc_config_rejected_total", help="Configuration changes refused")
            log.warning("%s refused: %s", method, exc)
            span.set_attribute("error", True)
            span.end()
            await context.abort(exc.code, f"{failed}: {exc}")
        registry.inc("clover_sdc_config_changes_total", help="Configuration changes applied")
        log.info("%s applied: %s", method, message)
        span.end()
        return nginx_pb2.NginxReply(message=message)

    async def ModifyProxy(
        self,
        request: nginx_pb2.ConfigProxy,
        context: grpc.aio.ServicerContext[nginx_pb2.ConfigProxy, nginx_pb2.NginxReply],
    ) -> nginx_pb2.NginxReply:
        return await self._apply(context, "ModifyProxy", self.service.modify_proxy, request)

    async def ModifyLB(
        self, request: nginx_pb2.ConfigLB, context: grpc.aio.ServicerContext[nginx_pb2.ConfigLB, nginx_pb2.NginxReply]
    ) -> nginx_pb2.NginxReply:
        return await self._apply(context, "ModifyLB", self.service.modify_lb, request)

    async def ModifyServer(
        self,
        request: nginx_pb2.ConfigServer,
        context: grpc.aio.ServicerContext[nginx_pb2.ConfigServer, nginx_pb2.NginxReply],
    ) -> nginx_pb2.NginxReply:
        return await self._apply(context, "ModifyServer", self.service.modify_server, request)

    async def ProcessAlerts(
        self,
        request: nginx_pb2.AlertMessage,
        context: grpc.aio.ServicerContext[nginx_pb2.AlertMessage, nginx_pb2.NginxReply],
    ) -> nginx_pb2.NginxReply:
        return await self._apply(
            context, "ProcessAlerts", self.service.process_alert, request, "Failed to process alert"
        )

    async def GetConfig(
        self,
        request: nginx_pb2.ConfigQuery,
        context: grpc.aio.ServicerContext[nginx_pb2.ConfigQuery, nginx_pb2.ConfigDump],
    ) -> nginx_pb2.ConfigDump:
        async with self.service.lock:  # a reconfiguration in progress (a reload) is answered once done
            return self.service.dump()


def add_to(server: grpc.aio.Server, service: HttpService) -> None:
    nginx_pb2_grpc.add_ControllerServicer_to_server(NginxControl(service), server)
