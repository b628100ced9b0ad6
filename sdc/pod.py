"""One pod of the sample chain as a process: ``python -m sdc.pod <pod-name>``.

Start: (as root) the pod's network namespace and veth pair; the stats endpoint; the HTTP
listener and the gRPC server on the pod's address; the service's own start (the IDS engine,
the site files); then the pod is registered in the local pod registry and with Prometheus and
reports ready. SIGTERM or SIGINT: unregister, stop accepting, let requests in flight finish
(up to ``DRAIN_SECONDS``), stop the service, flush spans, and remove the namespace and veth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys

from clover import pods
from clover.config import Config, ConfigError
from clover.logs import setup_logging
from sdc import netns, nginx_control, topology
from sdc.ids.service import SnortIds
from sdc.ids.service import add_to as add_snort
from sdc.lb import LoadBalancer
from sdc.nginx_control import HttpService
from sdc.nginx_lb import NginxLoadBalancer
from sdc.nginx_proxy import NginxProxy
from sdc.nginx_server import NginxServer
from sdc.proxy import Proxy
from sdc.runtime import Runtime, run_loop
from sdc.server import Server
from sdc.waf.service import ModSecurityCrs
from stack.parts import prometheus_targets_dir

log = logging.getLogger("sdc.pod")

DRAIN_SECONDS = 5.0
FORWARDING_CHECK_SECONDS = 1.0


async def keep_forwarding(runtime: Runtime) -> None:
    """Re-enable the pod's veth forwarding whenever something on the host turned it off."""
    assert runtime.host_veth is not None
    while True:
        await asyncio.sleep(FORWARDING_CHECK_SECONDS)
        try:
            if netns.restore_forwarding(runtime.host_veth):
                restored = "clover_sdc_forwarding_restored_total"
                runtime.registry.inc(restored, help="Times the veth's forwarding was turned back on")
                log.warning("forwarding on %s was turned off (net.ipv4.ip_forward changed?); turned it back on",
                            runtime.host_veth)  # fmt: skip
        except OSError as exc:
            log.warning("cannot check forwarding on %s: %s", runtime.host_veth, exc)


def build(runtime: Runtime) -> HttpService | SnortIds | ModSecurityCrs:
    kind = runtime.spec.kind
    if kind == topology.WAF:
        return ModSecurityCrs(runtime)
    if kind == topology.PROXY:
        if runtime.dataplane == "nginx":
            return NginxProxy(runtime)
        if runtime.cfg.waf_check and runtime.cfg.sdc_dataplane != "python":
            log.info("CLOVER_WAF=on: the proxy answers with its Python data plane, not nginx "
                     "(the WAF check needs the body and the verdict before forwarding)")  # fmt: skip
        return Proxy(runtime)
    if kind == topology.LB:
        return NginxLoadBalancer(runtime) if runtime.dataplane == "nginx" else LoadBalancer(runtime)
    if kind == topology.SERVER:
        return NginxServer(runtime) if runtime.dataplane == "nginx" else Server(runtime)
    return SnortIds(runtime)


def target_file(cfg: Config, name: str) -> str:
    return str(prometheus_targets_dir(cfg) / f"sdc-{name}.json")


def write_target(runtime: Runtime) -> None:
    path = target_file(runtime.cfg, runtime.name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump([runtime.prometheus_target()], f)
    os.replace(tmp, path)


async def run(cfg: Config, name: str) -> int:
    runtime = Runtime(cfg, name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service: HttpService | SnortIds | ModSecurityCrs | None = None
    started_network = False
    watch: asyncio.Task[None] | None = None
    status = 0
    try:
        if runtime.netns and runtime.host_veth:
            netns.create_pod_network(runtime.netns, runtime.host_veth, runtime.ip, topology.gateway_ip(cfg))
            started_network = True
            watch = asyncio.create_task(keep_forwarding(runtime))
        runtime.placement.open()
        await runtime.start_stats()
        service = build(runtime)
        if isinstance(service, ModSecurityCrs):
            pass  # Apache listens itself
        elif isinstance(service, SnortIds):
            ids = service
            await service.listener.bind(runtime.ports["http"])
            await runtime.start_grpc(lambda server: add_snort(server, ids), runtime.ports["grpc"])
        else:
            http = service
            await service.listener.bind(runtime.ports["http"])
            await runtime.start_grpc(lambda server: nginx_control.add_to(server, http), runtime.ports["grpc"])
        await service.start()
        pods.register(cfg, runtime.local_pod())
        write_target(runtime)
        runtime.ready = True
        where = f"namespace {runtime.netns} (veth {runtime.host_veth})" if runtime.netns else runtime.mode
        log.info("%s ready on %s: http %s, grpc %s, stats %s:%s, %s", name, runtime.ip, runtime.ports["http"],
                 runtime.ports.get("grpc", "-"), topology.stats_host(cfg), runtime.stats_port, where)  # fmt: skip
        await stop.wait()
        log.info("%s stopping", name)
    except Exception as exc:
        log.error("%s failed: %s", name, exc, exc_info=not isinstance(exc, (OSError, netns.NetnsError)))
        status = 1
    finally:
        runtime.ready = False
        if watch is not None:
            watch.cancel()
        pods.unregister(cfg, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target_file(cfg, name))
        if service is not None and not isinstance(service, ModSecurityCrs):
            await service.listener.close(DRAIN_SECONDS)
        if runtime.grpc_server is not None:
            await runtime.grpc_server.stop(2.0)
        if service is not None:
            with contextlib.suppress(Exception):
                await service.stop()
        await runtime.close_stats()
        await asyncio.to_thread(runtime.telemetry.shutdown)
        runtime.access_log.close()
        runtime.placement.close()
        if started_network and runtime.netns and runtime.host_veth:
            netns.delete_pod_network(runtime.netns, runtime.host_veth)
        log.info("%s stopped", name)
    return status


# How long the event loop may wait for the GIL while the span exporter's thread encodes a batch
# (Python's default is 5 ms: a request's p99 at full tracing was 7-10 ms on one server alone).
GIL_SWITCH_SECONDS = 0.0005


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one pod of Clover's sample chain.")
    parser.add_argument("pod", choices=topology.POD_NAMES)
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration: {exc}")
    sys.exit(run_loop(run(cfg, args.pod)))


if __name__ == "__main__":
    main()
