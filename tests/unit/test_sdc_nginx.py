"""The load balancers' nginx data plane: which pods get it, and the configuration it renders
(checked by nginx itself)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from clover.config import Config
from sdc import topology
from sdc.lb import LbConfig
from sdc.metrics import ClusterStats
from sdc.nginx_lb import Upstream, nginx_binary, render, sampling_rule


@pytest.mark.parametrize(
    ("setting", "mode", "planes"),
    [("auto", "netns", ("nginx", "python")), ("auto", "cluster", ("python", "python")),
     ("nginx", "cluster", ("nginx", "python")), ("python", "loopback", ("python", "python"))],
)  # fmt: skip
def test_only_the_load_balancers_get_nginx_and_auto_means_python_in_a_cluster(
    setting: str, mode: str, planes: tuple[str, str]
) -> None:
    cfg = Config.from_env({"CLOVER_SDC_DATAPLANE": setting, "CLOVER_SDC_MODE": mode})
    assert (topology.dataplane(cfg, "http-lb-v2"), topology.dataplane(cfg, "proxy-access-control")) == planes


def test_the_sampling_split_follows_the_trace_ratio() -> None:
    assert [sampling_rule(r) for r in (1.0, 0.0, 0.01)] == ['* "01";', '* "00";', '1.00% "01"; * "00";']


def test_the_rendered_configuration_passes_nginx_t_and_lists_the_servers(tmp_path: Path) -> None:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / sub).mkdir(parents=True)
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
