"""``cloverctl validate monitoring|tracing|mesh|all``: the original's validation scripts
(``clover/monitoring/validate.py``, ``tracing/validate.py``, ``servicemesh/validate.py``,
docs/compatibility.md §10) rewritten for this project's stack.

- monitoring: Prometheus answers ``/-/ready``; every scrape job of the local Prometheus
  configuration (``stack/conf/prometheus.yml``, as rendered under the state directory) has a
  target; every active target is ``up``; every pod of the sample chain is scraped and ``up``.
- tracing: the trace backend answers its services query (Jaeger ``/api/services``, or Zipkin's
  ``/api/v2/services``) and lists every service of the chain that its current routing reaches
  (read from the pods: the proxy's upstream and mirror, the load balancers' server lists).
- mesh: every pod of the chain answers on its gRPC control port and accepts connections on its
  HTTP port; the controller answers ``/health``. With ``--cluster``: the Deployments,
  StatefulSets and DaemonSets of ``clover-system`` (or ``-n``) are ready, and so are their pods.

Every endpoint comes from ``clover.config`` (``CLOVER_PROMETHEUS_URL``, ``CLOVER_JAEGER_URL``,
``CLOVER_CONTROLLER_URL``, the ``CLOVER_SDC_*`` settings). A failed check, including a backend
that cannot be reached, exits 1.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import grpc
import requests
import yaml
from google.protobuf.json_format import MessageToDict

from clover.config import Config, ConfigError
from cloverctl import rest
from logstore.check import local_place, validate_logging
from logstore.cluster import cluster_place
from logstore.settings import LogSettings
from protos import nginx_pb2, nginx_pb2_grpc, snort_pb2, snort_pb2_grpc
from sdc import topology
from stack.parts import CONF_DIR, prometheus_targets_dir

PASS, FAIL = "PASS", "FAIL"
SECTIONS = ("monitoring", "tracing", "mesh")
LOGGING = "logging"  # not in "all": it needs `cloverctl local up logging` and sends a load of its own
TIMEOUT = 5.0
GRPC_TIMEOUT = 3.0
PROMETHEUS_CONF = "prometheus.yml"
CHAIN_LABEL = "sdc"  # the label every chain pod's scrape target carries (sdc.runtime.prometheus_target)


@dataclass(frozen=True)
class Check:
    section: str
    check: str
    passed: bool
    detail: str

    @property
    def result(self) -> str:
        return PASS if self.passed else FAIL

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "result": self.result}


@dataclass(frozen=True)
class Answer:
    """An HTTP reply: its status and body."""

    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


class NoAnswer(Exception):
    """The URL could not be fetched; ``str()`` names it and why."""


Fetch = Callable[[str], Answer]


def http_get(url: str) -> Answer:
    try:
        reply = requests.get(url, timeout=TIMEOUT)
    except requests.RequestException as exc:
        reason = "connection refused or host unreachable" if isinstance(exc, requests.ConnectionError) else ""
        raise NoAnswer(f"cannot reach {url}: {reason or type(exc).__name__}") from None
    return Answer(reply.status_code, reply.text)


def _json(answer: Answer, url: str) -> Any:
    try:
        return answer.json()
    except ValueError:
        raise NoAnswer(f"{url} answered {answer.status} with a body that is not JSON") from None


# -- monitoring ------------------------------------------------------------------------------


def prometheus_config_file(cfg: Config) -> Path:
    """The configuration the local Prometheus runs with: rendered under the state directory
    by ``cloverctl local up prometheus``, else the template it is rendered from."""
    rendered = prometheus_targets_dir(cfg).parent / PROMETHEUS_CONF
    return rendered if rendered.exists() else CONF_DIR / PROMETHEUS_CONF


def expected_jobs(config_text: str) -> list[str]:
    """The ``job_name`` of every scrape config of a Prometheus configuration."""
    data = yaml.safe_load(config_text) or {}
    return [str(c["job_name"]) for c in data.get("scrape_configs") or [] if isinstance(c, dict) and "job_name" in c]


def _target_name(target: Mapping[str, Any]) -> str:
    labels = target.get("labels") or {}
    return f"{labels.get('job', '?')}/{labels.get('pod') or labels.get('instance') or target.get('scrapeUrl', '?')}"


def _down(target: Mapping[str, Any]) -> str:
    health = target.get("health", "unknown")
    why = target.get("lastError") or ("not scraped yet" if health == "unknown" else health)
    return f"{_target_name(target)} ({why})"


def evaluate_targets(
    targets: Sequence[Mapping[str, Any]], jobs: Sequence[str], pods: Sequence[str], source: str
) -> list[Check]:
    """The checks on Prometheus's active targets (``/api/v1/targets``): every expected job has a
    target, every target is up, every chain pod is scraped and up."""
    seen_jobs = {(t.get("labels") or {}).get("job") for t in targets}
    missing_jobs = [j for j in jobs if j not in seen_jobs]
    checks = [
        Check("monitoring", "scrape jobs", not missing_jobs,
              f"no target for job {', '.join(missing_jobs)} (jobs of {source})" if missing_jobs
              else f"{', '.join(jobs)} (from {source})"),
    ]  # fmt: skip
    down = [_down(t) for t in targets if t.get("health") != "up"]
    checks.append(
        Check("monitoring", "targets up", bool(targets) and not down,
              f"{len(targets) - len(down)} of {len(targets)} up; down: {'; '.join(down)}" if down
              else f"{len(targets)} of {len(targets)} up" if targets else "Prometheus has no active target")
    )  # fmt: skip
    by_pod = {
        str((t.get("labels") or {}).get("pod")): t
        for t in targets
        if (t.get("labels") or {}).get(CHAIN_LABEL) == "true"
    }
    unscraped = [p for p in pods if p not in by_pod]
    chain_down = [_down(by_pod[p]) for p in pods if p in by_pod and by_pod[p].get("health") != "up"]
    problems = ([f"not scraped: {', '.join(unscraped)}"] if unscraped else []) + (
        [f"down: {'; '.join(chain_down)}"] if chain_down else []
    )
    checks.append(
        Check("monitoring", "chain targets up", not problems,
              "; ".join(problems) if problems else f"all {len(pods)} pods of the chain scraped and up")
    )  # fmt: skip
    return checks


def monitoring(cfg: Config, fetch: Fetch = http_get) -> list[Check]:
    base = cfg.prometheus_url.rstrip("/")
    ready_url = f"{base}/-/ready"
    try:
        ready = fetch(ready_url)
    except NoAnswer as exc:
        return [Check("monitoring", "prometheus ready", False, f"{exc} (CLOVER_PROMETHEUS_URL)")]
    if ready.status != 200:
        return [Check("monitoring", "prometheus ready", False, f"{ready_url} answered {ready.status}")]
    version = ""
    try:
        info = _json(fetch(f"{base}/api/v1/status/buildinfo"), f"{base}/api/v1/status/buildinfo")
        version = f", version {info['data']['version']}"
    except (NoAnswer, KeyError, TypeError):
        pass
    checks = [Check("monitoring", "prometheus ready", True, f"{ready_url} answered 200{version}")]
    targets_url = f"{base}/api/v1/targets?state=active"
    try:
        answer = fetch(targets_url)
        data = _json(answer, targets_url) if answer.status == 200 else None
        targets = data["data"]["activeTargets"] if isinstance(data, dict) else None
        if not isinstance(targets, list):
            raise NoAnswer(f"{targets_url} answered {answer.status} without a list of active targets")
    except (NoAnswer, KeyError, TypeError) as exc:
        return [*checks, Check("monitoring", "targets up", False, str(exc))]
    conf = prometheus_config_file(cfg)
    try:
        jobs = expected_jobs(conf.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [*checks, Check("monitoring", "scrape jobs", False, f"cannot read {conf}: {exc}")]
    return checks + evaluate_targets(targets, jobs, topology.POD_NAMES, str(conf))


# -- tracing ---------------------------------------------------------------------------------


def pod_config(cfg: Config, name: str, timeout: float = GRPC_TIMEOUT) -> dict[str, Any]:
    """A pod's answer on its gRPC control port, dialled at the pod's own address: the running
    configuration of a proxy, lb or server, the status of the IDS."""
    address = f"{topology.pod_ip(cfg, name)}:{topology.ports(name)['grpc']}"
    with grpc.insecure_channel(address) as channel:
        try:
            if topology.spec(name).kind == topology.IDS:
                status = snort_pb2_grpc.ControllerStub(channel).GetStatus(snort_pb2.ControlSnort(), timeout=timeout)
                return {f.name: getattr(status, f.name) for f in status.DESCRIPTOR.fields}
            dump = nginx_pb2_grpc.ControllerStub(channel).GetConfig(nginx_pb2.ConfigQuery(), timeout=timeout)
        except grpc.RpcError as exc:
            why = (exc.details() or "").rsplit(": ", 1)[-1]  # gRPC's last error, e.g. "Connection refused"
            raise NoAnswer(f"gRPC {address} does not answer: {exc.code().name} {why}".rstrip()) from None
    result: dict[str, Any] = MessageToDict(dump, preserving_proto_field_name=True)
    return result


def _service_of(upstream: str) -> str | None:
    """``http://http-lb:9180`` or ``clover-server4:9180`` -> the chain service it names."""
    host = upstream.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].split(".", 1)[0]
    for spec in topology.POD_SPECS:
        if host in (spec.name, spec.service):
            return spec.service
    return None


