"""The sample chain, run with `cloverctl local up sdc` beside the real stack, driven with real
requests: round-robin, live server-list changes, refusals, the IDS and the proxy's block list,
traces in Jaeger and metrics in Prometheus. Changes go through ``sdc.grpc_client`` with the original
sample yaml files: the functions cloverctl used before the controller and the controller relays
through now.

As root every pod has its own network namespace (10.177.1xx.0/24); without root, its own
loopback address (127.177.1xx.0/24). Test clients that must be told apart get addresses of
their own (``sdc.external_clients.ExternalClients``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
import pytest
import redis
import requests
import yaml
from click.testing import CliRunner

from clover import keys, pods
from clover.config import Config
from cloverctl.main import cli
from protos import nginx_pb2, nginx_pb2_grpc, snort_pb2, snort_pb2_grpc
from sdc import grpc_client, topology
from sdc.external_clients import ExternalClients
from sdc.proxy import MIRROR_BACKLOG
from stack.catalogue import local_stack
from stack.launcher import Launcher
from stack.parts import prometheus_targets_dir
from tests.waiting import wait_until

_OFFSET = int(os.environ.get("CLOVER_TEST_PORT_OFFSET", "0"))
_N = 100 + _OFFSET // 1000 % 100
_MODE = os.environ.get("CLOVER_SDC_MODE", "auto")
NETNS = _MODE == "netns" or (_MODE == "auto" and topology.netns_available())
os.environ.setdefault("CLOVER_SDC_SUBNET", f"10.177.{_N}.0/24" if NETNS else f"127.177.{_N}.0/24")
os.environ.setdefault("CLOVER_SDC_TAG", f"sdt{_N - 100}")
os.environ.setdefault("CLOVER_SDC_STATS_PORT", str(25090 + _OFFSET))
os.environ.setdefault("CLOVER_SDC_BLOCK_SECONDS", "4")

PROXY = "proxy-access-control"
_DEFAULT_PLANE = "python" if os.environ.get("CLOVER_SDC_DATAPLANE") == "python" else "nginx"
DATAPLANES = {"http-lb-v1": _DEFAULT_PLANE, "http-lb-v2": "python",
              "clover-server1": _DEFAULT_PLANE, "clover-server2": "python"}  # fmt: skip
PROXY_DATAPLANES = ["python"] if os.environ.get("CLOVER_SDC_DATAPLANE") == "python" else ["nginx", "python"]
SAMPLES = Path(__file__).resolve().parents[2] / "cloverctl" / "yaml"
SCAN_SID = "10000003"
COMMUNITY_SCAN_SID = "1900001"
_T = TypeVar("_T")


def cloverctl(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, f"cloverctl {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result.output


def sample(name: str) -> Any:
    """One of the original sample yaml files (cloverctl/yaml/), as the controller receives it."""
    return yaml.safe_load((SAMPLES / name).read_text())


def wait_for(what: str, probe: Callable[[], _T], timeout: float = 20.0, every: float = 0.05) -> _T:
    """Poll until ``probe`` returns something truthy (a deadline, not a timing assertion)."""
    return wait_until(probe, timeout, every, what)


def url(cfg: Config, pod: str = PROXY, path: str = "/") -> str:
    return f"http://{topology.pod_ip(cfg, pod)}:{topology.ports(pod)['http']}{path}"


def served_by(response: requests.Response) -> tuple[str, str]:
    """(load balancer, server) that answered, from the Via and X-Served-By headers."""
    via = response.headers["Via"]
    lb = re.search(r"1\.1 (http-lb-v\d)", via)
    assert lb, via
    return lb.group(1), response.headers["X-Served-By"]


def send(cfg: Config, n: int, path: str = "/", pod: str = PROXY) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        response = requests.get(url(cfg, pod, path), timeout=10)
        assert response.status_code == 200, response.text
        out.append(served_by(response))
    return out


def pod_status(cfg: Config, pod: str) -> dict[str, Any]:
    """A pod's /stats: its data plane, metrics and what its service adds."""
    status: dict[str, Any] = requests.get(f"http://127.0.0.1:{topology.stats_port(cfg, pod)}/stats", timeout=5).json()
    return status


def stats(cfg: Config, pod: str) -> dict[str, float]:
    metrics: dict[str, float] = pod_status(cfg, pod)["metrics"]
    return metrics


def lb_body(lb: str, servers: list[int]) -> dict[str, Any]:
    return {"lb_name": f"{lb}.default", "server_port": "9180", "server_name": lb, "lb_group": "cloverlb",
            "lb_path": "/", "lb_list": [{"url": f"clover-server{i}:9180"} for i in servers]}  # fmt: skip


def ids_settled(cfg: Config, inspected: int) -> dict[str, Any]:
    """The IDS status once it has inspected ``inspected`` requests and stored every alert."""

    def probe() -> dict[str, Any] | None:
        status = grpc_client.snort_status(cfg)
        return status if status["requests_inspected"] >= inspected and status["alerts_pending"] == 0 else None

    return wait_for(f"the IDS to inspect {inspected} requests and store its alerts", probe)


def ids_quiet(cfg: Config) -> int:
    """The IDS's inspected count once no copy is in flight and the count held over two reports."""
    seen: list[int] = []

    def probe() -> bool:
        seen.append(grpc_client.snort_status(cfg)["requests_inspected"])
        in_flight = stats(cfg, PROXY)["clover_sdc_proxy_mirrors_in_flight"]
        return len(seen) > 1 and seen[-1] == seen[-2] and in_flight == 0

    wait_for("the IDS to catch up with the proxy's copies", probe, every=0.6)
    return seen[-1]


