"""bench/sdc's stack (Redis, Jaeger, the sample chain) set up twice in a row: the second run
works, with an empty trace store, and nothing is left behind; a run beside one in progress is
refused; and (as root) the pods turn their veths' forwarding back on when something on the host
turned it off (what a change of ``net.ipv4.ip_forward`` does to every interface)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from bench.sdc.chain import BenchBusy, BenchStack, bench_env, leftover_links
from sdc import topology
from tests.waiting import wait_until

_OFFSET = int(os.environ.get("CLOVER_TEST_PORT_OFFSET", "0"))
TAG = f"sdb{_OFFSET % 10000}"
PROXY = "proxy-access-control"


def forwarding(veth: str) -> str:
    return Path("/proc/sys/net/ipv4/conf", veth, "forwarding").read_text().strip()


def test_the_benchmark_setup_twice_in_a_row_works_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = bench_env(state_dir=str(tmp_path / "bench-sdc"), port_offset=500 + _OFFSET, tag=TAG)
    for run in (1, 2):
        with BenchStack(env) as stack:
            cfg = stack.cfg
            assert (stack.started, stack.removed) == (["redis", "jaeger", *topology.POD_NAMES], [])
            trace_store = stack.launcher.dirs("jaeger").data
            assert not (trace_store / "left-by-run-1").exists()
            proxy = f"http://{topology.pod_ip(cfg, PROXY)}:{topology.HTTP_PORT}/about.html"
            assert requests.get(proxy, timeout=10).status_code == 200, f"run {run}"
            with pytest.raises(BenchBusy, match=rf"another benchmark run \(pid {os.getpid()}\) is using "):
                BenchStack(env).__enter__()
            if topology.mode(cfg) == "netns" and run == 2:
                veths = [topology.host_veth(cfg, name) for name in topology.POD_NAMES]
                for veth in veths:
                    Path("/proc/sys/net/ipv4/conf", veth, "forwarding").write_text("0\n")
                wait_until(lambda: {forwarding(v) for v in veths} == {"1"}, 10, 0.1, "the pods to restore forwarding")  # noqa: B023
                assert requests.get(proxy, timeout=10).status_code == 200
                restored = requests.get(f"http://127.0.0.1:{topology.stats_port(cfg, PROXY)}/stats", timeout=5)
                assert restored.json()["metrics"]["clover_sdc_forwarding_restored_total"] == 1
        assert [n for n in topology.POD_NAMES if stack.launcher.process(n) is None] == list(topology.POD_NAMES)
        assert leftover_links(TAG) == ([], [])
        (trace_store / "left-by-run-1").write_text("spans of the run before\n")  # the next run starts without
