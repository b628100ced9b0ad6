"""The validation service with real Apache JMeter against a local HTTP target.

The service runs as the local stack runs it (`cloverctl local up validation`), on this suite's
ports; the commands are cloverctl's. The target is a small aiohttp server (http and https) in
this process that records every request it receives, so each test can compare what JMeter
reported with what the server saw.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml
from aiohttp import web
from click.testing import CliRunner, Result

from clover.config import CHECKOUT_DIR, Config
from cloverctl.main import cli
from stack.catalogue import local_stack
from stack.launcher import Launcher, port_is_free
from tests.waiting import wait_until
from validation import client
from validation.results import Sample, final_summary, parse_jtl, parse_summariser

OFFSET = int(os.environ.get("CLOVER_TEST_PORT_OFFSET", "0"))
GRPC = f"127.0.0.1:{50157 + OFFSET}"
RMI_PORT = 21099 + OFFSET
CONTROLLER_URL = f"http://127.0.0.1:{18157 + OFFSET}"
GUIDE_YAML = CHECKOUT_DIR / "cloverctl" / "yaml" / "jmeter_testplan.yaml"


@dataclass(frozen=True)
class Seen:
    """A request as the target server received it."""

    scheme: str
    method: str
    path_qs: str
    headers: tuple[tuple[str, str], ...]
    body: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Target:
    """An HTTP and an HTTPS listener on ephemeral loopback ports; ``/slow`` answers after 20 ms."""

    def __init__(self, cert: Path, key: Path):
        self.seen: list[Seen] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        self.runner, self.http_port, self.https_port = asyncio.run_coroutine_threadsafe(
            self._start(tls), self.loop
        ).result(30)

    async def _start(self, tls: ssl.SSLContext) -> tuple[web.AppRunner, int, int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ports = []
        for context in (None, tls):
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return runner, ports[0], ports[1]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/slow":
            await asyncio.sleep(0.02)
        self.seen.append(
            Seen(request.scheme, request.method, request.path_qs, tuple(request.headers.items()), body.decode())
        )
        return web.Response(text="ok")

    def url(self, path: str = "/", https: bool = False) -> str:
        return f"https://127.0.0.1:{self.https_port}{path}" if https else f"http://127.0.0.1:{self.http_port}{path}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    t = Target(d / "cert.pem", d / "key.pem")
    yield t
    t.close()


@pytest.fixture(scope="module")
def vcfg(cfg: Config) -> Config:
    """This module's service; and a sample chain of its own (addresses, names, ports), so that a
    chain another suite runs on this machine is not disturbed."""
    return replace(
        cfg,
        validation_grpc=GRPC,
        controller_url=CONTROLLER_URL,
        jmeter_rmi_port=RMI_PORT,
        sdc_tag=f"v{OFFSET // 10 % 1000000}"[:7],
        # network namespaces (root) or loopback addresses, as the chain picks by itself
        sdc_subnet=f"{10 if os.geteuid() == 0 else 127}.177.{100 + OFFSET // 1000 % 100}.0/24",
        sdc_stats_port=15190 + OFFSET,
    )


@pytest.fixture(scope="module")
def service(vcfg: Config) -> Iterator[Launcher]:
    """The validation service and the controller cloverctl talks to, started fresh for this
    module and stopped after it."""
    launcher = local_stack(vcfg)
    launcher.up(["validation", "controller"], fresh=True)
    yield launcher
    launcher.down(["controller", "validation"])


def cloverctl(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), env={"CLOVER_CONTROLLER_URL": CONTROLLER_URL})
    return result


def write_plan(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(tmp_path: Path, data: dict[str, Any], *start_args: str) -> tuple[Result, list[Sample]]:
    """create testplan -f, start testplan --wait [args]; the run's JTL as samples."""
    created = cloverctl("create", "testplan", "-f", str(write_plan(tmp_path, data)))
    assert (created.exit_code, created.output) == (0, "Generated test plan\n")
    started = cloverctl("start", "testplan", "--wait", "--timeout", "240", *start_args)
    assert started.exit_code == 0, started.output
    detail = cloverctl("get", "testresult", "detail")
    assert detail.exit_code == 0 and detail.output.startswith("Retrieved all results\ntimeStamp,elapsed,label,")
    return started, parse_jtl(detail.output.removeprefix("Retrieved all results\n"))