@pytest.fixture(scope="module", params=PROXY_DATAPLANES, ids=lambda plane: f"proxy-{plane}")
def chain(stack: Launcher, cfg: Config, request: pytest.FixtureRequest) -> Iterator[Config]:
    """The chain with http-lb-v1 and clover-server1 on nginx, http-lb-v2 and clover-server2 on
    their Python data plane: each test that goes through both load balancers and the first two
    servers sees both data planes; the module runs once with the proxy on nginx and once on its
    Python relay."""
    output = cloverctl("local", "up", "sdc", "--fresh")
    assert "All parts healthy" in output
    python = local_stack(dataclasses.replace(cfg, sdc_dataplane="python"))
    restarted = ["http-lb-v2", "clover-server2"] + ([PROXY] if request.param == "python" else [])
    python.down(restarted)
    python.up(restarted)
    pod_stats = {pod: pod_status(cfg, pod) for pod in [*DATAPLANES, PROXY]}
    assert {pod: s["dataplane"] for pod, s in pod_stats.items()} == {**DATAPLANES, PROXY: request.param}
    # The restarted pods left the registry and came back. An nginx pod takes one back by a reload,
    # which closes its idle keep-alive connections: the exact connection counts below need every
    # such reload over before the first request.
    looked = {pod: s["registry_looks"] for pod, s in pod_stats.items() if s["dataplane"] == "nginx"}
    wait_for("each nginx pod to look at the registry twice after the restarts",
             lambda: all(pod_status(cfg, pod)["registry_looks"] >= n + 2 for pod, n in looked.items()))  # fmt: skip
    wait_for("the proxy to route to both load balancers", lambda: len({lb for lb, _ in send(cfg, 4)}) == 2)
    yield cfg
    if any(p.name in topology.POD_NAMES for p in stack.running()):
        stack.down(["sdc"])


@pytest.fixture(scope="module")
def store(chain: Config) -> redis.Redis:
    return redis.Redis.from_url(chain.redis_url)


def event_ids(store: redis.Redis) -> set[str]:
    return {i.decode() for i in store.smembers(keys.SNORT_EVENTS)}


def event(store: redis.Redis, event_id: str) -> dict[str, str]:
    """An alert hash; values decoded as latin-1, so binary fields keep their exact bytes."""
    return {k.decode(): v.decode("latin-1") for k, v in store.hgetall(keys.snort_event(event_id)).items()}


@pytest.fixture(scope="module")
def clients(chain: Config) -> Iterator[ExternalClients]:
    with ExternalClients(chain, 3) as c:
        yield c


def test_local_up_runs_and_registers_every_pod(chain: Config) -> None:
    registered = {p.name: p for p in pods.list_pods(chain)}
    assert sorted(registered) == sorted(topology.POD_NAMES)
    for name, pod in registered.items():
        assert pod.ip == topology.pod_ip(chain, name)
        assert pod.ports == {**topology.ports(name), "stats": topology.stats_port(chain, name)}
        assert pod.labels["app"] == topology.spec(name).service
        if NETNS:
            assert (pod.netns, pod.host_veth) == (topology.netns_name(chain, name), topology.host_veth(chain, name))
            assert Path("/sys/class/net", pod.host_veth).exists()
        else:
            assert pod.netns is None and pod.host_veth is None
        assert (prometheus_targets_dir(chain) / f"sdc-{name}.json").exists()
    assert registered["http-lb-v2"].labels == {"app": "http-lb", "version": "v2"}
    servers = [f"clover-server{i}" for i in (1, 2, 3)]
    assert pod_status(chain, "http-lb-v1")["upstreams"] == {
        f"{s}:9180": [f"{topology.pod_ip(chain, s)}:{topology.ports(s)['http']}"] for s in servers
    }
    assert pods.resolve(chain, "http-lb-v2.default") == topology.pod_ip(chain, "http-lb-v2")


def test_round_robin_over_twelve_requests_is_exact(chain: Config) -> None:
    hops = send(chain, 12)
    lbs = [lb for lb, _ in hops]
    assert lbs[0::2] == [lbs[0]] * 6 and lbs[1::2] == [lbs[1]] * 6 and set(lbs) == {"http-lb-v1", "http-lb-v2"}
    assert Counter(hops) == {(lb, f"clover-server{i}"): 2 for lb in ("http-lb-v1", "http-lb-v2") for i in (1, 2, 3)}
    for lb in ("http-lb-v1", "http-lb-v2"):
        order = [int(s[-1]) for b, s in hops if b == lb]
        assert all(order[i + 1] == order[i] % 3 + 1 for i in range(5)), order  # 1 -> 2 -> 3 -> 1
    # Keep-alive upstream: one connection from the proxy to each lb pod, from each lb to each server.
    cx_total = "envoy_cluster_outbound_9180__{}_default_svc_cluster_local_upstream_cx_total"
    assert stats(chain, PROXY)[cx_total.format("http_lb")] == 2
    for lb in ("http-lb-v1", "http-lb-v2"):
        assert [stats(chain, lb)[cx_total.format(f"clover_server{i}")] for i in (1, 2, 3)] == [1, 1, 1]


