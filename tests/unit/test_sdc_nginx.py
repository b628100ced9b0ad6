"""The nginx data plane of the servers, the load balancers and the proxy: which pods get it, and the
configurations it renders (checked by nginx itself)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from clover.config import Config
from sdc import nginx_proxy, nginx_server, topology
from sdc.lb import LbConfig
from sdc.metrics import ClusterStats
from sdc.nginx_lb import render
from sdc.nginx_plane import (
    DRAIN_INTERVAL,
    NginxProcess,
    Upstream,
    as_int,
    log_entry,
    nginx_binary,
    sampling_rule,
    socket_dir,
)
from sdc.proxy import ProxyConfig
from sdc.server import Location, ServerConfig


@pytest.mark.parametrize(
    ("setting", "mode", "waf", "planes"),
    [("auto", "netns", "off", ("nginx", "nginx", "nginx")), ("auto", "cluster", "off", ("python", "python", "python")),
     ("nginx", "cluster", "off", ("nginx", "nginx", "nginx")),
     ("python", "loopback", "off", ("python", "python", "python")),
     ("auto", "netns", "on", ("nginx", "python", "nginx")),
     ("nginx", "loopback", "on", ("nginx", "python", "nginx"))],
)  # fmt: skip
def test_the_servers_lbs_and_proxy_get_nginx_unless_the_waf_checks_the_proxy_and_auto_means_python_in_a_cluster(
    setting: str, mode: str, waf: str, planes: tuple[str, str, str]
) -> None:
    cfg = Config.from_env({"CLOVER_SDC_DATAPLANE": setting, "CLOVER_SDC_MODE": mode, "CLOVER_WAF": waf})
    pods = ("http-lb-v2", "proxy-access-control", "clover-server1")
    assert tuple(topology.dataplane(cfg, pod) for pod in pods) == planes


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """An nginx home as the pod makes it: temporary directories and the short socket directory."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / sub).mkdir(parents=True)
    socket_dir(tmp_path).mkdir(mode=0o700)
    yield tmp_path
    shutil.rmtree(socket_dir(tmp_path))


def test_the_sampling_split_follows_the_trace_ratio() -> None:
    assert [sampling_rule(r) for r in (1.0, 0.0, 0.01)] == ['* "01";', '* "00";', '1.00% "01"; * "00";']


