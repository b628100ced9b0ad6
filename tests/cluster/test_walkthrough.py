"""The original user guide's walkthrough against the real local cluster, with exact counts:

* ``create system datastore``, ``controller`` (+ ``nodeport``), ``sdc`` and ``validation``;
* requests through proxy-access-control's Service alternate between http-lb v1 and v2, each
  balancing over clover-server1..3;
* ``cloverctl set lb -f lbv2.yaml`` through the controller's NodePort moves v2 to
  clover-server4/5 (the controller reaches the chain's pods over gRPC by Service name);
* ``create idsrules -f idsrule_scan.yaml``, then ``curl -A asafaweb.com`` through the proxy: one
  alert per matching rule (the community one and its local copy) in Redis, read through the
  controller, and the proxy blocks that client;
* ``create system logging``: 6 requests through the proxy's Service are 24 entries in the log
  store, one per hop (proxy, load balancer, server, the IDS's copy), each with its trace id and
  the sending hop as ``source``; ``validate logging --cluster`` passes; a replaced shipper pod
  stores nothing twice; a shipper pod refused by Pod Security is named by ``create``'s wait;
  ``delete system logging`` leaves namespace ``logging`` empty;
* ``start testplan -s 2`` runs on two JMeter slave pods: twice the samples of ``-s 1``;
* ``delete system sdc`` and ``validation`` leave ``default`` without Clover's objects.

Needs the images (``make images``: the archives in stack/cache/images)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from cloverctl import clover_system, logging_system
from logstore.query import LogFilter, LogStore
from stack.cluster.layout import ClusterPaths
from tests.cluster.conftest import Kubectl, Timings, load_images, routed_service
from tests.cluster.pipeline import rest
from tests.cluster.test_systems import NAMESPACE, NODE_PORT_URL, cloverctl, get_json

DATASTORE_IMAGES = ("clover-redis", "clover-cassandra")
IMAGES = ("clover-controller", "clover-ns-nginx-proxy", "clover-ns-nginx-lb", "clover-ns-nginx-server",
          "clover-ns-snort-ids", "clover-jmeter-master", "clover-jmeter-slave", "clover-log-store",
          "clover-log-shipper")  # fmt: skip
# The tag of the controller's, the chain's and validation's images (cloverctl build images -t TAG
# tries a change without replacing the latest ones).
TAG = os.environ.get("CLOVER_TEST_IMAGE_TAG", "latest")
CHAIN = ("proxy-access-control", "http-lb-v1", "http-lb-v2", *(f"clover-server{i}" for i in range(1, 6)), "snort-ids")
LB_V1, LB_V2 = "http-lb-v1", "http-lb-v2"
SERVERS_V1 = ("clover-server1", "clover-server2", "clover-server3")
LOGGED_REQUESTS = 6
REQUESTS = 12  # a multiple of 2 (the lb versions) x 3 (v1's servers) x 2 (v2's servers after lbv2.yaml)
SCAN_AGENT = "asafaweb.com"
# The community rule and its copy as a local rule (cloverctl/yaml/idsrule_scan.yaml): one alert each.
SCAN_ALERTS = [
    ("10000003", "MALWARE-CNC User-Agent ASafaWeb Scan"),
    ("1900001", "MALWARE-CNC User-Agent ASafaWeb Scan"),
]
# The test plan: each JMeter server runs every thread's loops.
PLAN_THREADS, PLAN_LOOPS = 2, 3
# What default holds by itself.
DEFAULT_OWN = {"Service/kubernetes", "ConfigMap/kube-root-ca.crt", "ServiceAccount/default"}


@pytest.fixture(scope="module")
def loaded(kubectl: Kubectl, cluster_paths: ClusterPaths, timings: Timings) -> None:
    """The images, imported into the running cluster's containerd (``kubectl`` starts the cluster)."""
    load_images(cluster_paths, timings, DATASTORE_IMAGES)
    load_images(cluster_paths, timings, IMAGES, tag=TAG)


@pytest.fixture(scope="module")
def token(cluster_paths: ClusterPaths, kubectl: Kubectl, loaded: None, timings: Timings) -> Iterator[str]:
    """The datastore and the controller on its NodePort; yields the controller's API token."""
    started = time.monotonic()
    for args in (("datastore",), ("controller", "-t", TAG), ("controller", "nodeport")):
        cloverctl(cluster_paths, "create", "system", *args)
    get_json(f"{NODE_PORT_URL}/health")  # retried while kube-proxy writes the new Service's rules
    timings["create system datastore, controller + nodeport (ready)"] = time.monotonic() - started
    encoded = kubectl.json("-n", NAMESPACE, "get", "secret", "clover-controller")["data"]["token"]
    yield base64.b64decode(encoded).decode()
    for args in (("logging",), ("sdc",), ("validation",), ("controller", "nodeport"), ("controller",),
                 ("datastore",)):  # fmt: skip
        cloverctl(cluster_paths, "delete", "system", *args, check=False)


