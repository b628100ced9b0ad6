"""The WAF in front of the sample chain in the real local cluster, with exact values:

* ``create system gateway`` names the missing datastore (and a dry run creates nothing);
* with the datastore, ``create system gateway`` (modsecurity-crs in clover-gateway, the Secret
  clover-redis copied there) and ``create system sdc --waf`` (proxy-access-control asks
  ``modsecurity-crs.clover-gateway:80``), a normal request through the proxy's Service passes
  (200) and raises no alert; ``?id=1' OR '1'='1`` is refused with 403 and the CRS rules that
  matched (949110 deciding, anomaly mode) are in Redis (``waf_event:1``, ``waf_events``, the
  audit entry in ``waf_audit_log``); the proxy counted each check;
* modsecurity-crs scaled to 0: the proxy refuses with 403 (fail-closed), counted as an error;
* ``delete system gateway`` leaves namespace clover-gateway empty.

Needs the images (``make images``: the archives in stack/cache/images)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest
import redis
import requests

from clover import keys
from sdc.waf.check import OUTCOMES, ext_authz_metric
from stack.cluster.layout import ClusterPaths
from tests.cluster.conftest import Kubectl, Timings, load_images, routed_service
from tests.cluster.test_systems import NAMESPACE, OWN, cloverctl

DATASTORE_IMAGES = ("clover-redis", "clover-cassandra")
IMAGES = ("clover-ns-nginx-proxy", "clover-ns-nginx-lb", "clover-ns-nginx-server", "clover-ns-snort-ids",
          "clover-modsecurity-crs")  # fmt: skip
TAG = os.environ.get("CLOVER_TEST_IMAGE_TAG", "latest")
GATEWAY = "clover-gateway"
WAF = "modsecurity-crs"
PROXY = "proxy-access-control"
SQLI = "/?id=1' OR '1'='1"
# The CRS in anomaly mode, paranoia level 1: 942100 (libinjection) matched, 949110 decided (score 5), 980130 logged.
SQLI_RULES = "942100,949110,980130"
NORMAL_REQUESTS = 3
AGENT = "clover-gateway-test"
REFUSED = f"The web application firewall ({WAF}) refused this request."
UNCHECKED = f"The web application firewall ({WAF}) could not check this request."
T = TypeVar("T")


@dataclass
class Chain:
    proxy_url: str
    stats_url: str
    store: redis.Redis


def service_ip(kubectl: Kubectl, namespace: str, name: str) -> str:
    return str(kubectl.json("-n", namespace, "get", "service", name)["spec"]["clusterIP"])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60, every: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while (found := probe()) is None or found == []:
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f}s"
        time.sleep(every)
    return found


def gateway_contents(kubectl: Kubectl) -> set[str]:
    items = kubectl.json("-n", GATEWAY, "get", "all,secret,configmap,serviceaccount")["items"]
    return {f"{i['kind']}/{i['metadata']['name']}" for i in items}


@pytest.fixture(scope="module")
def loaded(kubectl: Kubectl, cluster_paths: ClusterPaths, timings: Timings) -> None:
    """The images, imported into the running cluster's containerd (``kubectl`` starts the cluster)."""
    load_images(cluster_paths, timings, DATASTORE_IMAGES)
    load_images(cluster_paths, timings, IMAGES, tag=TAG)


@pytest.fixture(scope="module")
def chain(cluster_paths: ClusterPaths, kubectl: Kubectl, loaded: None, timings: Timings) -> Iterator[Chain]:
    """The datastore, the gateway and the chain with the WAF check on; yields where to reach them."""
    try:
        started = time.monotonic()
        # Redis is what the WAF and the proxy use: Cassandra comes up in the background.
        cloverctl(cluster_paths, "create", "system", "datastore", "--no-wait")
        kubectl("-n", NAMESPACE, "rollout", "status", "deployment/redis", "--timeout=180s", timeout=200)
        timings["create system datastore (Redis ready)"] = time.monotonic() - started
        started = time.monotonic()
        done = cloverctl(cluster_paths, "create", "system", "gateway", "-t", TAG, "--timeout", "180")
        timings["create system gateway (ready)"] = time.monotonic() - started
        assert f"Secret/clover-redis copied from {NAMESPACE} into {GATEWAY}" in done.stdout
        assert f"Deployment/{WAF} ready after " in done.stdout
        started = time.monotonic()
        done = cloverctl(cluster_paths, "create", "system", "sdc", "--waf", "-t", TAG, "--timeout", "300")
        timings["create system sdc --waf (ready)"] = time.monotonic() - started
        assert (f"{PROXY} asks the WAF at {WAF}.{GATEWAY}:80 about each request (CLOVER_WAF=on, failure mode "
                "closed)") in done.stdout  # fmt: skip
        password = base64.b64decode(kubectl.json("-n", NAMESPACE, "get", "secret", "clover-redis")["data"]["password"])
        store = redis.Redis(host=service_ip(kubectl, NAMESPACE, "redis"), port=6379, password=password.decode(),
                            decode_responses=True, socket_timeout=10)  # fmt: skip
        (pod,) = kubectl.json("get", "pods", "-l", f"app={PROXY}")["items"]
        yield Chain(f"http://{routed_service(kubectl, 'default', PROXY, 9180)}",
                    f"http://{pod['status']['podIP']}:15090", store)  # fmt: skip
        store.close()
    finally:
        # Whatever the module left, also when a create or a test failed half-way: later modules start empty.
        for system in ("sdc", "gateway", "datastore"):
            cloverctl(cluster_paths, "delete", "system", system, check=False)
        kubectl("delete", "namespace", GATEWAY, "--ignore-not-found", "--wait=true", check=False, timeout=180)