def test_the_rendered_configuration_passes_nginx_t_and_lists_the_servers(home: Path) -> None:
    tmp_path = home
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    upstreams = [Upstream(f"clover-server{i}:9180", f"127.0.0.{20 + i}", 9180, f"clover-server{i}", "fqdn",
                          ClusterStats("c")) for i in (1, 2)]  # fmt: skip
    lb = LbConfig(server_port=port, lb_path="/app")
    text = render("http-lb-v1", "http-lb", tmp_path, "127.0.0.1", lb, upstreams, 0.5)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run([nginx_binary(), "-t", "-c", str(conf), "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "server 127.0.0.21:9180 max_fails=1 fail_timeout=10s;\n        server 127.0.0.22:9180 max_fails=1" in text
    assert f"listen 127.0.0.1:{port} backlog=1024;" in text and "location /app {" in text
    assert 'split_clients "$request_id" $clover_root_sampled { 50.00% "01"; * "00"; }' in text
    assert ("user root;" in text) == (os.geteuid() == 0)
    assert 'x-envoy-downstream-service-cluster "http-lb";' in text
    assert 'x-envoy-downstream-service-node "http-lb-v1";' in text


def _checked(tmp_path: Path, text: str) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run([nginx_binary(), "-t", "-c", str(conf), "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("mirror", ["http://snort-ids:80", "off"])
def test_the_proxy_configuration_passes_nginx_t_with_its_block_list_copy_and_upstreams(home: Path, mirror: str) -> None:
    tmp_path = home
    port = _free_port()
    lbs = [Upstream("http-lb:9180", f"127.0.0.{11 + i}", 9180, "http-lb", "fqdn", ClusterStats("c")) for i in (0, 1)]
    ids = [Upstream("snort-ids:80", "127.0.0.30", 80, "snort-ids", "fqdn", ClusterStats("i"))]
    config = ProxyConfig(server_port=port, location_path="/app", mirror_path=mirror)
    text = nginx_proxy.render("proxy-access-control", "proxy-access-control", tmp_path, "127.0.0.1", config, lbs,
                              ids, ["10.0.0.7", "10.0.0.9"], 0.01)  # fmt: skip
    _checked(tmp_path, text)
    assert "        default 0;\n        10.0.0.7 1;\n        10.0.0.9 1;\n    }" in text
    assert "server 127.0.0.11:9180 max_fails=1 fail_timeout=10s;\n        server 127.0.0.12:9180" in text
    assert 'proxy_set_header Host "http-lb:9180";' in text and "location /app {" in text
    assert ("mirror /__clover_ids_copy;" in text) == (mirror != "off")
    ids = "server 127.0.0.30:80 max_fails=1 fail_timeout=1s;\n        server 127.0.0.1:1 backup max_fails=0;"
    assert (ids in text) == (mirror != "off")
    assert text.count("mirror /__clover_ids_copy;") == (2 if mirror != "off" else 0)  # /app and the 404s
    assert "Your address is blocked after an intrusion alert." in text


def test_a_log_line_is_read_and_bytes_in_it_that_are_not_utf8_are_replaced() -> None:
    assert log_entry(b'{"ua":"caf\xc3\xa9","status":"200"}') == {"ua": "caf\u00e9", "status": "200"}
    assert log_entry(b'{"ua":"curl \xff\xfe","status":"200"}') == {"ua": "curl \ufffd\ufffd", "status": "200"}
    with pytest.raises(ValueError):
        log_entry(b'{"ua":"cut short')


def test_a_logged_count_is_read_and_nginx_s_dash_or_an_empty_value_is_zero() -> None:
    assert [as_int(v) for v in ("1234", "0", "", "-", "12, 5", "\u00b2")] == [1234, 0, 0, 0, 0, 0]


def test_a_server_configuration_passes_nginx_t_and_sends_to_the_site_what_nginx_cannot_answer(home: Path) -> None:
    tmp_path = home
    locations = [
        Location("/test", "try_files $uri @default1", "/test"),
        Location("= /gone", 'return 410 a "gone" page'),
        Location("= /gone", "return 200 the second of equal locations"),
        Location("/slow", response_size=2048, latency_ms=5),
        Location("/cost", "return 402 $5"),
        Location("= /upload", "return 404"),
        Location("/{odd; path}"),
    ]
    config = ServerConfig(server_port=_free_port(), locations=locations)
    text = nginx_server.render("clover-server1", tmp_path, "127.0.0.1", tmp_path / "www", config, 1.0)
    _checked(tmp_path, text)
    blocks = dict(re.findall(r"\n        location ([^\n]+) \{\n(.*?)\n        \}", text, re.S))
    to_site = {key for key, body in blocks.items() if "proxy_pass http://clover_site;" in body}
    assert to_site == {"@site", '= "/api/echo"', '= "/upload"', '= "/upload_test"', '"/slow"', '"/cost"'}
    assert blocks['= "/gone"'].strip() == 'return 410 "a \\"gone\\" page\\n";'
    assert 'try_files $uri $uri/index.html "/index.html" @site;' in blocks['"/test"']
    assert 'try_files "/index.html" @site;' in blocks['= "/"']
    assert "try_files $uri $uri/index.html @site;" in blocks['"/"'] and '"/{odd; path}"' in blocks
    assert f'root "{tmp_path / "www"}";' in text and f"server unix:{socket_dir(tmp_path)}/site.sock;" in text


def test_a_server_whose_home_page_is_a_return_gets_no_file_location_for_it(home: Path) -> None:
    config = ServerConfig(server_port=_free_port(), locations=[Location("/", "return 503 down for maintenance")])
    text = nginx_server.render("clover-server2", home, "127.0.0.1", home / "www", config, 0.01)
    _checked(home, text)
    assert 'location = "/"' not in text
    assert 'location "/" {\n            return 503 "down for maintenance\\n";\n        }' in text


def test_an_exact_home_location_answered_from_files_serves_the_configured_index(home: Path) -> None:
    locations = [Location("= /"), Location("= /test", "try_files $uri @default1")]
    config = ServerConfig(server_port=_free_port(), site_index="home.html", locations=locations)
    text = nginx_server.render("clover-server3", home, "127.0.0.1", home / "www", config, 1.0)
    _checked(home, text)
    assert text.count('location = "/" {') == 1 and 'try_files "/home.html" @site;' in text
    assert 'try_files $uri $uri/index.html "/home.html" @site;' in text


def test_the_access_log_is_read_at_once_when_quiet_then_at_most_every_drain_interval_and_all_of_it_on_close(
    tmp_path: Path,
) -> None:
    read: list[tuple[str, float]] = []
    runtime = SimpleNamespace(cfg=SimpleNamespace(state_dir=tmp_path), name="http-lb-v1")
    service = SimpleNamespace(runtime=runtime, account=lambda entry, at: read.append((entry["rid"], at)))

    def line(rid: str) -> bytes:
        return b'{"rid":"%s"}\n' % rid.encode()

    async def run() -> None:
        process = NginxProcess(service)  # type: ignore[arg-type]
        process.home.mkdir(parents=True)
        process._open_fifo()
        writer = os.open(process.home / "access.fifo", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(writer, line("a"))
            while len(read) < 1:
                await asyncio.sleep(0)
            os.write(writer, line("b") + line("c"))
            while len(read) < 3:
                await asyncio.sleep(0.001)
            os.write(writer, line("d") + b'{"rid":"e"')  # "e" is cut short: nginx is still writing it
            await process.close(grace=0)
        finally:
            os.close(writer)

    asyncio.run(run())
    assert [rid for rid, _ in read] == ["a", "b", "c", "d"]
    assert read[1][1] == read[2][1]  # b and c: one wake-up
    assert read[1][1] - read[0][1] >= DRAIN_INTERVAL * 0.9
