"""Requests/s and latency through the sample chain, beside the same load straight to one server.

    .venv/bin/python bench/sdc/run.py [--seconds 4] [--connections 1,16] [--path /about.html]
                                      [--mode auto|netns|loopback] [--trace-ratio 1.0]

Starts its own Redis, Jaeger and sample chain (``bench/sdc/chain.py``: state in
``.clover/bench-sdc/`` or CLOVER_BENCH_STATE_DIR, ports 31xxx, subnet 10.177.200.0/24 in
namespace mode (root), else 127.177.200.0/24; one run at a time, a previous run's leftovers
waited for or removed) unless ``--reuse`` finds them running, and stops what it started, also on
SIGTERM or a failure. Spans are exported to Jaeger and every request is copied to snort-ids, as
in normal use (``--trace-ratio`` lowers the sampling).

For each number of keep-alive connections, wrk (1 thread) runs ``--seconds`` against, in turn:

1. ``server``: clover-server1 directly (the baseline);
2. ``lb``: http-lb-v1 -> clover-server1..3;
3. ``chain``: proxy-access-control -> http-lb v1/v2 -> servers, with the IDS mirror;
4. ``chain+waf``: the same with the proxy restarted with ``CLOVER_WAF=on``: each request is
   first checked by modsecurity-crs (Apache, ModSecurity, the CRS in anomaly mode).

It prints requests/s, p50/p90/p99 for each; the throughput ratios chain/server and
chain+waf/chain; the p50 and p99 each hop adds (lb - server, chain - lb, chain+waf - chain); and
the CPU the pods (Apache included) used per 1,000 requests. wrk sends ``User-Agent: wrk`` (the
CRS notes a request without one). The machine is shared (2 cores): keep runs short, and read p99
with the machine's load in mind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.sdc.chain import BenchBusy, BenchStack, bench_env  # noqa: E402
from clover.config import Config  # noqa: E402
from sdc import grpc_client, topology  # noqa: E402
from sdc.waf.check import ext_authz_metric  # noqa: E402
from stack.catalogue import local_stack  # noqa: E402
from stack.launcher import Launcher, StackError  # noqa: E402

PROXY = "proxy-access-control"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclasses.dataclass
class Result:
    name: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_s: float


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unexpected latency {text!r} from wrk")
    return float(m.group(1)) * UNITS[m.group(2)]


def _found(pattern: str, out: str) -> str:
    m = re.search(pattern, out)
    if not m:
        raise ValueError(f"no {pattern!r} in the output of wrk")
    return m.group(1)


def wrk(url: str, connections: int, seconds: int) -> tuple[float, float, float, float, int, int]:
    """(requests/s, p50, p90, p99 in ms, requests, non-2xx or socket errors) of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", "-H", "User-Agent: wrk",
         url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout  # fmt: skip
    rps = float(_found(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _ms(_found(r"\s50%\s+(\S+)", out))
    p90 = _ms(_found(r"\s90%\s+(\S+)", out))
    p99 = _ms(_found(r"\s99%\s+(\S+)", out))
    total = int(_found(r"(\d+) requests in", out))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return rps, p50, p90, p99, total, errors


def pod_cpu(launcher: Launcher) -> float:
    """CPU seconds used so far by every pod process (and the IDS engine)."""
    total = 0.0
    for name in topology.POD_NAMES:
        proc = launcher.process(name)
        if proc is None:
            continue
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of each wrk run")
    parser.add_argument("--connections", default="1,16", help="comma-separated keep-alive connection counts")
    parser.add_argument("--path", default="/about.html", help="page requested (a static page of the site)")
    parser.add_argument("--trace-ratio", default=None, help="span sampling ratio for the pods (default 1.0)")
    parser.add_argument("--mode", choices=["auto", "netns", "loopback"], default="auto",
                        help="pods in network namespaces (root) or on loopback addresses")  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="use running parts and leave them running")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")

    env = bench_env(netns_mode=args.mode == "netns" or (args.mode == "auto" and topology.netns_available()))
    if args.trace_ratio is not None:
        env["CLOVER_SDC_TRACE_RATIO"] = args.trace_ratio
    try:
        with BenchStack(env, reuse=args.reuse) as stack:
            if stack.removed:
                print(f"removed what a previous run left: {', '.join(stack.removed)}")
            print(f"sample chain in {topology.mode(stack.cfg)} mode, state in {stack.cfg.state_dir}")
            run(stack.cfg, stack.launcher, args)
    except (BenchBusy, StackError) as exc:
        sys.exit(f"bench/sdc: {exc}")


@contextlib.contextmanager
def waf_checked_proxy(cfg: Config) -> Iterator[None]:
    """The proxy restarted with the WAF check on, and back as it was afterwards."""
    launchers = [local_stack(dataclasses.replace(cfg, waf_check=on)) for on in (True, cfg.waf_check)]
    launchers[0].down([PROXY])
    launchers[0].up([PROXY])
    try:
        yield
    finally:
        launchers[1].down([PROXY])
        launchers[1].up([PROXY])


def measure(launcher: Launcher, name: str, url: str, connections: int, seconds: int) -> Result:
    assert requests.get(url, headers={"User-Agent": "wrk"}, timeout=5).status_code == 200, url
    wrk(url, connections, 1)  # warm the pools
    cpu = pod_cpu(launcher)
    rps, p50, p90, p99, total, errors = wrk(url, connections, seconds)
    return Result(name, connections, rps, p50, p90, p99, total, errors, pod_cpu(launcher) - cpu)


def run(cfg: Config, launcher: Launcher, args: argparse.Namespace) -> None:
    targets = {
        "server": f"http://{topology.pod_ip(cfg, 'clover-server1')}:9180{args.path}",
        "lb": f"http://{topology.pod_ip(cfg, 'http-lb-v1')}:9180{args.path}",
        "chain": f"http://{topology.pod_ip(cfg, PROXY)}:9180{args.path}",
    }
    ids_before = grpc_client.snort_status(cfg)["requests_inspected"]
    connection_counts = [int(c) for c in args.connections.split(",")]
    results = [measure(launcher, name, url, connections, args.seconds)
               for connections in connection_counts for name, url in targets.items()]  # fmt: skip
    proxy_stats = requests.get(f"http://127.0.0.1:{topology.stats_port(cfg, PROXY)}/stats", timeout=5).json()["metrics"]
    with waf_checked_proxy(cfg):
        results += [measure(launcher, "chain+waf", targets["chain"], connections, args.seconds)
                    for connections in connection_counts]  # fmt: skip
        waf_metrics = requests.get(f"http://127.0.0.1:{topology.stats_port(cfg, PROXY)}/stats",
                                   timeout=5).json()["metrics"]  # fmt: skip
    time.sleep(1.0)
    ids = grpc_client.snort_status(cfg)

    print(f"\nwrk -t1 -d{args.seconds:g}s against {args.path} (keep-alive); pods' CPU per 1,000 requests")
    print(f"{'target':<33} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'CPU s/1k':>9}")  # fmt: skip
    labels = {"server": "server (baseline)", "lb": "lb -> server", "chain": "proxy -> lb -> server (+IDS)",
              "chain+waf": "proxy+WAF -> lb -> server (+IDS)"}  # fmt: skip
    for r in sorted(results, key=lambda r: (r.connections, list(labels).index(r.name))):
        per_k = r.cpu_s / r.requests * 1000 if r.requests else 0.0
        print(f"{labels[r.name]:<33} {r.connections:>5} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p90_ms:>8.2f} "
              f"{r.p99_ms:>8.2f} {r.errors:>7} {per_k:>9.2f}")  # fmt: skip
    print()
    for connections in sorted({r.connections for r in results}):
        by = {r.name: r for r in results if r.connections == connections}
        ratio = by["chain"].rps / by["server"].rps
        lb_hop = (by["lb"].p50_ms - by["server"].p50_ms, by["lb"].p99_ms - by["server"].p99_ms)
        proxy_hop = (by["chain"].p50_ms - by["lb"].p50_ms, by["chain"].p99_ms - by["lb"].p99_ms)
        print(f"{connections:>3} conns: throughput chain/server = {ratio:.2f}; added by the lb hop: "
              f"p50 {lb_hop[0]:+.2f} ms, p99 {lb_hop[1]:+.2f} ms; by the proxy hop (with the IDS copy): "
              f"p50 {proxy_hop[0]:+.2f} ms, p99 {proxy_hop[1]:+.2f} ms")  # fmt: skip
        waf_hop = (by["chain+waf"].p50_ms - by["chain"].p50_ms, by["chain+waf"].p99_ms - by["chain"].p99_ms)
        print(f"{'':>10} with the WAF: throughput chain+waf/chain = {by['chain+waf'].rps / by['chain'].rps:.2f}; "
              f"added by the WAF check: p50 {waf_hop[0]:+.2f} ms, p99 {waf_hop[1]:+.2f} ms")  # fmt: skip
    chain_requests = sum(r.requests for r in results if r.name.startswith("chain"))
    print(f"\nIDS: {ids['requests_inspected'] - ids_before} copies inspected for ~{chain_requests} chain requests "
          f"(+ warm-ups); proxy dropped {proxy_stats.get('clover_sdc_proxy_mirror_dropped_total', 0):.0f} copies, "
          f"{proxy_stats.get('clover_sdc_proxy_mirror_errors_total', 0):.0f} failed (without the WAF)")  # fmt: skip
    checks = {o: waf_metrics.get(ext_authz_metric(PROXY, o), 0) for o in ("ok", "denied", "error")}
    print(f"WAF checks at the proxy: ok {checks['ok']:.0f}, denied {checks['denied']:.0f}, "
          f"error {checks['error']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
