"""Requests/s, latency and CPU through the sample chain, beside the same load straight to one server.

    .venv/bin/python bench/sdc/run.py [--seconds 4] [--connections 16] [--path /about.html]
                                      [--trace-ratios 1.0,0.01] [--dataplanes nginx,python]
                                      [--mode auto|netns|loopback] [--no-waf] [--reuse]

Starts its own Redis, Jaeger and sample chain (``bench/sdc/chain.py``: state in
``.clover/bench-sdc/`` or CLOVER_BENCH_STATE_DIR, ports 31xxx, subnet 10.177.200.0/24 in
namespace mode (root), else 127.177.200.0/24; one run at a time, a previous run's leftovers
waited for or removed) unless ``--reuse`` finds them running, and stops what it started, also on
SIGTERM or a failure. Spans are exported to Jaeger, as in normal use.

For each tracing ratio (the pods restarted with CLOVER_SDC_TRACE_RATIO), each data plane of the
load balancers (http-lb-v1/v2 restarted with CLOVER_SDC_DATAPLANE) and each number of keep-alive
connections, wrk (1 thread) runs ``--seconds`` against, in turn:

1. ``server``: clover-server1 directly (the baseline; once per ratio);
2. ``lb``: http-lb-v1 -> clover-server1..3;
3. ``chain``: proxy-access-control -> http-lb v1/v2 -> servers, with the IDS copy of each request;
4. ``chain-ids``: the same with the proxy's mirror off (ModifyProxy ``mirror_path: off``);
5. ``chain+waf`` (first ratio and data plane only): the proxy restarted with ``CLOVER_WAF=on``:
   each request is first checked by modsecurity-crs (Apache, ModSecurity, the CRS).

It prints requests/s, p50/p99 and errors for each, the CPU each kind of pod (Apache included,
nginx counted with its lb pod) used per 1,000 requests, and per ratio and data plane: the
throughput ratio chain/server, the p50 and p99 each hop adds (lb - server, chain - lb, the IDS
copy: chain - chain-ids, the WAF check: chain+waf - chain), and nginx/python for lb and chain.
wrk sends ``User-Agent: wrk`` (the CRS notes a request without one). The machine is shared: the
load average is printed before and after; read p99 with it in mind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.sdc.chain import BenchBusy, BenchStack, bench_env  # noqa: E402
from clover.config import Config  # noqa: E402
from sdc import grpc_client, topology  # noqa: E402
from stack.catalogue import local_stack  # noqa: E402
from stack.launcher import Launcher, StackError  # noqa: E402

PROXY = "proxy-access-control"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


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


POD_KINDS = {"proxy": (PROXY,), "lb": ("http-lb-v1", "http-lb-v2"),
             "servers": tuple(f"clover-server{i}" for i in range(1, 6)), "ids": ("snort-ids",),
             "waf": ("modsecurity-crs",)}  # fmt: skip
LABELS = {"server": "server (baseline)", "lb": "lb -> server", "chain": "proxy -> lb -> server (+IDS)",
          "chain-ids": "proxy -> lb -> server (no IDS)", "chain+waf": "proxy+WAF -> lb -> server (+IDS)"}  # fmt: skip


def pod_cpu(launcher: Launcher) -> dict[str, float]:
    """CPU seconds used so far by each kind of pod (children included: nginx, the IDS engine, Apache)."""
    used = dict.fromkeys(POD_KINDS, 0.0)
    for kind, names in POD_KINDS.items():
        for name in names:
            proc = launcher.process(name)
            if proc is None:
                continue
            with contextlib.suppress(psutil.Error):
                for p in [proc, *proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = p.cpu_times()
                        used[kind] += t.user + t.system
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of each wrk run")
    parser.add_argument("--connections", default="16", help="comma-separated keep-alive connection counts")
    parser.add_argument("--path", default="/about.html", help="page requested (a static page of the site)")
    parser.add_argument("--trace-ratios", default="1.0,0.01", help="span sampling ratios to compare")
    parser.add_argument("--dataplanes", default="nginx,python", help="load balancer data planes to compare")
    parser.add_argument("--no-waf", action="store_true", help="leave out the chain with the WAF check")
    parser.add_argument("--mode", choices=["auto", "netns", "loopback"], default="auto",
                        help="pods in network namespaces (root) or on loopback addresses")  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="use running parts and leave them running")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    try:
        ratios = [float(r) for r in args.trace_ratios.split(",")]
        connection_counts = [int(c) for c in args.connections.split(",")]
    except ValueError as exc:
        sys.exit(f"bench/sdc: {exc}")
    dataplanes = args.dataplanes.split(",")
    if not set(dataplanes) <= {"nginx", "python"} or not all(0 <= r <= 1 for r in ratios):
        sys.exit("bench/sdc: --dataplanes takes nginx and/or python, --trace-ratios values within 0..1")

    env = bench_env(netns_mode=args.mode == "netns" or (args.mode == "auto" and topology.netns_available()))
    try:
        with BenchStack(env, reuse=args.reuse) as stack:
            if stack.removed:
                print(f"removed what a previous run left: {', '.join(stack.removed)}")
            print(f"sample chain in {topology.mode(stack.cfg)} mode, state in {stack.cfg.state_dir}")
            load = os.getloadavg()
            results = run(stack.cfg, args, ratios, dataplanes, connection_counts)
            report(args, results, load, os.getloadavg())
    except (BenchBusy, StackError) as exc:
        sys.exit(f"bench/sdc: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench/sdc: interrupted; what this run started was stopped")


@dataclasses.dataclass
class Result:
    name: str
    ratio: float
    dataplane: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_s: dict[str, float]


def restart(cfg: Config, names: list[str]) -> Launcher:
    launcher = local_stack(cfg)
    launcher.down(names)
    launcher.up(names)
    return launcher


@contextlib.contextmanager
def waf_checked_proxy(cfg: Config) -> Iterator[None]:
    """The proxy restarted with the WAF check on, and back as it was afterwards."""
    restart(dataclasses.replace(cfg, waf_check=True), [PROXY])
    try:
        yield
    finally:
        restart(cfg, [PROXY])


def measure(cfg: Config, launcher: Launcher, name: str, url: str, connections: int, seconds: int) -> Result:
    assert requests.get(url, headers={"User-Agent": "wrk"}, timeout=5).status_code == 200, url
    wrk(url, connections, 1)  # warm the pools
    before = pod_cpu(launcher)
    rps, p50, _, p99, total, errors = wrk(url, connections, seconds)
    after = pod_cpu(launcher)
    used = {kind: after[kind] - before[kind] for kind in after}
    return Result(name, cfg.sdc_trace_ratio, topology.dataplane(cfg, "http-lb-v1"), connections, rps, p50, p99,
                  total, errors, used)  # fmt: skip


def run(base: Config, args: argparse.Namespace, ratios: list[float], dataplanes: list[str],
        connection_counts: list[int]) -> list[Result]:  # fmt: skip
    results: list[Result] = []
    mirror_on = {"mirror_path": f"http://snort-ids:{topology.ids_http_port()}"}
    for ratio in ratios:
        for n, dataplane in enumerate(dataplanes):
            cfg = dataclasses.replace(base, sdc_trace_ratio=ratio, sdc_dataplane=dataplane)
            launcher = restart(cfg, ["sdc"] if n == 0 else ["http-lb-v1", "http-lb-v2"])
            pods = {"server": "clover-server1", "lb": "http-lb-v1", "chain": PROXY}
            urls = {name: f"http://{topology.pod_ip(cfg, pod)}:9180{args.path}" for name, pod in pods.items()}
            for c in connection_counts:
                if n == 0:
                    results.append(measure(cfg, launcher, "server", urls["server"], c, args.seconds))
                results.append(measure(cfg, launcher, "lb", urls["lb"], c, args.seconds))
                results.append(measure(cfg, launcher, "chain", urls["chain"], c, args.seconds))
                grpc_client.modify_proxy(cfg, {"mirror_path": "off"})
                results.append(measure(cfg, launcher, "chain-ids", urls["chain"], c, args.seconds))
                grpc_client.modify_proxy(cfg, mirror_on)
            if ratio == ratios[0] and n == 0 and not args.no_waf:
                with waf_checked_proxy(cfg):
                    results += [measure(cfg, launcher, "chain+waf", urls["chain"], c, args.seconds)
                                for c in connection_counts]  # fmt: skip
    return results


def report(args: argparse.Namespace, results: list[Result], load_before: tuple[float, ...],
           load_after: tuple[float, ...]) -> None:  # fmt: skip
    print(f"\nwrk -t1 -d{args.seconds}s against {args.path} (keep-alive); load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}")  # fmt: skip
    print(f"pods' CPU seconds per 1,000 requests (nginx with its lb pod)\n{'trace':>5} {'lb':<6} {'target':<32} "
          f"{'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          + " ".join(f"{k:>7}" for k in ("total", *POD_KINDS)))  # fmt: skip
    for r in results:
        per_k = {k: v / r.requests * 1000 if r.requests else 0.0 for k, v in r.cpu_s.items()}
        lb = "-" if r.name == "server" else r.dataplane
        print(f"{r.ratio:>5g} {lb:<6} {LABELS[r.name]:<32} {r.connections:>5} {r.rps:>7.0f} {r.p50_ms:>7.2f} "
              f"{r.p99_ms:>7.2f} {r.errors:>6} {sum(per_k.values()):>7.2f} "
              + " ".join(f"{per_k[k]:>7.2f}" for k in POD_KINDS))  # fmt: skip
    print()
    for ratio in dict.fromkeys(r.ratio for r in results):
        for c in dict.fromkeys(r.connections for r in results):
            server = next(r for r in results if (r.name, r.ratio, r.connections) == ("server", ratio, c))
            by: dict[tuple[str, str], Result] = {(r.name, r.dataplane): r for r in results
                                                 if r.ratio == ratio and r.connections == c}  # fmt: skip
            for dataplane in dict.fromkeys(d for _, d in by):
                lb, chain, bare = by[("lb", dataplane)], by[("chain", dataplane)], by[("chain-ids", dataplane)]
                line = (f"trace {ratio:g}, {c} conns, lb on {dataplane}: chain/server {chain.rps / server.rps:.2f}; "
                        f"added p50/p99 ms: lb {_hop(lb, server)}, proxy (+IDS) {_hop(chain, lb)}, "
                        f"the IDS copy {_hop(chain, bare)}")  # fmt: skip
                if ("chain+waf", dataplane) in by:
                    line += f", the WAF check {_hop(by[('chain+waf', dataplane)], chain)}"
                print(line)
            if {("lb", "nginx"), ("lb", "python")} <= set(by):
                print(f"trace {ratio:g}, {c} conns, nginx/python: lb {_ratio(by, 'lb')}, chain {_ratio(by, 'chain')}, "
                      f"chain without the IDS {_ratio(by, 'chain-ids')}")  # fmt: skip


def _hop(outer: Result, inner: Result) -> str:
    return f"{outer.p50_ms - inner.p50_ms:+.2f}/{outer.p99_ms - inner.p99_ms:+.2f}"


def _ratio(by: dict[tuple[str, str], Result], name: str) -> str:
    nginx, python = by[(name, "nginx")], by[(name, "python")]
    lb_cpu = [r.cpu_s["lb"] / r.requests * 1000 if r.requests else 0.0 for r in (nginx, python)]
    return f"{nginx.rps / python.rps:.2f}x req/s (lb CPU s/1k {lb_cpu[0]:.2f} vs {lb_cpu[1]:.2f})"


if __name__ == "__main__":
    main()