def routed_services(config_of: Callable[[str], Mapping[str, Any]]) -> list[str]:
    """The chain's services that requests entering at the proxy reach under the pods' current
    configuration: the proxy, its upstream and mirror, and the servers of the load balancers."""
    entry = next(s for s in topology.POD_SPECS if s.kind == topology.PROXY)
    found, queue = [entry.service], [entry.name]
    while queue:
        pod = queue.pop(0)
        conf = config_of(pod)
        if "proxy" in conf:
            upstreams = [conf["proxy"].get("proxy_path", ""), conf["proxy"].get("mirror_path", "")]
        else:
            upstreams = list((conf.get("lb") or {}).get("slb_list") or [])
        for service in filter(None, map(_service_of, filter(None, upstreams))):
            if service not in found:
                found.append(service)
                relays = (topology.LB, topology.PROXY)
                queue += [s.name for s in topology.POD_SPECS if s.service == service and s.kind in relays]
    return found


def every_service() -> list[str]:
    """Every service of the chain that reports spans (Apache in modsecurity-crs reports none)."""
    return list(dict.fromkeys(s.service for s in topology.POD_SPECS if s.kind != topology.WAF))


def services_check(listed: Iterable[str], expected: Sequence[str], note: str = "") -> Check:
    have = set(listed)
    missing = [s for s in expected if s not in have]
    if missing:
        detail = f"missing {', '.join(missing)} (no spans from them yet: send requests through the chain)"
    else:
        detail = f"all {len(expected)} services of the chain: {', '.join(expected)}"
    return Check("tracing", "chain services traced", not missing, detail + note)


