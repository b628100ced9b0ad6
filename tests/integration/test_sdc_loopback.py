"""The chain as it runs without root: every pod on its own 127.x address, no namespaces.

When the suite runs as root, test_sdc_chain.py exercises namespace mode; this module starts a
second chain in loopback mode (its own subnet, stats ports and state directory, the session's
Redis and Jaeger) so both modes are covered on every run.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from clover import pods
from clover.config import Config
from sdc import grpc_client, topology
from sdc import local as sdc_local
from sdc.external_clients import ExternalClients
from stack.launcher import Launcher
from tests.waiting import wait_until

_OFFSET = int(os.environ.get("CLOVER_TEST_PORT_OFFSET", "0"))
_N = 100 + _OFFSET // 1000 % 100
PROXY_DATAPLANES = ["python"] if os.environ.get("CLOVER_SDC_DATAPLANE") == "python" else ["nginx", "python"]


@pytest.fixture(scope="module", params=PROXY_DATAPLANES, ids=lambda plane: f"proxy-{plane}")
def loopback(stack: Launcher, cfg: Config, request: pytest.FixtureRequest) -> Iterator[tuple[Config, Launcher]]:
    """The loopback chain, its proxy on nginx or on its Python relay (the load balancers on nginx)."""
    lcfg = dataclasses.replace(
        cfg,
        sdc_dataplane="auto" if request.param == "nginx" else "python",
        sdc_mode="loopback",
        sdc_subnet=f"127.178.{_N}.0/24",
        sdc_stats_port=25190 + _OFFSET,
        sdc_block_seconds=2,
        state_dir=cfg.state_dir / "sdc-loopback",
    )
    parts = sdc_local.parts(lcfg)
    launcher = Launcher(lcfg, parts, groups={sdc_local.GROUP: list(parts)}, default=list(parts))
    launcher.up([sdc_local.GROUP], fresh=True)
    yield lcfg, launcher
    launcher.down()


def proxy_url(cfg: Config, path: str = "/") -> str:
    return f"http://{topology.pod_ip(cfg, 'proxy-access-control')}:9180{path}"


def test_each_pod_has_its_own_loopback_address_and_no_namespace(loopback: tuple[Config, Launcher]) -> None:
    cfg, _ = loopback
    registered = {p.name: p for p in pods.list_pods(cfg)}
    assert sorted(registered) == sorted(topology.POD_NAMES)
    assert {name: (p.ip, p.netns, p.host_veth) for name, p in registered.items()} == {
        name: (f"127.178.{_N}.{topology.spec(name).host}", None, None) for name in topology.POD_NAMES
    }


def test_round_robin_and_forwarding_headers_through_the_loopback_chain(loopback: tuple[Config, Launcher]) -> None:
    cfg, _ = loopback
    hops: Counter[tuple[str, str]] = Counter()
    for _ in range(12):
        response = requests.get(proxy_url(cfg), timeout=10)
        assert response.status_code == 200
        hops[(response.headers["Via"].split(",")[0].split()[1], response.headers["X-Served-By"])] += 1
    assert hops == {(lb, f"clover-server{i}"): 2 for lb in ("http-lb-v1", "http-lb-v2") for i in (1, 2, 3)}

    echo = requests.get(proxy_url(cfg, "/api/echo"), timeout=10).json()
    headers = {k.lower(): v for k, v in echo["headers"]}
    proxy_ip = topology.pod_ip(cfg, "proxy-access-control")
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-for"] == f"127.0.0.1, {proxy_ip}"
    assert headers["x-forwarded-proto"] == "http"
    assert echo["client"].split(":")[0] in (topology.pod_ip(cfg, "http-lb-v1"), topology.pod_ip(cfg, "http-lb-v2"))
    # The lb names itself as Envoy names the downstream (what the server logs as source and user in the cluster).
    assert headers["x-envoy-downstream-service-cluster"] == "http-lb"
    assert topology.pod_ip(cfg, headers["x-envoy-downstream-service-node"]) == echo["client"].split(":")[0]
    assert len(headers["x-request-id"]) == 36 and headers["traceparent"].startswith("00-")
    assert headers["x-b3-traceid"] == headers["traceparent"].split("-")[1]  # B3 for Istio, W3C for the rest


def test_a_scan_from_one_loopback_client_blocks_only_that_client(loopback: tuple[Config, Launcher]) -> None:
    cfg, _ = loopback
    with ExternalClients(cfg, 2) as clients:
        scan = clients.request(0, proxy_url(cfg), headers={"User-Agent": "Mozilla/5.0 (sqlmap/1.7)"})
        assert scan.status == 200

        def blocked() -> list[str]:
            return [b["ip"] for b in grpc_client.get_config(cfg, "proxy-access-control").get("blocked", [])]

        wait_until(lambda: blocked() == [clients.ips[0]], timeout=20, interval=0.05, what="the scanner's block")
        assert clients.request(0, proxy_url(cfg)).status == 403
        assert clients.request(1, proxy_url(cfg)).status == 200
        status = wait_until(
            lambda: (s := grpc_client.snort_status(cfg))["alerts"] >= 1 and s, 10, 0.05, "the alert count"
        )
        assert status["running"] and status["rules_loaded"] == 10
        assert status["interface"] == ""  # the community rules are all HTTP rules: no packet capture


def test_the_loopback_pods_stop_and_unregister(loopback: tuple[Config, Launcher]) -> None:
    cfg, launcher = loopback
    launcher.down()
    assert pods.list_pods(cfg) == []
    assert list((cfg.state_dir / "prometheus" / "targets").glob("sdc-*.json")) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(proxy_url(cfg), timeout=3)