def test_set_lb_moves_v2_to_servers_4_and_5_and_leaves_v1_alone(chain: Config) -> None:
    v1_before = grpc_client.get_config(chain, "http-lb-v1")
    try:
        assert grpc_client.modify_lb(chain, sample("lbv2.yaml")) == "Modified nginx config"
        assert grpc_client.get_config(chain, "http-lb-v2")["lb"]["slb_list"] == [
            "clover-server4:9180",
            "clover-server5:9180",
        ]
        assert grpc_client.get_config(chain, "http-lb-v1") == v1_before
        hops = send(chain, 12)
        assert Counter(hops) == {
            **{("http-lb-v1", f"clover-server{i}"): 2 for i in (1, 2, 3)},
            **{("http-lb-v2", f"clover-server{i}"): 3 for i in (4, 5)},
        }
    finally:
        grpc_client.modify_lb(chain, lb_body("http-lb-v2", [1, 2, 3]))
    assert Counter(send(chain, 12)) == {
        (lb, f"clover-server{i}"): 2 for lb in ("http-lb-v1", "http-lb-v2") for i in (1, 2, 3)
    }


DEFAULT_LOCATION = {"uri_match": "/test", "directive": "try_files $uri @default1", "path": "/test"}


def default_server(server: str) -> dict[str, Any]:
    """A server's configuration as it starts (the original's default location only)."""
    return {"server_name": server, "locations": [DEFAULT_LOCATION]}


def slow_server(server: str, latency_ms: float) -> dict[str, Any]:
    slow = {"uri_match": "/slow", "latency_ms": latency_ms, "response_size": 2048}
    return {"server_name": server, "locations": [DEFAULT_LOCATION, slow]}


@pytest.mark.parametrize("lb", ["http-lb-v1", "http-lb-v2"], ids=lambda lb: DATAPLANES[lb])
def test_requests_in_flight_finish_on_their_servers_when_the_list_changes(chain: Config, lb: str) -> None:
    for i in (1, 2, 3):
        grpc_client.modify_server(chain, slow_server(f"clover-server{i}", 1500))
    results: list[tuple[int, str, int]] = []

    def call() -> None:
        response = requests.get(url(chain, lb, "/slow"), timeout=20)
        results.append((response.status_code, response.headers["X-Served-By"], len(response.content)))

    active = "envoy_cluster_inbound_9180__http_lb_default_svc_cluster_local_upstream_rq_active"
    try:
        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        wait_for(f"six requests in flight at {lb}", lambda: stats(chain, lb)[active] == 6)
        assert grpc_client.modify_lb(chain, lb_body(lb, [4, 5])) == "Modified nginx config"
        for t in threads:
            t.join()
        assert sorted(results) == sorted((200, f"clover-server{i}", 2048) for i in (1, 2, 3) for _ in range(2))
        assert [served_by(requests.get(url(chain, lb), timeout=5))[1] for _ in range(2)] == [
            "clover-server4",
            "clover-server5",
        ]
    finally:
        grpc_client.modify_lb(chain, lb_body(lb, [1, 2, 3]))
        for i in (1, 2, 3):
            grpc_client.modify_server(chain, default_server(f"clover-server{i}"))


def _raw(cfg: Config, pod: str, method: str, request: Any) -> grpc.RpcError:
    port = topology.IDS_GRPC_PORT if pod == "snort-ids" else topology.GRPC_PORT
    module = snort_pb2_grpc if pod == "snort-ids" else nginx_pb2_grpc
    with grpc.insecure_channel(f"{topology.pod_ip(cfg, pod)}:{port}") as channel, pytest.raises(grpc.RpcError) as err:
        getattr(module.ControllerStub(channel), method)(request, timeout=10)
    return err.value  # type: ignore[return-value]