ConfigOf = Callable[[str], Mapping[str, Any]]


def tracing(cfg: Config, fetch: Fetch = http_get, config_of: ConfigOf | None = None) -> list[Check]:
    zipkin = cfg.trace_backend == "zipkin"
    url = f"{cfg.zipkin_url.rstrip('/')}/api/v2/services" if zipkin else f"{cfg.jaeger_url.rstrip('/')}/api/services"
    backend, setting = ("Zipkin", "CLOVER_ZIPKIN_URL") if zipkin else ("Jaeger", "CLOVER_JAEGER_URL")
    name = f"{backend.lower()} answers"
    try:
        answer = fetch(url)
        data = _json(answer, url) if answer.status == 200 else None
    except NoAnswer as exc:
        return [Check("tracing", name, False, f"{exc} ({setting})")]
    listed = data if zipkin else (data or {}).get("data") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return [Check("tracing", name, False, f"{url} answered {answer.status} without a list of services")]
    checks = [Check("tracing", name, True, f"{url} lists {len(listed)} services")]
    try:
        expected, note = routed_services(config_of or (lambda pod: pod_config(cfg, pod))), ""
    except NoAnswer as exc:
        expected, note = every_service(), f"; the chain's routing is unknown ({exc}), so every service is expected"
    return [*checks, services_check([str(s) for s in listed], expected, note)]


# -- mesh ------------------------------------------------------------------------------------


def tcp_open(host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=TIMEOUT).close()
    except OSError as exc:
        raise NoAnswer(f"http {host}:{port}: {exc.strerror or type(exc).__name__}") from None


