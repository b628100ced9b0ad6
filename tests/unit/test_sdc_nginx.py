"""The nginx data plane of the load balancers and the proxy: which pods get it, and the
configurations it renders (checked by nginx itself)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clover.config import Config
from sdc import nginx_proxy, topology
from sdc.lb import LbConfig
from sdc.metrics import ClusterStats
from sdc.nginx_lb import render
from sdc.nginx_plane import Upstream, as_int, log_entry, nginx_binary, sampling_rule, socket_dir
from sdc.proxy import ProxyConfig


@pytest.mark.parametrize(
    ("setting", "mode", "waf", "planes"),
    [("auto", "netns", "off", ("nginx", "nginx", "python")), ("auto", "cluster", "off", ("python", "python", "python")),
     ("nginx", "cluster", "off", ("nginx", "nginx", "python")),
     ("python", "loopback", "off", ("python", "python", "python")),
     ("auto", "netns", "on", ("nginx", "python", "python")),
     ("nginx", "loopback", "on", ("nginx", "python", "python"))],
)  # fmt: skip
def test_the_load_balancers_and_the_proxy_get_nginx_unless_the_waf_checks_and_auto_means_python_in_a_cluster(
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