def test_bad_grpc_input_is_refused_and_nothing_changes(chain: Config) -> None:
    before = {
        name: grpc_client.get_config(chain, name) for name in (PROXY, "http-lb-v1", "http-lb-v2", "clover-server1")
    }
    rules_before = grpc_client.list_rules(chain)

    err = _raw(chain, "http-lb-v2", "ModifyLB", nginx_pb2.ConfigLB(server_port="9180"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "Failed to modify nginx config: slb_list is empty: a load balancer needs at least one server (host:port)"
    )
    with pytest.raises(grpc_client.SdcError) as refused:
        grpc_client.modify_lb(chain, lb_body("http-lb-v2", [4, 9]))
    assert str(refused.value).startswith("Failed to modify nginx config: slb_list[1] clover-server9:9180: ")
    assert "neither a registered local pod or service nor a resolvable host name" in str(refused.value)
    err = _raw(chain, "http-lb-v1", "ModifyLB", nginx_pb2.ConfigLB(slb_list=["clover-server1:9180", "127.0.0.1:1"]))
    assert err.details() == "Failed to modify nginx config: slb_list[1] 127.0.0.1:1 is unreachable: Connection refused"
    err = _raw(chain, "http-lb-v1", "ModifyLB", nginx_pb2.ConfigLB(slb_list=["clover-server1"]))
    assert err.details() == "Failed to modify nginx config: slb_list[0] 'clover-server1' must look like host:port"
    err = _raw(chain, "clover-server1", "ModifyLB", nginx_pb2.ConfigLB(slb_list=["clover-server2:9180"]))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        err.details() == "Failed to modify nginx config: clover-server1 is a server; ModifyLB applies to http-lb pods"
    )

    bad_location = nginx_pb2.Location(uri_match="/x", directive="rewrite ^ /y last")
    err = _raw(chain, "clover-server1", "ModifyServer", nginx_pb2.ConfigServer(locations=[bad_location]))
    assert err.details() == (
        "Failed to modify nginx config: locations[0].directive 'rewrite ^ /y last' is not supported; "
        "use 'try_files $uri @default1' or 'return <code> [text]'"
    )
    missing = nginx_pb2.File(src_file="/var/www/html/upload/0000009999", dest_file="/var/www/html/x.png")
    err = _raw(chain, "clover-server1", "ModifyServer", nginx_pb2.ConfigServer(files=[missing]))
    assert err.details() == (
        "Failed to modify nginx config: files[0].src_file '/var/www/html/upload/0000009999' does not exist on "
        "clover-server1"
    )
    escape = nginx_pb2.File(src_file="/../../../../etc/passwd", dest_file="/x")
    err = _raw(chain, "clover-server1", "ModifyServer", nginx_pb2.ConfigServer(files=[escape]))
    assert "leaves the pod's file system" in err.details()
    err = _raw(chain, PROXY, "ModifyProxy", nginx_pb2.ConfigProxy(proxy_path="http://clover-server9:9180"))
    assert "proxy_path clover-server9:9180: " in err.details()
    err = _raw(chain, PROXY, "ModifyProxy", nginx_pb2.ConfigProxy(block_seconds=-5))
    assert err.details() == "Failed to modify nginx config: block_seconds -5 must be within 0..604800"

    err = _raw(chain, "snort-ids", "AddRules", snort_pb2.AddRule(rule='alert tcp any any -> any any (msg:"x"; '
                                                                     'pcre:"/(/"; sid:10000099;)'))  # fmt: skip
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("Failed to add to local rules: pcre '\"/(/\"' does not compile")
    err = _raw(chain, "snort-ids", "AddRules", snort_pb2.AddRule(protocol="tcp", msg="m", sid="1900001"))
    assert err.details() == (
        "Failed to add to local rules: sid 1900001 is used by the community rule 'MALWARE-CNC User-Agent ASafaWeb Scan'"
    )
    with pytest.raises(grpc_client.SdcError) as refused:
        grpc_client.add_rule(chain, sample("lbv2.yaml"))
    assert str(refused.value).startswith(
        "Invalid value in json/yaml: the rule spec: unknown field(s) lb_group, lb_list, lb_name"
    )

    after = {name: grpc_client.get_config(chain, name) for name in before}
    assert after == before
    assert grpc_client.list_rules(chain) == rules_before
    assert Counter(send(chain, 6)) == {
        (lb, f"clover-server{i}"): 1 for lb in ("http-lb-v1", "http-lb-v2") for i in (1, 2, 3)
    }


def test_an_upload_then_set_server_serves_the_file_where_server_yaml_moves_it(chain: Config) -> None:
    content = bytes(range(256)) * 40
    server = url(chain, "clover-server1")
    form = requests.get(server, timeout=5)
    assert 'action="/upload"' in form.text and form.text.count('type="file"') == 6
    uploaded = requests.post(f"{server}upload", files={"file1": ("clover.png", content, "image/png")}, timeout=10)
    assert (uploaded.status_code, uploaded.text) == (200, "Uploaded file(s) successfully")
    try:
        assert grpc_client.modify_server(chain, sample("server.yaml")) == "Modified nginx config"
        moved = requests.get(f"{server}clover/testurl/file1.png", timeout=5)
        assert (moved.status_code, moved.headers["Content-Type"], moved.content) == (200, "image/png", content)
        assert requests.get(f"{server}clover/testurl/other", timeout=5).text == form.text  # @default2 -> index
        with pytest.raises(grpc_client.SdcError) as refused:
            grpc_client.modify_server(chain, sample("server.yaml"))
        assert str(refused.value) == (
            "Failed to modify nginx config: files[0].src_file '/var/www/html/upload/0000000001' does not "
            "exist on clover-server1"
        )
    finally:
        grpc_client.modify_server(chain, default_server("clover-server1"))


@pytest.mark.parametrize("server", ["clover-server1", "clover-server2"], ids=lambda server: DATAPLANES[server])
def test_a_server_answers_alike_on_either_data_plane(chain: Config, server: str) -> None:
    def call(path: str, method: str = "GET", **kwargs: Any) -> requests.Response:
        response = requests.request(method, url(chain, server, path), timeout=10, **kwargs)
        assert response.headers["X-Served-By"] == server
        return response

    home = call("/")
    assert (home.status_code, home.headers["Content-Type"]) == (200, "text/html") and 'action="/upload"' in home.text
    catalog = call("/catalog/")
    assert catalog.text == call("/catalog/index.html").text and "<h1>Catalog</h1>" in catalog.text
    assert call("/catalog/items.json").headers["Content-Type"] == "application/json"
    missing = call("/nope.html")
    assert missing.status_code == 404 and "/nope.html was not found on this server" in missing.text
    posted = call("/about.html", "POST", data=b"x")
    assert (posted.status_code, posted.headers["Allow"], posted.text) == (405, "GET, HEAD", "405 Method Not Allowed\n")
    head = call("/about.html", "HEAD")
    assert (head.status_code, head.content, head.headers["Content-Length"]) == (
        200,
        b"",
        str(len(call("/about.html").content)),
    )
    echo = call("/api/echo?x=1", headers={"X-Clover-Client": "forged"}).json()
    client_ip = topology.gateway_ip(chain) if NETNS else "127.0.0.1"
    assert (echo["server"], echo["method"], echo["path"], echo["query"]) == (server, "GET", "/api/echo", "x=1")
    assert echo["client"].split(":")[0] == client_ip and int(echo["client"].split(":")[1]) > 0
    assert "x-clover-client" not in {k.lower() for k, _ in echo["headers"]}
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traced = call("/about.html", headers={"traceparent": f"00-{trace_id}-{parent}-01"}).headers["traceresponse"]
    assert re.fullmatch(f"00-{trace_id}-[0-9a-f]{{16}}-01", traced) and parent not in traced

    teapot = {"uri_match": "= /teapot", "directive": "return 418 short and stout"}
    made = {"uri_match": "/made", "status": 201, "response_size": 10}
    assert grpc_client.modify_server(chain, {"server_name": server, "locations": [DEFAULT_LOCATION, teapot, made]}) == (
        "Modified nginx config"
    )
    try:
        assert (call("/teapot").status_code, call("/teapot").text) == (418, "short and stout\n")
        created = call("/made/here")
        assert (created.status_code, created.content) == (201, b"clover sam")
        assert call("/test/not/there").text == home.text  # try_files $uri @default1: the site index
        assert call("/teapot/more").status_code == 404
    finally:
        grpc_client.modify_server(chain, default_server(server))