def guide_plan_at(url: str) -> dict[str, Any]:
    """The original guide's plan with its urls pointed at ``url``, nothing else changed."""
    data = yaml.safe_load(GUIDE_YAML.read_text())
    for entry in data["url_list"]:
        entry["url"] = url
    return data


def test_the_original_guide_plan_yields_every_sample_with_its_label_and_user_agent(
    service: Launcher, target: Target, tmp_path: Path
) -> None:
    target.seen.clear()
    data = guide_plan_at(target.url())
    assert data["load_spec"] == {"num_threads": 5, "loops": 2, "ramp_time": 60, "duration": 80}
    started, samples = run(tmp_path, data)
    assert started.output.startswith("Started jmeter on pid: ")
    # 5 threads x 2 loops x 2 urls, every one answered 200
    assert len(samples) == 20
    assert collections.Counter(s.label for s in samples) == {"url1": 10, "url2": 10}
    assert {(s.response_code, s.success) for s in samples} == {("200", True)}
    assert collections.Counter(s.thread_name for s in samples) == {f"ThreadGroup 1-{i}": 4 for i in range(1, 6)}
    # each thread sends url1 then url2, loop after loop
    for thread in {s.thread_name for s in samples}:
        mine = sorted((s for s in samples if s.thread_name == thread), key=lambda s: s.timestamp)
        assert [s.label for s in mine] == ["url1", "url2", "url1", "url2"]
    # what the server saw: 20 GETs of /, 10 with each user agent
    assert len(target.seen) == 20
    assert {(r.scheme, r.method, r.path_qs) for r in target.seen} == {("http", "GET", "/")}
    assert collections.Counter(r.header("User-Agent") for r in target.seen) == {"chrome": 10, "safari": 10}
    # the summary log's last line covers the run; the computed summary agrees with the JTL
    log = cloverctl("get", "testresult", "log")
    assert log.exit_code == 0 and log.output.startswith("Retrieved all results\n")
    last = final_summary(log.output)
    assert last is not None and (last.count, last.errors) == (20, 0)
    assert last.text().startswith("20 in 00:01:0")
    assert all(line.kind in "+=" for line in parse_summariser(log.output))
    summary = client.get_results(GRPC, "summary")
    assert [(r.label, r.samples, r.errors) for r in summary.summary] == [
        ("url1", 10, 0),
        ("url2", 10, 0),
        ("TOTAL", 20, 0),
    ]
    assert summary.summary[2].p99_ms == max(s.elapsed for s in samples)
    # ramp_time 60 s: JMeter 5.6 starts the 5 users 15 s apart, the last one 60 s after the first
    first_start = {t: min(s.timestamp for s in samples if s.thread_name == t) for t in {s.thread_name for s in samples}}
    assert 59_000 <= max(first_start.values()) - min(first_start.values()) <= 61_000


def test_two_slaves_produce_twice_the_samples(service: Launcher, target: Target, tmp_path: Path) -> None:
    target.seen.clear()
    data = {
        "load_spec": {"num_threads": 2, "loops": 3},
        "url_list": [
            {"name": "home", "url": target.url("/"), "user-agent": "chrome"},
            {"name": "about", "url": target.url("/about"), "user-agent": "safari"},
        ],
    }
    _, samples = run(tmp_path, data, "-s", "2")
    servers = [f"127.0.0.1:{RMI_PORT}", f"127.0.0.1:{RMI_PORT + 1}"]
    status = client.get_status(GRPC)
    assert (status.state, status.num_slaves, list(status.slave_hosts)) == ("finished", 2, servers)
    per_engine = 2 * 3 * 2
    assert len(samples) == 2 * per_engine
    # each JMeter server ran the whole plan: its threads are named after it
    engines = collections.Counter(s.thread_name.split("-ThreadGroup")[0] for s in samples)
    assert engines == {servers[0]: per_engine, servers[1]: per_engine}
    assert collections.Counter(s.label for s in samples) == {"home": 2 * 6, "about": 2 * 6}
    assert len(target.seen) == 2 * per_engine
    assert collections.Counter((r.path_qs, r.header("User-Agent")) for r in target.seen) == {
        ("/", "chrome"): 12,
        ("/about", "safari"): 12,
    }
    # the local JMeter servers exit with the run
    wait_until(lambda: port_is_free(RMI_PORT) and port_is_free(RMI_PORT + 1), 30, what="JMeter servers to exit")