def pod_check(
    cfg: Config,
    name: str,
    config_of: Callable[[str], Mapping[str, Any]] | None = None,
    connect: Callable[[str, int], None] = tcp_open,
) -> Check:
    ip, ports = topology.pod_ip(cfg, name), topology.ports(name)
    try:
        if "grpc" in ports:  # every pod but the WAF (Apache: http only)
            (config_of or (lambda pod: pod_config(cfg, pod)))(name)
        connect(ip, ports["http"])
    except NoAnswer as exc:
        return Check("mesh", f"pod {name}", False, str(exc))
    answers = f"gRPC {ip}:{ports['grpc']} answers, " if "grpc" in ports else ""
    return Check("mesh", f"pod {name}", True, f"{answers}http {ip}:{ports['http']} accepts")


def controller_check(cfg: Config, fetch: Fetch = http_get) -> Check:
    url = f"{cfg.controller_url.rstrip('/')}/health"
    try:
        answer = fetch(url)
    except NoAnswer as exc:
        return Check("mesh", "controller health", False, f"{exc} (CLOVER_CONTROLLER_URL)")
    try:
        body = _json(answer, url)
    except NoAnswer:
        body = None
    status = body.get("status") if isinstance(body, dict) else None
    ok = answer.status == 200 and status == "ok"
    detail = ", ".join(f"{k} {v}" for k, v in body.items()) if isinstance(body, dict) else answer.text.strip()[:200]
    return Check("mesh", "controller health", ok, f"{url} answered {answer.status}: {detail}")


def mesh(cfg: Config, fetch: Fetch = http_get) -> list[Check]:
    return [pod_check(cfg, name) for name in topology.POD_NAMES] + [controller_check(cfg, fetch)]


def _replicas(kind: str, obj: Any) -> tuple[int, int]:
    """(wanted, ready) of a Deployment, StatefulSet or DaemonSet."""
    if kind == "daemonset":
        return obj.status.desired_number_scheduled or 0, obj.status.number_ready or 0
    return obj.spec.replicas or 0, obj.status.ready_replicas or 0


def workload_checks(apps: Any, core: Any, namespace: str) -> list[Check]:
    """A cluster's workloads in ``namespace``: each Deployment, StatefulSet and DaemonSet has
    all its replicas ready; each pod is Running with every container ready."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    checks = []
    try:
        kinds = [
            ("deployment", apps.list_namespaced_deployment(namespace, _request_timeout=TIMEOUT).items),
            ("statefulset", apps.list_namespaced_stateful_set(namespace, _request_timeout=TIMEOUT).items),
            ("daemonset", apps.list_namespaced_daemon_set(namespace, _request_timeout=TIMEOUT).items),
        ]
        pods = core.list_namespaced_pod(namespace, _request_timeout=TIMEOUT).items
    except (ApiException, HTTPError, OSError) as exc:
        return [Check("mesh", f"namespace {namespace}", False, f"the Kubernetes API did not answer: {exc}")]
    for kind, items in kinds:
        for obj in items:
            want, ready = _replicas(kind, obj)
            checks.append(Check("mesh", f"{kind} {obj.metadata.name}", want > 0 and ready >= want,
                                f"{ready} of {want} ready in {namespace}"))  # fmt: skip
    for pod in pods:
        statuses = pod.status.container_statuses or []
        ready = pod.status.phase == "Running" and bool(statuses) and all(s.ready for s in statuses)
        if pod.status.phase == "Succeeded":
            continue
        counted = f"{sum(bool(s.ready) for s in statuses)}/{len(statuses)} containers ready"
        checks.append(Check("mesh", f"pod {pod.metadata.name}", ready, f"{pod.status.phase}, {counted}"))
    if not checks:
        checks.append(Check("mesh", f"namespace {namespace}", False, f"no workload in namespace {namespace}"))
    return checks


def logging_checks(cfg: Config, apis: Mapping[str, Any] | None = None) -> list[Check]:
    """The local stack's logging, or with ``apis`` (a cluster's clients) the cluster's."""
    try:
        settings = LogSettings.from_env(os.environ)
    except ConfigError as exc:
        return [Check(LOGGING, "configuration", False, str(exc))]
    place = cluster_place(dict(apis)) if apis is not None else local_place(cfg, settings)
    return [Check(LOGGING, c.check, c.passed, c.detail) for c in validate_logging(place, settings)]


# -- the command -----------------------------------------------------------------------------