def checks(chain: Chain) -> dict[str, int]:
    """The proxy's WAF check counts (ext_authz ok, denied, error, failure_mode_allowed)."""
    metrics = requests.get(f"{chain.stats_url}/stats", timeout=10).json()["metrics"]
    return {o: int(metrics.get(ext_authz_metric(PROXY, o), 0)) for o in OUTCOMES}


def through_proxy(chain: Chain, path: str) -> requests.Response:
    return requests.get(f"{chain.proxy_url}{path}", headers={"User-Agent": AGENT}, timeout=30)


def test_create_system_gateway_names_the_missing_datastore(cluster_paths: ClusterPaths, kubectl: Kubectl,
                                                          loaded: None) -> None:  # fmt: skip
    done = cloverctl(cluster_paths, "create", "system", "gateway", check=False)
    assert done.returncode == 1
    assert ("the WAF (gateway) needs, in clover-system: Service/redis (cloverctl create system datastore); "
            "Secret/clover-redis (Redis's password: cloverctl create system datastore)") in done.stderr  # fmt: skip
    dry = cloverctl(cluster_paths, "create", "system", "gateway", "--dry-run")
    assert f"(dry run: namespace {GATEWAY}" in dry.stdout  # (and clover-system, unless an earlier module made it)
    assert kubectl("get", "namespace", GATEWAY, check=False).strip() == ""


def test_a_normal_request_passes_the_waf(chain: Chain) -> None:
    assert checks(chain) == {"ok": 0, "denied": 0, "error": 0, "failure_mode_allowed": 0}
    statuses = [through_proxy(chain, "/").status_code for _ in range(NORMAL_REQUESTS)]
    assert statuses == [200] * NORMAL_REQUESTS
    assert checks(chain) == {"ok": NORMAL_REQUESTS, "denied": 0, "error": 0, "failure_mode_allowed": 0}


def test_sql_injection_is_refused_and_its_crs_rules_are_in_redis(chain: Chain) -> None:
    answer = through_proxy(chain, SQLI)
    assert answer.status_code == 403, answer.text
    assert REFUSED in answer.text
    assert checks(chain) == {"ok": NORMAL_REQUESTS, "denied": 1, "error": 0, "failure_mode_allowed": 0}
    # A fresh datastore: the first alert is 1, and the normal requests raised none.
    assert wait_for("the WAF alert in Redis", lambda: sorted(chain.store.smembers(keys.WAF_EVENTS))) == ["1"]
    event = {str(k): str(v) for k, v in chain.store.hgetall(keys.waf_event(1)).items()}
    sent = requests.Request("GET", f"{chain.proxy_url}{SQLI}").prepare().path_url
    trace_id = answer.headers["traceresponse"].split("-")[1]
    assert {k: event[k] for k in ("event-id", "rule-id", "rules", "anomaly-score", "blocked", "status", "method",
                                  "url", "user-agent", "trace-id")} == {
        "event-id": "1", "rule-id": "949110", "rules": SQLI_RULES, "anomaly-score": "5", "blocked": "1",
        "status": "403", "method": "GET", "url": sent, "user-agent": AGENT, "trace-id": trace_id,
    }  # fmt: skip
    assert event["msg"] == "Inbound Anomaly Score Exceeded (Total Score: 5)"
    (raw,) = chain.store.lrange(keys.WAF_AUDIT_LOG, 0, -1)
    entry = json.loads(raw)
    assert entry["transaction"]["transaction_id"] == event["transaction-id"]
    assert entry["request"]["request_line"] == f"GET {sent} HTTP/1.1"
    matched = [m.split('[id "', 1)[1].split('"', 1)[0] for m in entry["audit_data"]["messages"]]
    assert [m for m in dict.fromkeys(matched) if m not in ("10100", "10101")] == SQLI_RULES.split(",")
    status = chain.store.hgetall(keys.WAF_STATUS)
    assert {k: status[k] for k in ("crs_mode", "paranoia_level", "audit_entries", "alerts", "blocked")} == {
        "crs_mode": "anomaly", "paranoia_level": "1", "audit_entries": "1", "alerts": "1", "blocked": "1"}  # fmt: skip


def test_the_waf_scaled_to_zero_fails_closed(chain: Chain, kubectl: Kubectl, timings: Timings) -> None:
    kubectl("-n", GATEWAY, "scale", f"deployment/{WAF}", "--replicas=0")
    wait_for(
        "modsecurity-crs's pod gone",
        lambda: kubectl("-n", GATEWAY, "get", "pods", "-l", f"app={WAF}", "-o", "name").strip() == "" or None,
    )
    started = time.monotonic()
    answer = through_proxy(chain, "/")
    timings["fail-closed answer"] = time.monotonic() - started
    assert answer.status_code == 403, answer.text
    assert UNCHECKED in answer.text
    assert checks(chain) == {"ok": NORMAL_REQUESTS, "denied": 1, "error": 1, "failure_mode_allowed": 0}


def test_delete_system_gateway_leaves_its_namespace_empty(cluster_paths: ClusterPaths, kubectl: Kubectl,
                                                          chain: Chain) -> None:  # fmt: skip
    done = cloverctl(cluster_paths, "delete", "system", "gateway")
    assert (f"note: {PROXY} still asks the WAF (CLOVER_WAF=on, failure mode closed) and now refuses every request "
            "(403): cloverctl create system sdc turns the check off") in done.stdout  # fmt: skip
    assert gateway_contents(kubectl) == OWN
    assert kubectl("-n", GATEWAY, "get", "pods", "-o", "name").strip() == ""