def test_a_duration_bounded_run_stops_on_time(service: Launcher, target: Target, tmp_path: Path) -> None:
    data = {
        "load_spec": {"num_threads": 2, "loops": 0, "duration": 3},
        "url_list": [{"name": "slow", "url": target.url("/slow"), "user-agent": "bounded"}],
    }
    _, samples = run(tmp_path, data)
    status = client.get_status(GRPC)
    assert (status.state, status.exit_code) == ("finished", 0)
    assert samples and all(s.success for s in samples)
    span_ms = max(s.end for s in samples) - min(s.timestamp for s in samples)
    # loops 0 would run forever: the 3 s duration ends it (one 20 ms request may be in flight)
    assert 2_000 <= span_ms <= 3_000 + 500


def test_https_query_strings_headers_and_bodies_are_sent_as_written(
    service: Launcher, target: Target, tmp_path: Path
) -> None:
    target.seen.clear()
    body = '{"order": 7, "note": "${__threadNum} \\\\ $x"}'
    data = {
        "load_spec": {"num_threads": 1, "loops": 1},
        "url_list": [
            {
                "name": "create order",
                "url": target.url("/orders?dry_run=1&tag=a%20b", https=True),
                "method": "POST",
                "user-agent": "clover-test/1.0",
                "headers": {"Content-Type": "application/json", "X-Request-Tag": "${tag}"},
                "body": body,
            },
            {"name": "search", "url": f"127.0.0.1:{target.http_port}/search?q=mesh&page=2", "method": "get"},
        ],
    }
    _, samples = run(tmp_path, data)
    assert [(s.label, s.response_code) for s in samples] == [("create order", "200"), ("search", "200")]
    post, get = target.seen
    assert (post.scheme, post.method, post.path_qs, post.body) == ("https", "POST", "/orders?dry_run=1&tag=a%20b", body)
    assert (post.header("User-Agent"), post.header("Content-Type"), post.header("X-Request-Tag")) == (
        "clover-test/1.0",
        "application/json",
        "${tag}",
    )
    assert (get.scheme, get.method, get.path_qs, get.body) == ("http", "GET", "/search?q=mesh&page=2", "")


def test_a_malformed_plan_is_refused_and_the_plan_on_the_master_is_kept(
    service: Launcher, vcfg: Config, target: Target, tmp_path: Path
) -> None:
    good = {"load_spec": {"num_threads": 1}, "url_list": [{"name": "a", "url": target.url()}]}
    assert cloverctl("create", "testplan", "-f", str(write_plan(tmp_path, good))).exit_code == 0
    jmx = vcfg.state_dir / "validation" / "data" / "tests" / "test.jmx"
    before = jmx.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("load_spec:\n  num_threads: 1\n  loops: 0\nurl_list:\n  - name: a\n    url: gopher://x\n")
    result = cloverctl("create", "testplan", "-f", str(bad))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: {bad} was refused (nothing was sent):\n"
        "  load_spec.duration: loops 0 runs forever: give a duration (seconds) to stop it\n"
        "  url_list[0].url: 'gopher://x': the scheme must be http or https, not 'gopher'\n",
    )
    assert jmx.read_text() == before


def test_stop_testplan_ends_a_running_test(service: Launcher, target: Target, tmp_path: Path) -> None:
    data = {
        "load_spec": {"num_threads": 2, "loops": 0, "duration": 600},
        "url_list": [{"name": "s", "url": target.url("/slow")}],
    }
    assert cloverctl("create", "testplan", "-f", str(write_plan(tmp_path, data))).exit_code == 0
    started = client.start_test(GRPC)
    wait_until(lambda: client.get_status(GRPC).samples > 0, 60, what="the first samples")
    second = cloverctl("start", "testplan")
    assert second.exit_code == 1
    assert second.output == (
        f"Error: Failed to start test: a test is already running (run {started.run_id}, pid {started.pid});"
        " stop it first\n"
    )
    stopped = cloverctl("stop", "testplan")
    assert (stopped.exit_code, stopped.output) == (0, f"Stopped jmeter on pid: {started.pid}\n")
    status = client.get_status(GRPC)
    assert (status.state, status.run_id) == ("stopped", started.run_id)
    assert not psutil.pid_exists(started.pid) or psutil.Process(started.pid).status() == psutil.STATUS_ZOMBIE