def run(cfg: Config, sections: Sequence[str], cluster: Callable[[], list[Check]] | None = None,
        apis: Mapping[str, Any] | None = None) -> list[Check]:  # fmt: skip
    out: list[Check] = []
    for section in sections:
        if section == "monitoring":
            out += monitoring(cfg)
        elif section == "tracing":
            out += tracing(cfg)
        elif section == "logging":
            out += logging_checks(cfg, apis)
        elif cluster is not None:
            out += [*cluster(), controller_check(cfg)]
        else:
            out += mesh(cfg)
    return out


def messages(checks: Sequence[Check], sections: Sequence[str]) -> dict[str, str]:
    """The original's closing line per section: "<section> validation has passed|failed"."""
    return {
        s: f"{s} validation has {'passed' if all(c.passed for c in checks if c.section == s) else 'failed'}"
        for s in sections
    }


def table(checks: Sequence[Check]) -> str:
    head = ("CHECK", "RESULT", "DETAIL")
    rows = [head] + [(f"{c.section}: {c.check}", c.result, c.detail) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip() for r in rows)


def report(checks: Sequence[Check], sections: Sequence[str], as_json: bool) -> tuple[str, int]:
    """(what to print, exit code): 0 when every check passed, else 1."""
    closing = messages(checks, sections)
    passed = all(c.passed for c in checks)
    if as_json:
        body = {"passed": passed, "failed": sum(not c.passed for c in checks),
                "sections": {s: {"passed": m.endswith("passed"), "message": m} for s, m in closing.items()},
                "checks": [c.as_dict() for c in checks]}  # fmt: skip
        text = rest.json_dumps(body)
    else:
        text = table(checks) + "\n\n" + "\n".join(closing.values())
    return text, 0 if passed else rest.EXIT_FAILED


@click.command("validate", epilog="Exit codes: 0 every check passed; 1 a check failed (or a backend did not answer); "
               "2 usage problem.")  # fmt: skip
@click.argument("what", type=click.Choice([*SECTIONS, LOGGING, "all"]))
@click.option("--wait", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="Check again every 2 s until every check passes or SECONDS have passed (e.g. right after "
                   "`local up`).")  # fmt: skip
@click.option("--cluster", is_flag=True, help="mesh: check the workloads of a Kubernetes cluster (KUBECONFIG, "
              "--kubeconfig) instead of the local chain's pods; logging: the cluster's log store, shipper and "
              "chain (through the API server) instead of the local stack's.")  # fmt: skip
@click.option("-n", "--namespace", default="clover-system", show_default=True, help="The namespace --cluster checks.")
@click.option("--kubeconfig", default=None, help="Path of the kubeconfig (default: KUBECONFIG, ~/.kube/config).")
@click.option("--context", default=None, help="kubeconfig context to use.")
@rest.output_option
def validate(
    what: str, wait: float, cluster: bool, namespace: str, kubeconfig: str | None, context: str | None
) -> None:
    """Validate the stack, as the original's validation scripts: `monitoring` (Prometheus and its
    scrape targets), `tracing` (the trace backend lists the chain's services), `mesh` (the
    chain's pods and the controller answer), `logging` (the log store and shipper hold a load the
    check sends, once per hop; not part of `all`), or `all`. Prints a table of checks and
    "<section> validation has passed" (or "failed") per section; a failed check exits 1."""
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        raise rest.UsageProblem(f"configuration: {exc}") from None
    sections = list(SECTIONS) if what == "all" else [what]
    probe_cluster = None
    apis: dict[str, Any] | None = None
    if cluster:
        from cloverctl.system import cluster_apis

        config_file = Path(kubeconfig) if kubeconfig else rest.kubeconfig(dict(os.environ))
        if not config_file.exists():
            raise rest.UsageProblem(f"--cluster: no kubeconfig at {config_file} (set KUBECONFIG or --kubeconfig)")
        apis = cluster_apis(str(config_file), context)

        def probe_cluster() -> list[Check]:
            return workload_checks(apis["apps"], apis["core"], namespace)

    deadline = time.monotonic() + wait
    checks = run(cfg, sections, probe_cluster, apis)
    while not all(c.passed for c in checks) and time.monotonic() + 2 <= deadline:
        time.sleep(2)
        checks = run(cfg, sections, probe_cluster, apis)
    text, code = report(checks, sections, rest.json_output())
    click.echo(text)
    if code:
        raise SystemExit(code)
