"""``cloverctl validate logging``: the original's ``logging/validate.py`` for this stack.

The store answers a query; the shipper runs (its telemetry answers and counts the file-log
receiver's entries); a load the check sends itself, with a user-agent made for it, is in the
store once per hop: as many entries with ``destination=http-lb`` as with ``source=http-lb``, and
both equal to the requests sent; every chain pod whose log has entries has entries in the store.
Where the store, the shipper and the chain are is a :class:`Place`: the local stack's, or a
cluster's (``logstore.cluster``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import requests

from clover import pods
from clover.config import LOOPBACK, Config
from logstore.query import LogFilter, LogStore, LogStoreError
from logstore.settings import LogSettings
from sdc import topology
from stack.probes import ProbeFailed

PROXY = "proxy-access-control"
LB = "http-lb"
ACCEPTED = "otelcol_receiver_accepted_log_records"


@dataclass(frozen=True)
class LoggingCheck:
    check: str
    passed: bool
    detail: str


def shipper_check(settings: LogSettings) -> LoggingCheck:
    url = f"http://{LOOPBACK}:{settings.shipper_metrics_port}/metrics"
    try:
        answer = requests.get(url, timeout=5)
    except requests.RequestException as exc:
        return LoggingCheck("shipper running", False, f"GET {url} failed: {type(exc).__name__}")
    if answer.status_code != 200:
        return LoggingCheck("shipper running", False, f"GET {url} answered {answer.status_code}")
    accepted = sum(
        float(line.rsplit(" ", 1)[1]) for line in answer.text.splitlines()
        if line.startswith(ACCEPTED) and 'receiver="file_log"' in line
    )  # fmt: skip
    return LoggingCheck("shipper running", True, f"{url}: file-log receiver accepted {accepted:.0f} entries")


def send_load(cfg: Config, count: int, user_agent: str) -> int:
    """``count`` GETs through the proxy; how many were answered."""
    url = f"http://{topology.pod_ip(cfg, PROXY)}:{topology.ports(PROXY)['http']}/"
    answered = 0
    with requests.Session() as session:
        for _ in range(count):
            try:
                session.get(url, headers={"User-Agent": user_agent}, timeout=10)
                answered += 1
            except requests.RequestException:
                continue
    return answered


def load_checks(store: LogStore, settings: LogSettings, sent: int, agent: str, wait: float) -> list[LoggingCheck]:
    where = LogFilter(user_agent=agent, stream=settings.stream)
    deadline = time.monotonic() + wait
    while True:
        into = store.count_by("destination", where)
        out_of = store.count_by("source", where)
        done = into.get(LB, 0) >= sent and out_of.get(LB, 0) >= sent and into.get(PROXY, 0) >= sent
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return [
        LoggingCheck(f"entries at {PROXY}", into.get(PROXY, 0) == sent,
                     f"{into.get(PROXY, 0)} entries with destination={PROXY} for {sent} requests sent"),
        LoggingCheck(f"count(destination={LB}) = count(source={LB})",
                     into.get(LB, 0) == out_of.get(LB, 0) == sent,
                     f"destination={LB}: {into.get(LB, 0)}, source={LB}: {out_of.get(LB, 0)}, requests: {sent}"),
    ]  # fmt: skip


def pods_read(store: LogStore, settings: LogSettings, cfg: Config) -> list[LoggingCheck]:
    """Each registered chain pod with a non-empty access log has entries in the store."""
    out = []
    for pod in pods.list_pods(cfg):
        log = settings.access_log_dir / f"{pod.name}.log"
        if not log.exists() or log.stat().st_size == 0:
            continue
        found = store.count_entries(f"stream:={settings.stream} pod:={pod.name} kind:in(access, alert)")
        out.append(LoggingCheck(f"log of {pod.name} read", found > 0, f"{found} entries in the store from {log}"))
    return out


@dataclass(frozen=True)
class Place:
    """Where the check looks: the store, how the shipper is seen running, how the load is sent
    (``count`` requests with a user-agent, returning how many were answered), and which pods'
    logs must be in the store."""

    store: LogStore
    shipper: Callable[[], LoggingCheck]
    load: Callable[[int, str], int]
    pods_read: Callable[[LogStore], list[LoggingCheck]]


def local_place(cfg: Config, settings: LogSettings) -> Place:
    return Place(
        LogStore(settings.store_url),
        lambda: shipper_check(settings),
        lambda n, agent: send_load(cfg, n, agent),
        lambda store: pods_read(store, settings, cfg),
    )


def validate_logging(
    place: Place, settings: LogSettings, requests_sent: int = 20, wait: float = 30.0
) -> list[LoggingCheck]:
    store = place.store
    try:
        store.probe()
    except ProbeFailed as exc:
        return [LoggingCheck("store healthy", False, str(exc))]
    checks = [LoggingCheck("store healthy", True, f"{store.url} answers LogsQL queries")]
    checks.append(place.shipper())
    agent = f"clover-validate-logging/{uuid.uuid4().hex}"
    sent = place.load(requests_sent, agent)
    if sent != requests_sent:
        checks.append(LoggingCheck("load sent", False, f"{sent} of {requests_sent} requests answered by {PROXY}"))
        return checks
    try:
        checks += load_checks(store, settings, sent, agent, wait)
        checks += place.pods_read(store)
    except LogStoreError as exc:
        checks.append(LoggingCheck("store queries", False, str(exc)))
    return checks