def test_modify_proxy_moves_its_upstream_and_turns_the_copy_off_and_on(chain: Config) -> None:
    inspected = ids_quiet(chain)
    try:
        body = {"proxy_path": "http://http-lb-v1:9180", "mirror_path": "off"}
        assert grpc_client.modify_proxy(chain, body) == "Modified nginx config"
        assert {lb for lb, _ in send(chain, 4)} == {"http-lb-v1"}
        assert ids_quiet(chain) == inspected  # no copies
    finally:
        grpc_client.modify_proxy(chain, {"proxy_path": "http://http-lb:9180", "mirror_path": "http://snort-ids:80"})
    assert {lb for lb, _ in send(chain, 4)} == {"http-lb-v1", "http-lb-v2"}
    ids_settled(chain, inspected + 4)
    moved = grpc_client.modify_server(chain, {"server_name": "clover-server5", "server_port": 9190})
    try:
        assert moved == "Modified nginx config"
        assert requests.get(url(chain, "clover-server5", "/about.html").replace(":9180", ":9190"), timeout=5).ok
        assert {p.name: p for p in pods.list_pods(chain)}["clover-server5"].ports["http"] == 9190  # registry follows
        with pytest.raises(requests.ConnectionError):
            requests.get(url(chain, "clover-server5"), timeout=5)
    finally:
        grpc_client.modify_server(chain, {"server_name": "clover-server5", "server_port": 9180})
    assert requests.get(url(chain, "clover-server5", "/about.html"), timeout=5).ok


def test_the_scan_rule_fires_once_per_request_then_the_proxy_blocks_that_client_until_the_timeout(
    chain: Config, store: redis.Redis, clients: ExternalClients
) -> None:
    assert grpc_client.add_rule(chain, sample("idsrule_scan.yaml")) == "Added to local rules"
    ids_quiet(chain)  # earlier tests' copies are in: the restarted engine counts only this test's
    assert re.fullmatch(r"Stopped Snort on pid: \d+, Cleared Snort logs", grpc_client.stop_snort(chain))
    assert re.fullmatch(r"Started Snort on pid: \d+", grpc_client.start_snort(chain))
    assert [r["sid"] for r in grpc_client.list_rules(chain) if r["loaded"]] == [SCAN_SID]
    before = event_ids(store)
    scanner = clients.ips[0]
    proxy = url(chain)

    def scan(i: int) -> Any:
        return clients.request(0, proxy + f"catalog/?page={i}", headers={"User-Agent": "asafaweb.com"})

    scans = [scan(0)]
    assert scans[0].status == 200  # the IDS answers after the request, like the original's post_action
    wait_for("the proxy to block the scanner", lambda: grpc_client.get_config(chain, PROXY).get("blocked"))
    scans += [scan(1), scan(2)]
    assert [a.status for a in scans] == [200, 403, 403]  # blocked requests are still copied to the IDS
    clean = [clients.request(1, proxy) for _ in range(2)]
    assert [a.status for a in clean] == [200, 200]
    ids_settled(chain, 5)

    events = [event(store, i) for i in sorted(event_ids(store) - before, key=int)]
    assert Counter(e["signature-id"] for e in events) == {SCAN_SID: 3, COMMUNITY_SCAN_SID: 3}
    trace_ids = [a.headers["traceresponse"].split("-")[1] for a in scans]
    local = [e for e in events if e["signature-id"] == SCAN_SID]
    assert sorted(e["trace-id"] for e in local) == sorted(trace_ids)  # one alert per request, each its own
    first = next(e for e in local if e["trace-id"] == trace_ids[0])
    data = first["data"]
    assert data.startswith("GET /catalog/?page=0 HTTP/1.1\r\n")
    assert "User-Agent: asafaweb.com\r\n" in data and "X-Real-IP" not in data and "Forwarded" not in data
    assert 1024 <= int(first["sport-itype"]) <= 65535
    varying = ("event-id", "sport-itype", "data", "trace-id", "event-second", "event-microsecond",
               "packet-second", "packet-microsecond", "source-ip.raw", "destination-ip.raw")  # fmt: skip
    assert {k: v for k, v in first.items() if k not in varying} == {
        "sensor-id": "0", "signature-id": SCAN_SID, "generator-id": "1", "signature-revision": "1",
        "classification-id": "0", "priority": "0", "source-ip": scanner,
        "destination-ip": topology.pod_ip(chain, PROXY), "dport-icode": "9180", "protocol": "6",
        "impact-flag": "0", "impact": "0", "blocked": "0", "mpls-label": "None", "vlan-id": "None",
        "pad2": "None", "appid": "None", "packets": "[]", "extra-data": "[]", "linktype": "None",
        "length": str(len(data.encode("latin-1"))), "msg": "MALWARE-CNC User-Agent ASafaWeb Scan",
        "classtype": "None",
    }  # fmt: skip
    assert first["event-second"] == first["packet-second"]
    assert first["source-ip.raw"].encode("latin-1") == ipaddress.IPv4Address(scanner).packed
    assert first["destination-ip.raw"].encode("latin-1") == ipaddress.IPv4Address(topology.pod_ip(chain, PROXY)).packed
    assert set(keys.SNORT_EVENT_FIELDS) | set(keys.SNORT_EVENT_EXTRA_FIELDS) == set(first)

    # Each alert reached the proxy as a gRPC call inside the scan request's own trace.
    trace = _jaeger_trace(chain, trace_ids[0], 7 + 4)
    calls = Counter(
        (trace["processes"][s["processID"]]["serviceName"], {t["key"]: t["value"] for t in s["tags"]}["span.kind"])
        for s in trace["spans"]
        if s["operationName"] == "nginx.Controller/ProcessAlerts"
    )
    assert calls == {("snort-ids", "client"): 2, (PROXY, "server"): 2}

    blocked = {b["ip"]: b for b in grpc_client.get_config(chain, PROXY).get("blocked", [])}
    assert set(blocked) == {scanner}
    assert blocked[scanner]["blocked_until"] - blocked[scanner]["blocked_at"] == chain.sdc_block_seconds
    assert blocked[scanner]["signature_id"] in (SCAN_SID, COMMUNITY_SCAN_SID)
    assert clients.request(0, proxy).status == 403
    assert clients.request(1, proxy).status == 200
    wait_for("the block to expire", lambda: clients.request(0, proxy).status == 200, timeout=20, every=0.25)
    assert grpc_client.get_config(chain, PROXY).get("blocked", []) == []

    assert grpc_client.delete_rules(chain, [SCAN_SID]) == "Deleted 1 rule(s) from local rules"
    grpc_client.stop_snort(chain)
    grpc_client.start_snort(chain)