def proxy_url(kubectl: Kubectl) -> str:
    """proxy-access-control's Service from this machine (its cluster IP, through kube-proxy)."""
    return f"http://{routed_service(kubectl, 'default', 'proxy-access-control', 9180)}/"


def through_proxy(url: str, agent: str = "clover-walkthrough") -> tuple[int, str, str]:
    """(status, the load balancer that forwarded it, the server that answered) of one request."""
    asked = urllib.request.Request(url, headers={"User-Agent": agent})
    try:
        with urllib.request.urlopen(asked, timeout=30) as answer:
            via = [hop.strip().removeprefix("1.1 ") for hop in answer.headers.get("Via", "").split(",")]
            lb = next((hop for hop in via if hop.startswith("http-lb-")), "")
            return answer.status, lb, answer.headers.get("X-Served-By", "")
    except urllib.error.HTTPError as refused:
        return refused.code, "", ""


def answered_by(url: str, count: int) -> Counter[tuple[str, str]]:
    """(load balancer, server) of ``count`` requests, each of which must succeed."""
    seen: Counter[tuple[str, str]] = Counter()
    for _ in range(count):
        status, lb, server = through_proxy(url)
        assert status == 200, f"the chain answered {status}"
        seen[(lb, server)] += 1
    return seen


def both_lbs_in_turn(url: str, timeout: float = 60) -> None:
    """Wait until the proxy resolves http-lb to both versions' pods (the headless Service's DNS
    records follow the pods' readiness)."""
    deadline = time.monotonic() + timeout
    while {lb for lb, _ in answered_by(url, 4)} != {LB_V1, LB_V2}:
        assert time.monotonic() < deadline, "the proxy does not reach both http-lb versions"
        time.sleep(2)


def alerts() -> dict[str, Any]:
    """The IDS alerts in Redis, as the controller's /snort/events shows them."""
    status, found = get_json(f"{NODE_PORT_URL}/snort/events")
    assert status == 200 and isinstance(found, dict)
    return found


def default_contents(kubectl: Kubectl) -> set[str]:
    items = kubectl.json("-n", "default", "get", "all,secret,configmap,serviceaccount")["items"]
    return {f"{i['kind']}/{i['metadata']['name']}" for i in items}


def test_create_system_sdc_names_the_missing_datastore(cluster_paths: ClusterPaths, loaded: None) -> None:
    done = cloverctl(cluster_paths, "create", "system", "sdc", check=False)
    assert done.returncode == 1
    assert ("the sample chain needs, in clover-system: Service/redis (cloverctl create system datastore); "
            "Secret/clover-redis (Redis's password: cloverctl create system datastore)") in done.stderr  # fmt: skip


def test_the_chain_balances_over_both_lb_versions(cluster_paths: ClusterPaths, kubectl: Kubectl, token: str,
                                                  timings: Timings) -> None:  # fmt: skip
    started = time.monotonic()
    done = cloverctl(cluster_paths, "create", "system", "sdc", "-t", TAG, "--timeout", "300")
    timings["create system sdc (ready)"] = time.monotonic() - started
    assert "Secret/clover-redis copied from clover-system into default" in done.stdout
    copied = kubectl.json("-n", "default", "get", "secret", "clover-redis")["data"]["password"]
    assert copied == kubectl.json("-n", NAMESPACE, "get", "secret", "clover-redis")["data"]["password"]
    url = proxy_url(kubectl)
    both_lbs_in_turn(url)
    # The proxy takes the two lb pods in turn; each lb takes its servers in turn.
    per_lb = REQUESTS // 2 // len(SERVERS_V1)
    assert answered_by(url, REQUESTS) == {(lb, s): per_lb for lb in (LB_V1, LB_V2) for s in SERVERS_V1}


