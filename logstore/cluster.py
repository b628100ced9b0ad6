"""``cloverctl validate logging --cluster``: the check against the log store, the shipper and the
chain of a Kubernetes cluster (``create system logging`` and ``sdc``). The store and the proxy's
Service are reached through the API server's service proxy, so the kubeconfig is all it needs.

Each hop's entries are counted for the load the check sends; unlike the local check it does not
look at every chain pod, since a pod no request reached has written nothing."""

from __future__ import annotations

from typing import Any

import requests

from logstore.check import PROXY, LoggingCheck, Place
from logstore.query import LogStore
from sdc import topology

NAMESPACE = "logging"
STORE = "log-store:http"
SHIPPER = "log-shipper"


def api_session(api_client: Any) -> tuple[str, requests.Session]:
    """The API server's address and a session with the kubeconfig's credentials."""
    conf = api_client.configuration
    session = requests.Session()
    session.trust_env = False  # the kubeconfig's CA and address, not REQUESTS_CA_BUNDLE's or a proxy's
    session.verify = (conf.ssl_ca_cert or True) if conf.verify_ssl else False
    if conf.cert_file:
        session.cert = (conf.cert_file, conf.key_file)
    token = conf.get_api_key_with_prefix("authorization")
    if token:
        session.headers["Authorization"] = token
    return conf.host.rstrip("/"), session


def service_proxy(host: str, namespace: str, service: str) -> str:
    return f"{host}/api/v1/namespaces/{namespace}/services/{service}/proxy"


def shipper_check(apps: Any) -> LoggingCheck:
    from kubernetes.client.exceptions import ApiException

    try:
        status = apps.read_namespaced_daemon_set_status(SHIPPER, NAMESPACE).status
    except ApiException as exc:
        return LoggingCheck("shipper running", False, f"DaemonSet {NAMESPACE}/{SHIPPER}: {exc.status} {exc.reason}")
    want, ready = status.desired_number_scheduled or 0, status.number_ready or 0
    return LoggingCheck("shipper running", want > 0 and ready >= want,
                        f"DaemonSet {NAMESPACE}/{SHIPPER}: {ready} of {want} pods ready")  # fmt: skip


def send_load(host: str, session: requests.Session, count: int, user_agent: str) -> int:
    """``count`` GETs through the proxy's Service; how many it answered with 200."""
    url = service_proxy(host, topology.NAMESPACE, f"{PROXY}:http") + "/"
    answered = 0
    for _ in range(count):
        try:
            answered += session.get(url, headers={"User-Agent": user_agent}, timeout=10).status_code == 200
        except requests.RequestException:
            continue
    return answered


def cluster_place(apis: dict[str, Any]) -> Place:
    host, session = api_session(apis["core"].api_client)
    store = LogStore(service_proxy(host, NAMESPACE, STORE), session=session)
    return Place(store, lambda: shipper_check(apis["apps"]), lambda n, agent: send_load(host, session, n, agent),
                 lambda _: [])  # fmt: skip