def test_stopping_the_service_stops_its_test(service: Launcher, target: Target, tmp_path: Path) -> None:
    data = {
        "load_spec": {"num_threads": 1, "loops": 0, "duration": 600},
        "url_list": [{"name": "s", "url": target.url("/slow")}],
    }
    assert cloverctl("create", "testplan", "-f", str(write_plan(tmp_path, data))).exit_code == 0
    started = client.start_test(GRPC)
    wait_until(lambda: client.get_status(GRPC).samples > 0, 60, what="the first samples")
    service.down(["validation"])
    assert not psutil.pid_exists(started.pid)
    service.up(["validation"])
    status = client.get_status(GRPC)
    assert (status.state, status.run_id) == ("stopped", started.run_id)
    assert status.samples > 0


def test_the_original_guide_plan_unchanged_against_the_local_sample_chain(
    vcfg: Config, service: Launcher, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """With the sample chain running, the guide's yaml as shipped (http://proxy-access-control.default:9180)
    reaches the chain's proxy: the service resolves the name through the local pod registry."""
    chain = local_stack(vcfg)
    if "sdc" not in chain.groups:
        pytest.skip("the sample chain (sdc) is not in the local stack's catalogue yet")
    request.getfixturevalue("stack")  # the backing services the chain reports to
    chain.up(["sdc"])
    try:
        created = cloverctl("create", "testplan", "-f", str(GUIDE_YAML))
        assert (created.exit_code, created.output) == (0, "Generated test plan\n")
        started = cloverctl("start", "testplan", "--wait", "--timeout", "240")
        assert started.exit_code == 0, started.output
        detail = cloverctl("get", "testresult", "detail")
        samples = parse_jtl(detail.output.removeprefix("Retrieved all results\n"))
    finally:
        chain.down(["sdc"])
    assert len(samples) == 5 * 2 * 2
    assert collections.Counter(s.label for s in samples) == {"url1": 10, "url2": 10}
    assert {(s.response_code, s.success) for s in samples} == {("200", True)}
    # what the chain saw, from its spans: the proxy and the servers each served 20 requests,
    # 10 with each user agent
    status = client.get_status(GRPC)
    window = (int(status.started_at * 1e6), int((status.finished_at + 1) * 1e6))
    expected = {"chrome": 10, "safari": 10}
    seen_by_proxy = wait_until(
        lambda: (c := server_user_agents(vcfg, ("proxy-access-control",), window)) == expected and c,
        60,
        what="the proxy's spans",
    )
    assert seen_by_proxy == expected
    servers = tuple(f"clover-server{i}" for i in range(1, 6))
    seen_by_servers = wait_until(
        lambda: (c := server_user_agents(vcfg, servers, window)) == expected and c, 60, what="the servers' spans"
    )
    assert seen_by_servers == expected


def server_user_agents(cfg: Config, services: tuple[str, ...], window: tuple[int, int]) -> collections.Counter[str]:
    """User agents of the server-side spans these services reported to Jaeger in the window (µs)."""
    spans: dict[str, str] = {}
    for service in services:
        params: dict[str, str | int] = {"service": service, "start": window[0], "end": window[1], "limit": 1000}
        answer = requests.get(f"{cfg.jaeger_url}/api/traces", params=params, timeout=10)
        answer.raise_for_status()
        for trace in answer.json().get("data") or []:
            for span in trace["spans"]:
                tags = {t["key"]: t["value"] for t in span["tags"]}
                if (
                    trace["processes"][span["processID"]]["serviceName"] == service
                    and tags.get("span.kind") == "server"
                ):
                    spans[span["spanID"]] = tags.get("user_agent", "")
    return collections.Counter(spans.values())