def test_set_lb_through_the_node_port_moves_v2_to_servers_4_and_5(kubectl: Kubectl, token: str) -> None:
    assert rest(token, "set", "lb", "-f", "lbv2.yaml").strip() == "Modified nginx config"
    config = json.loads(rest(token, "get", "lb", LB_V2, "-o", "json"))
    assert config["lb"]["slb_list"] == ["clover-server4:9180", "clover-server5:9180"]
    url = proxy_url(kubectl)
    expected = {(LB_V1, s): REQUESTS // 2 // 3 for s in SERVERS_V1}
    expected |= {(LB_V2, s): REQUESTS // 2 // 2 for s in ("clover-server4", "clover-server5")}
    assert answered_by(url, REQUESTS) == expected


def traced_request(url: str, agent: str) -> tuple[str, str]:
    """(trace id, answering server) of one request that must succeed."""
    with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": agent}), timeout=30) as answer:
        assert answer.status == 200
        return answer.headers["traceresponse"].split("-")[1], answer.headers["X-Served-By"]


def test_logging_has_one_entry_per_hop_of_each_request(cluster_paths: ClusterPaths, kubectl: Kubectl, token: str,
                                                       timings: Timings) -> None:  # fmt: skip
    started = time.monotonic()
    cloverctl(cluster_paths, "create", "system", "logging", "-t", TAG, "--pod-logs-dir", str(cluster_paths.pod_logs),
              "--timeout", "300")  # fmt: skip
    timings["create system logging (ready)"] = time.monotonic() - started
    agent = f"clover-walkthrough-logs/{uuid.uuid4().hex}"
    sent = [traced_request(proxy_url(kubectl), agent) for _ in range(LOGGED_REQUESTS)]
    address = kubectl.json("-n", "logging", "get", "service", "log-store")["spec"]["clusterIP"]
    store = LogStore(f"http://{address}:9428")
    deadline = time.monotonic() + 60
    while len(entries := store.search(LogFilter(user_agent=agent), limit=1000)) < 4 * LOGGED_REQUESTS:
        assert time.monotonic() < deadline, f"{len(entries)} entries with user-agent {agent} in the store"
        time.sleep(0.5)
    assert len(entries) == 4 * LOGGED_REQUESTS
    servers = Counter(server for _, server in sent)
    n = LOGGED_REQUESTS
    assert Counter(e["destination"] for e in entries) == {CHAIN[0]: n, "http-lb": n, "snort-ids": n, **servers}
    assert Counter(e["source"] for e in entries) == {"unknown": n, CHAIN[0]: 2 * n, "http-lb": n}
    assert Counter(e["traceId"] for e in entries) == {trace_id: 4 for trace_id, _ in sent}
    # The controller reads the same store (CLOVER_LOG_STORE_URL in k8s/controller).
    found = json.loads(rest(token, "get", "logs", "--trace", sent[0][0], "-o", "json"))
    assert found["count"] == 4
    assert {e["entryId"] for e in found["entries"]} == {e["entryId"] for e in entries if e["traceId"] == sent[0][0]}
    done = cloverctl(cluster_paths, "validate", "logging", "--cluster", "-o", "json")
    checks = {c["check"]: c["detail"] for c in json.loads(done.stdout)["checks"]}
    assert checks["count(destination=http-lb) = count(source=http-lb)"] == (
        "destination=http-lb: 20, source=http-lb: 20, requests: 20"
    )
    assert checks["shipper running"] == "DaemonSet logging/log-shipper: 1 of 1 pods ready"
    # A replaced shipper pod resumes from the offsets on the node: nothing is read and stored again.
    kubectl("-n", "logging", "delete", "pod", "-l", "app=log-shipper")
    marker = f"clover-walkthrough-logs-marker/{uuid.uuid4().hex}"
    traced_request(proxy_url(kubectl), marker)
    while len(store.search(LogFilter(user_agent=marker))) < 4:
        assert time.monotonic() < deadline + 120, "the replaced shipper pod ships nothing"
        time.sleep(0.5)
    assert store.count(LogFilter(user_agent=agent).logsql()) == 4 * LOGGED_REQUESTS


def test_refused_shipper_pods_are_named_then_delete_leaves_logging_empty(
    cluster_paths: ClusterPaths, kubectl: Kubectl, token: str
) -> None:
    kubectl("label", "--overwrite", "namespace", "logging", "pod-security.kubernetes.io/enforce=baseline")
    kubectl("-n", "logging", "delete", "pod", "-l", "app=log-shipper")
    deadline = time.monotonic() + 30
    while kubectl.json("-n", "logging", "get", "daemonset", "log-shipper")["status"].get("numberAvailable"):
        assert time.monotonic() < deadline, "the deleted shipper pod is still counted available"
        time.sleep(0.5)
    apis = clover_system.connect(str(cluster_paths.kubeconfig), None)
    docs = [d for d in logging_system.load_manifests(tag=TAG) if d["kind"] == "DaemonSet"]
    with pytest.raises(click.ClickException) as refused:
        clover_system.wait_ready(apis, docs, 60, print)
    assert refused.value.message.startswith('DaemonSet/log-shipper: its pods are refused: Error creating: pods "')
    assert refused.value.message.endswith(
        'is forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volumes "pod-logs", "state")'
    )
    cloverctl(cluster_paths, "delete", "system", "logging")
    left = kubectl.json("-n", "logging", "get", "all,pvc,configmap,secret")["items"]
    assert [f"{i['kind']}/{i['metadata']['name']}" for i in left if i["metadata"]["name"] != "kube-root-ca.crt"] == []


def test_start_testplan_on_two_slave_pods_doubles_the_samples(cluster_paths: ClusterPaths, token: str,
                                                              tmp_path: Path, timings: Timings) -> None:  # fmt: skip
    started = time.monotonic()
    cloverctl(cluster_paths, "create", "system", "validation", "-t", TAG, "--timeout", "300")
    timings["create system validation (ready)"] = time.monotonic() - started
    plan = tmp_path / "testplan.yaml"
    plan.write_text(json.dumps({
        "load_spec": {"num_threads": PLAN_THREADS, "loops": PLAN_LOOPS, "ramp_time": 1},
        "url_list": [{"name": "walk", "url": "http://proxy-access-control.default:9180/", "method": "GET",
                      "user-agent": "clover-walkthrough-jmeter"}],
    }))  # fmt: skip
    rest(token, "create", "testplan", "-f", str(plan))
    totals = {}
    for slaves in (1, 2):
        started = time.monotonic()
        run = json.loads(rest(token, "-o", "json", "start", "testplan", "-s", str(slaves), "--wait",
                              "--timeout", "300"))  # fmt: skip
        timings[f"start testplan -s {slaves} (finished)"] = time.monotonic() - started
        assert run["status"]["state"] == "finished"
        total = next(row for row in run["summary"] if row["label"] == "TOTAL")
        assert total["errors"] == 0
        totals[slaves] = total["samples"]
    assert totals == {1: PLAN_THREADS * PLAN_LOOPS, 2: 2 * PLAN_THREADS * PLAN_LOOPS}


def test_the_chain_and_validation_meet_restricted_pod_security(kubectl: Kubectl, token: str) -> None:
    """The API server's check of every pod in default against the restricted standard (a dry run
    of labelling the namespace: it warns about each pod that would violate it)."""
    done = subprocess.run([*kubectl.argv, "label", "--dry-run=server", "--overwrite", "namespace", "default",
                           "pod-security.kubernetes.io/enforce=restricted"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    running = kubectl.json("-n", "default", "get", "pods")["items"]
    assert len(running) == len(CHAIN) + 4  # the chain's pods, the JMeter master and 3 slaves


def test_an_ids_alert_in_redis_blocks_the_client_at_the_proxy(kubectl: Kubectl, token: str) -> None:
    assert rest(token, "create", "idsrules", "-f", "idsrule_scan.yaml").strip() == "Added to local rules"
    rest(token, "stop", "ids")
    rest(token, "start", "ids")  # with the new rule; the earlier alerts are cleared
    url = proxy_url(kubectl)
    scan = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-A", SCAN_AGENT, url],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert scan.stdout == "200"  # answered; the copy to snort-ids raises the alert afterwards
    deadline = time.monotonic() + 60
    while (events := alerts())["total"] < len(SCAN_ALERTS):
        assert time.monotonic() < deadline, f"{events['total']} IDS alert(s) in Redis"
        time.sleep(1)
    assert events["total"] == len(SCAN_ALERTS)
    assert sorted((a["signature-id"], a["msg"]) for a in events["alerts"]) == SCAN_ALERTS
    (source,) = {a["source-ip"] for a in events["alerts"]}  # the client as the proxy saw it
    while not (blocked := json.loads(rest(token, "get", "proxy", "-o", "json")).get("blocked")):
        assert time.monotonic() < deadline, "the proxy blocks no client"
        time.sleep(1)
    assert [b["ip"] for b in blocked] == [source]
    assert blocked[0]["event_id"] in {a["event-id"] for a in events["alerts"]}
    assert through_proxy(url)[0] == 403


def test_delete_sdc_and_validation_leave_default_without_clover(cluster_paths: ClusterPaths, kubectl: Kubectl,
                                                                token: str) -> None:  # fmt: skip
    cloverctl(cluster_paths, "delete", "system", "sdc")
    cloverctl(cluster_paths, "delete", "system", "validation")
    assert default_contents(kubectl) == DEFAULT_OWN
    assert kubectl("-n", "default", "get", "pods", "-o", "name").strip() == ""