@pytest.mark.skipif(not NETNS, reason="packet rules need root (the snort-ids pod's own interface)")
def test_icmp_and_tcp_packet_rules_alert_for_each_packet(
    chain: Config, store: redis.Redis, clients: ExternalClients
) -> None:
    ids_ip = topology.pod_ip(chain, "snort-ids")
    pinger = clients.ips[2]
    assert grpc_client.add_rule(chain, sample("idsrule_icmp.yaml")) == "Added to local rules"
    assert grpc_client.add_rule(chain, sample("idsrule_tcp.yaml")) == "Added to local rules"
    ids_quiet(chain)
    grpc_client.stop_snort(chain)
    grpc_client.start_snort(chain)
    assert grpc_client.snort_status(chain)["interface"] == "eth0"
    try:
        before = event_ids(store)
        clients.ping(2, ids_ip)
        assert clients.connect(2, ids_ip, 9) is False  # SYN in, RST out
        ok = requests.get(url(chain), timeout=5)
        assert ok.status_code == 200
        ids_settled(chain, 1)

        def settled_events() -> list[dict[str, str]] | None:
            events = [event(store, i) for i in event_ids(store) - before]
            return events if len(events) >= 5 and grpc_client.snort_status(chain)["alerts_pending"] == 0 else None

        events = wait_for("five packet and request alerts", settled_events)

        def row(e: dict[str, str]) -> tuple[str, ...]:
            sport, dport = e["sport-itype"], e["dport-icode"]
            if e["protocol"] == "6":  # the client's side of the connection has an ephemeral port
                sport, dport = ("ephemeral", dport) if e["source-ip"] == pinger else (sport, "ephemeral")
            return (e["signature-id"], e["protocol"], e["source-ip"], e["destination-ip"], sport, dport, e["linktype"])

        seen = Counter(row(e) for e in events if e["source-ip"] != topology.gateway_ip(chain))
        assert seen == {
            ("10000001", "1", pinger, ids_ip, "8", "0", "1"): 1,  # echo request
            ("10000001", "1", ids_ip, pinger, "0", "0", "1"): 1,  # echo reply
            ("10000002", "6", pinger, ids_ip, "ephemeral", "9", "1"): 1,  # SYN
            ("10000002", "6", ids_ip, pinger, "9", "ephemeral", "1"): 1,  # RST
        }
        request_alerts = [e for e in events if e["source-ip"] == topology.gateway_ip(chain)]
        assert [(e["signature-id"], e["dport-icode"], e["linktype"]) for e in request_alerts] == [
            ("10000002", "9180", "None")
        ]
        echo = next(e for e in events if e["sport-itype"] == "8")
        raw = echo["data"].encode("latin-1")
        assert raw[12:14] == b"\x08\x00" and raw[14 + 9] == 1  # Ethernet, IPv4, ICMP
        assert echo["length"] == str(len(raw))
    finally:
        grpc_client.delete_rules(chain, ["10000001", "10000002"])
        grpc_client.stop_snort(chain)
        grpc_client.start_snort(chain)
        wait_for("the proxy to unblock", lambda: not grpc_client.get_config(chain, PROXY).get("blocked"), timeout=20)


def _jaeger_trace(cfg: Config, trace_id: str, spans: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        answer = requests.get(f"{cfg.jaeger_url}/api/traces/{trace_id}", timeout=5)
        if answer.status_code != 200:
            return None
        data = answer.json().get("data") or []
        return data[0] if data and len(data[0]["spans"]) >= spans else None

    return wait_for(f"trace {trace_id} with {spans} spans in Jaeger", probe, timeout=30, every=0.25)


def _depth(sid: str, parent: dict[str, str | None]) -> int:
    depth = 1
    up = parent[sid]
    while up is not None:
        depth, up = depth + 1, parent[up]
    return depth


def test_every_request_is_one_connected_trace_through_proxy_lb_server_and_the_ids(chain: Config) -> None:
    fqdn = "default.svc.cluster.local"
    for _ in range(4):
        response = requests.get(url(chain, PROXY, "/catalog/items.json"), headers={"User-Agent": "trace-test/1"},
                                timeout=10)  # fmt: skip
        assert response.status_code == 200
        lb, server = served_by(response)
        trace_id = response.headers["traceresponse"].split("-")[1]
        trace = _jaeger_trace(chain, trace_id, 7)
        spans = {s["spanID"]: s for s in trace["spans"]}
        assert len(spans) == 7
        service = {sid: trace["processes"][s["processID"]]["serviceName"] for sid, s in spans.items()}
        tags = {sid: {t["key"]: t["value"] for t in s["tags"]} for sid, s in spans.items()}
        parent = {sid: next((r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"), None)
                  for sid, s in spans.items()}  # fmt: skip
        roots = [sid for sid, p in parent.items() if p is None]
        assert len(roots) == 1 and all(p in spans for p in parent.values() if p is not None)
        root = roots[0]

        shape = sorted((service[sid], tags[sid]["span.kind"], _depth(sid, parent)) for sid in spans)
        assert shape == sorted([
            ("proxy-access-control", "server", 1),
            ("proxy-access-control", "client", 2),
            ("http-lb", "server", 3),
            ("http-lb", "client", 4),
            (server, "server", 5),
            ("proxy-access-control", "client", 2),
            ("snort-ids", "server", 3),
        ])  # fmt: skip
        clusters = sorted(t["upstream_cluster"] for t in tags.values())
        assert clusters == sorted([
            f"inbound|9180||proxy-access-control.{fqdn}", f"outbound|9180||http-lb.{fqdn}",
            f"inbound|9180||http-lb.{fqdn}", f"outbound|9180||{server}.{fqdn}", f"inbound|9180||{server}.{fqdn}",
            f"outbound|{topology.ports('snort-ids')['http']}||snort-ids.{fqdn}",
            f"inbound|{topology.ports('snort-ids')['http']}||snort-ids.{fqdn}",
        ])  # fmt: skip
        for sid, t in tags.items():
            assert t["http.status_code"] == "200" and t["user_agent"] == "trace-test/1"
            assert t["request_size"] == "0" and t["http.url"].endswith("/catalog/items.json")
            pod = lb if service[sid] == "http-lb" else service[sid]
            assert t["node_id"] == f"sidecar~{topology.pod_ip(chain, pod)}~{pod}.default~{fqdn}"
        assert service[root] == "proxy-access-control"
        assert tags[root]["response_size"] == str(len(response.content))


def _prometheus(cfg: Config, query: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{cfg.prometheus_url}/api/v1/query", params={"query": query}, timeout=5).json()
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_every_name_set_visibility_yaml_tracks(chain: Config) -> None:
    body = sample("set_visibility.yaml")
    names = [p["prefix"] + s["name"] + x["suffix"] for s in body["services"] for p in body["metric_prefixes"]
             for x in body["metric_suffixes"]]  # fmt: skip
    send(chain, 6)
    for name in names:
        wait_for(f"{name} in Prometheus", lambda name=name: _prometheus(chain, name), timeout=30, every=0.5)
    assert _prometheus(chain, body["custom_metrics"][0]["metric"])

    inbound = "envoy_cluster_inbound_9180__clover_server1_default_svc_cluster_local_upstream_rq_2xx"
    outbound = "envoy_cluster_outbound_9180__clover_server1_default_svc_cluster_local_upstream_rq_2xx"
    served = stats(chain, "clover-server1")[inbound]
    sent = stats(chain, "http-lb-v1")[outbound] + stats(chain, "http-lb-v2")[outbound]
    assert served >= sent > 0  # the upload test also called clover-server1 directly

    def scraped() -> bool:
        result = _prometheus(chain, inbound)
        total = _prometheus(chain, f"sum({outbound})")
        return bool(result and total and float(result[0]["value"][1]) == served and float(total[0]["value"][1]) == sent)

    wait_for("Prometheus to scrape the current counts", scraped, timeout=30, every=0.5)
    labels = _prometheus(chain, inbound)[0]["metric"]
    assert (labels["pod"], labels["app"], labels["namespace"]) == ("clover-server1", "clover-server1", "default")


MIRROR_ERRORS = "clover_sdc_proxy_mirror_errors_total"
MIRROR_DROPPED = "clover_sdc_proxy_mirror_dropped_total"


def concurrent_gets(target: str, n: int, clients: int = 8) -> list[int]:
    """The statuses of ``n`` GETs sent by ``clients`` threads, each on its own keep-alive session."""
    local = threading.local()

    def get(_: int) -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        status: int = local.session.get(target, timeout=10).status_code
        return status

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(get, range(n)))


def test_every_copy_of_a_concurrent_load_reaches_the_ids(chain: Config) -> None:
    inspected = ids_quiet(chain)
    before = stats(chain, PROXY)
    assert concurrent_gets(url(chain, PROXY, "/about.html"), 300) == [200] * 300
    assert ids_quiet(chain) == inspected + 300
    after = stats(chain, PROXY)
    assert [after.get(m, 0) - before.get(m, 0) for m in (MIRROR_ERRORS, MIRROR_DROPPED)] == [0, 0]


def test_an_ids_that_stalls_holds_its_copies_and_not_the_clients(chain: Config, stack: Launcher) -> None:
    """The IDS stopped (SIGSTOP) takes no copy: one client's keep-alive requests are still answered
    one after another (each within 1.5 s; a copy waits up to 5 s for the IDS), the proxy holds
    their copies, and the IDS inspects them all once it goes on."""
    inspected = ids_quiet(chain)
    before = stats(chain, PROXY)
    ids = stack.process("snort-ids")
    assert ids is not None
    session = requests.Session()
    held = []
    ids.suspend()
    try:
        statuses = [session.get(url(chain, PROXY, "/about.html"), timeout=1.5).status_code for _ in range(10)]

        def copies_held() -> bool:
            held.append(stats(chain, PROXY)["clover_sdc_proxy_mirrors_in_flight"])
            return held[-1] == 10

        wait_for("the proxy to hold the 10 copies", copies_held, timeout=2, every=0.1)
    finally:
        ids.resume()
    assert statuses == [200] * 10
    assert ids_quiet(chain) == inspected + 10
    after = stats(chain, PROXY)
    assert [after.get(m, 0) - before.get(m, 0) for m in (MIRROR_ERRORS, MIRROR_DROPPED)] == [0, 0]


def test_with_the_ids_stopped_the_proxy_holds_a_backlog_of_copies_and_drops_the_rest(
    chain: Config, stack: Launcher
) -> None:
    """The IDS stopped: the proxy holds MIRROR_BACKLOG copies and drops (and counts) each one
    beyond, every request still answered; the IDS inspects the held ones once it goes on."""
    inspected = ids_quiet(chain)
    before = stats(chain, PROXY)
    ids = stack.process("snort-ids")
    assert ids is not None
    extra = 40
    ids.suspend()
    try:
        statuses = concurrent_gets(url(chain, PROXY, "/about.html"), MIRROR_BACKLOG + extra)
        wait_for(
            "the proxy to hold a full backlog and count the rest as dropped",
            lambda: (
                (s := stats(chain, PROXY))["clover_sdc_proxy_mirrors_in_flight"] == MIRROR_BACKLOG
                and s.get(MIRROR_DROPPED, 0) - before.get(MIRROR_DROPPED, 0) == extra
            ),
            timeout=2,
        )
    finally:
        ids.resume()
    assert statuses == [200] * (MIRROR_BACKLOG + extra)
    assert ids_quiet(chain) == inspected + MIRROR_BACKLOG
    after = stats(chain, PROXY)
    assert [after.get(m, 0) - before.get(m, 0) for m in (MIRROR_ERRORS, MIRROR_DROPPED)] == [0, extra]


def test_with_the_ids_gone_every_request_is_answered_and_each_copy_counted_as_failed(
    chain: Config, stack: Launcher
) -> None:
    ids_quiet(chain)
    stack.down(["snort-ids"])
    try:
        errors = stats(chain, PROXY).get(MIRROR_ERRORS, 0)
        assert concurrent_gets(url(chain, PROXY, "/about.html"), 40) == [200] * 40
        wait_for(
            "the proxy to count the 40 copies as failed",
            lambda: (
                (s := stats(chain, PROXY)).get(MIRROR_ERRORS, 0) == errors + 40
                and s["clover_sdc_proxy_mirrors_in_flight"] == 0
            ),
        )
    finally:
        stack.up(["snort-ids"])
    # The proxy tries the IDS again a second or two after its last failed copy.
    seen = [ids_quiet(chain)]

    def copied_again() -> bool:
        assert concurrent_gets(url(chain, PROXY, "/about.html"), 1, clients=1) == [200]
        seen.append(ids_quiet(chain))
        return seen[-1] > seen[-2]

    wait_for("a copy to reach the IDS again", copied_again, timeout=20, every=0.5)
    inspected = ids_quiet(chain)
    assert concurrent_gets(url(chain, PROXY, "/about.html"), 10, clients=2) == [200] * 10
    assert ids_quiet(chain) == inspected + 10  # the proxy connects again once the IDS is back


def test_a_server_that_goes_away_is_skipped_and_its_requests_go_to_the_others(chain: Config, stack: Launcher) -> None:
    stack.down(["clover-server3"])
    try:
        # Gone from the registry (like an endpoint removed from its Service) or refusing connections
        # (then skipped for nginx's fail_timeout): either way the others answer every request.
        hops = send(chain, 6, pod="http-lb-v1")
        assert {s for _, s in hops} == {"clover-server1", "clover-server2"} and len(hops) == 6
    finally:
        stack.up(["clover-server3"])


def test_local_down_stops_every_pod_and_removes_its_traces(chain: Config, stack: Launcher) -> None:
    processes = {name: stack.process(name) for name in topology.POD_NAMES}
    output = cloverctl("local", "down", "sdc")
    assert "Stopped." in output
    assert all(stack.process(name) is None for name in topology.POD_NAMES)
    for process in processes.values():
        assert process is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            assert process.status() == psutil.STATUS_ZOMBIE  # ended; our child until reaped
    assert [p.name for p in pods.list_pods(chain) if p.name in topology.POD_NAMES] == []
    assert list(prometheus_targets_dir(chain).glob("sdc-*.json")) == []
    if NETNS:
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"{chain.sdc_tag}-" not in namespaces.replace(f"{chain.sdc_tag}-clients", "")
        assert [n for n in os.listdir("/sys/class/net") if n.startswith(f"{chain.sdc_tag}-")] in (
            [], [f"{chain.sdc_tag}-clients"],
        )  # fmt: skip
