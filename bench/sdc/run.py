"""Requests/s, latency and CPU through the sample chain, beside the same load straight to one server.

    .venv/bin/python bench/sdc/run.py [--seconds 4] [--connections 16] [--path /about.html]
                                      [--trace-ratios 1.0,0.01] [--dataplanes nginx,python]
                                      [--proxy-dataplanes nginx,python] [--mode auto|netns|loopback]
                                      [--no-waf] [--reuse] [--rate 1000] [--tag sdcb] [--port-offset 0]

Starts its own Redis, Jaeger and sample chain (``bench/sdc/chain.py``: state in
``.clover/bench-sdc/`` or CLOVER_BENCH_STATE_DIR, ports 31xxx (+ ``--port-offset``), subnet
10.177.200.0/24 in namespace mode (root), else 127.177.200.0/24 (the third number + offset/100),
namespaces and veths named ``<--tag>-...``; one run at a time, a previous run's leftovers
waited for or removed) unless ``--reuse`` finds them running, and stops what it started, also on
SIGTERM or a failure. Spans are exported to Jaeger, as in normal use.

For each tracing ratio (the pods restarted with CLOVER_SDC_TRACE_RATIO), each data plane of the
servers and load balancers (the chain restarted with CLOVER_SDC_DATAPLANE), each data plane of the proxy
(restarted with its own CLOVER_SDC_DATAPLANE) and each number of keep-alive connections, wrk
(1 thread) runs ``--seconds`` against, in turn:

1. ``server``: clover-server1 directly (the baseline; once per ratio and data plane);
2. ``lb``: http-lb-v1 -> clover-server1..3 (once per ratio and data plane);
3. ``chain``: proxy-access-control -> http-lb v1/v2 -> servers, with the IDS copy of each request;
4. ``chain-ids``: the same with the proxy's mirror off (ModifyProxy ``mirror_path: off``);
5. ``chain+waf`` (first ratio and data plane only): the proxy restarted with ``CLOVER_WAF=on``
   (on its Python data plane): each request is first checked by modsecurity-crs (Apache,
   ModSecurity, the CRS).

It prints requests/s, p50/p99 and errors for each, the CPU each kind of pod (Apache included,
nginx counted with its pod) used per 1,000 requests, and per ratio and data plane: the
throughput ratio chain/server, the p50 and p99 each hop adds (lb - server, chain - lb, the IDS
copy: chain - chain-ids, the WAF check: chain+waf - chain), nginx/python for lb and chain, and
the proxy's nginx/python (req/s of the chain with and without the copy, the proxy's CPU).
For each run with the copy it prints what became of the copies, counted once none is in flight:
inspected by the IDS, dropped (the proxy's backlog was full), failed, or missed by the IDS's engine.
wrk sends ``User-Agent: wrk`` (the CRS notes a request without one). The machine is shared: the
load average is printed before and after; read p99 with it in mind.

wrk keeps 16 requests outstanding, so its p99 is queueing behind the slowest pod. For the p99 a
hop adds at a given rate, vegeta (``make setup`` builds it) then sends ``--rate`` requests/s on
schedule (first lb data plane, each ratio and proxy data plane): to the chain, lowered by 30% at
a time until every answer is a success at >= 95% of the rate, then to the server, the lb and the
chain without the IDS copy at the rate the chain kept up with; the printed rate says where it
ended. The restarted chain is first warmed by 2 s at ``--rate`` (not measured). Each fixed-rate
line gives the CPU per 1,000 requests of each kind of pod, of the pods' own Python processes
alone (the rest is their nginx, the IDS's engine, Apache) and of Jaeger. Every measured
run, wrk's and vegeta's, waits until Jaeger has stored what the runs before it sent (its CPU
under 5% of a core), at most 60 s: at full tracing it catches up for seconds after a run and
would share the cores with the next one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
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
from sdc.mirror import DROPPED, ERRORS  # noqa: E402
from stack.catalogue import local_stack  # noqa: E402
from stack.launcher import Launcher, StackError  # noqa: E402

PROXY = "proxy-access-control"
ENGINE_MISSED = "clover_sdc_ids_requests_dropped_total"
QUIET_CORES = 0.05  # the trace backend counts as done with earlier runs below this
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
    """CPU seconds used so far by each kind of pod, children included (nginx, the IDS engine, Apache)."""
    return pod_cpu_parts(launcher)[0]


def pod_cpu_parts(launcher: Launcher) -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds used so far by each kind of pod: with its children, and its own Python process alone."""
    used, own = dict.fromkeys(POD_KINDS, 0.0), dict.fromkeys(POD_KINDS, 0.0)
    for kind, names in POD_KINDS.items():
        for name in names:
            proc = launcher.process(name)
            if proc is None:
                continue
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                own[kind] += t.user + t.system
                used[kind] += t.user + t.system
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        t = child.cpu_times()
                        used[kind] += t.user + t.system
    return used, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of each wrk run")
    parser.add_argument("--connections", default="16", help="comma-separated keep-alive connection counts")
    parser.add_argument("--path", default="/about.html", help="page requested (a static page of the site)")
    parser.add_argument("--trace-ratios", default="1.0,0.01", help="span sampling ratios to compare")
    parser.add_argument("--dataplanes", default="nginx,python", help="server and lb data planes to compare")
    parser.add_argument("--proxy-dataplanes", default="nginx,python", help="proxy data planes to compare")
    parser.add_argument("--tag", default="sdcb", help="prefix of the pods' namespaces and veths (1-7 characters)")
    parser.add_argument("--port-offset", type=int, default=0, help="added to every port of the benchmark's stack")
    parser.add_argument("--no-waf", action="store_true", help="leave out the chain with the WAF check")
    parser.add_argument("--mode", choices=["auto", "netns", "loopback"], default="auto",
                        help="pods in network namespaces (root) or on loopback addresses")  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="use running parts and leave them running")
    parser.add_argument("--rate", type=int, default=1000,
                        help="fixed request rate for the p99 each hop adds (vegeta; 0: skip)")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    try:
        ratios = [float(r) for r in args.trace_ratios.split(",")]
        connection_counts = [int(c) for c in args.connections.split(",")]
    except ValueError as exc:
        sys.exit(f"bench/sdc: {exc}")
    dataplanes = args.dataplanes.split(",")
    proxy_planes = args.proxy_dataplanes.split(",")
    if not set(dataplanes) | set(proxy_planes) <= {"nginx", "python"} or not all(0 <= r <= 1 for r in ratios):
        sys.exit("bench/sdc: --dataplanes and --proxy-dataplanes take nginx and/or python, --trace-ratios values "
                 "within 0..1")  # fmt: skip
    if not (re.fullmatch(r"[a-z][a-z0-9]{0,6}", args.tag) and 0 <= args.port_offset < 1000):
        sys.exit("bench/sdc: --tag takes 1-7 lowercase letters or digits (a letter first), --port-offset 0..999")

    in_netns = args.mode == "netns" or (args.mode == "auto" and topology.netns_available())
    env = bench_env(port_offset=args.port_offset, tag=args.tag, netns_mode=in_netns)
    try:
        with BenchStack(env, reuse=args.reuse) as stack:
            if stack.removed:
                print(f"removed what a previous run left: {', '.join(stack.removed)}")
            print(f"sample chain in {topology.mode(stack.cfg)} mode, state in {stack.cfg.state_dir}")
            load = os.getloadavg()
            results = run(stack.cfg, args, ratios, dataplanes, proxy_planes, connection_counts)
            fixed = fixed_rates(stack.cfg, args, ratios, dataplanes[0], proxy_planes) if args.rate else []
            report(args, results, load, os.getloadavg())
            report_fixed(args, fixed)
    except (BenchBusy, StackError) as exc:
        sys.exit(f"bench/sdc: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench/sdc: interrupted; what this run started was stopped")


@dataclasses.dataclass
class Result:
    name: str
    ratio: float
    dataplane: str
    proxy: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_s: dict[str, float]
    copies: Copies | None = None  # the chain's copies to the IDS (when the proxy made them)


@dataclasses.dataclass
class Copies:
    """What became of the copies the proxy made: inspected by the IDS's engine, dropped by the
    proxy (backlog), failed, or taken by the IDS but missed by its engine (its channel full)."""

    inspected: int
    dropped: int
    failed: int
    missed: int

    def __sub__(self, other: Copies) -> Copies:
        return Copies(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))


def _metrics(cfg: Config, pod: str) -> dict[str, float]:
    metrics: dict[str, float] = requests.get(f"http://127.0.0.1:{topology.stats_port(cfg, pod)}/stats",
                                             timeout=5).json()["metrics"]  # fmt: skip
    return metrics


def settled_copies(cfg: Config, timeout: float = 30.0) -> Copies:
    """The counts once no copy is in flight and the IDS's inspected count held over two reads."""
    seen: list[Copies] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proxy, ids = _metrics(cfg, PROXY), _metrics(cfg, "snort-ids")
        inspected = grpc_client.snort_status(cfg)["requests_inspected"]
        missed = int(ids.get(ENGINE_MISSED, 0))
        seen.append(Copies(inspected, int(proxy.get(DROPPED, 0)), int(proxy.get(ERRORS, 0)), missed))
        if len(seen) > 1 and seen[-1] == seen[-2] and proxy.get("clover_sdc_proxy_mirrors_in_flight", 0) == 0:
            return seen[-1]
        time.sleep(0.5)
    raise RuntimeError(f"the IDS did not catch up with the proxy's copies within {timeout:g} s: {seen[-1]}")


def backend_cpu(jaeger: psutil.Process | None) -> float:
    """CPU seconds the trace backend's process used so far (0 when it does not run)."""
    try:
        return sum(jaeger.cpu_times()[:2]) if jaeger is not None else 0.0
    except psutil.Error:
        return 0.0


def settle_backend(cfg: Config, timeout: float = 60.0) -> None:
    """Wait until the trace backend has stored what the previous runs sent (Jaeger under
    ``QUIET_CORES`` over half a second): its catching up would otherwise share the cores with the
    next run."""
    jaeger = local_stack(cfg).process("jaeger")
    if jaeger is not None:
        wait_idle(jaeger, timeout)


def wait_idle(jaeger: psutil.Process, timeout: float) -> None:
    """Wait until the trace backend's process uses under ``QUIET_CORES`` over half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = backend_cpu(jaeger)
        time.sleep(0.5)
        if backend_cpu(jaeger) - before < QUIET_CORES * 0.5:
            return


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


def measure(
    cfg: Config, launcher: Launcher, name: str, url: str, connections: int, seconds: int, proxy: str = ""
) -> Result:
    assert requests.get(url, headers={"User-Agent": "wrk"}, timeout=5).status_code == 200, url
    wrk(url, connections, 1)  # warm the pools
    copying = name in ("chain", "chain+waf")
    copies_before = settled_copies(cfg) if copying else None
    settle_backend(cfg)
    before = pod_cpu(launcher)
    rps, p50, _, p99, total, errors = wrk(url, connections, seconds)
    after = pod_cpu(launcher)
    used = {kind: after[kind] - before[kind] for kind in after}
    copies = settled_copies(cfg) - copies_before if copies_before is not None else None
    return Result(name, cfg.sdc_trace_ratio, topology.dataplane(cfg, "http-lb-v1"), proxy, connections, rps, p50,
                  p99, total, errors, used, copies)  # fmt: skip


def proxy_on(cfg: Config, plane: str) -> Launcher:
    """The proxy restarted on its ``plane`` (the other pods as ``cfg`` has them)."""
    return restart(dataclasses.replace(cfg, sdc_dataplane=plane), [PROXY])


def run(base: Config, args: argparse.Namespace, ratios: list[float], dataplanes: list[str], proxy_planes: list[str],
        connection_counts: list[int]) -> list[Result]:  # fmt: skip
    results: list[Result] = []
    mirror_on = {"mirror_path": f"http://snort-ids:{topology.ids_http_port()}"}
    for ratio in ratios:
        for n, dataplane in enumerate(dataplanes):
            cfg = dataclasses.replace(base, sdc_trace_ratio=ratio, sdc_dataplane=dataplane)
            launcher = restart(cfg, ["sdc"])
            pods = {"server": "clover-server1", "lb": "http-lb-v1", "chain": PROXY}
            urls = {name: f"http://{topology.pod_ip(cfg, pod)}:9180{args.path}" for name, pod in pods.items()}
            for m, plane in enumerate(proxy_planes):
                launcher = proxy_on(cfg, plane)
                for c in connection_counts:
                    if m == 0:
                        results.append(measure(cfg, launcher, "server", urls["server"], c, args.seconds))
                        results.append(measure(cfg, launcher, "lb", urls["lb"], c, args.seconds))
                    results.append(measure(cfg, launcher, "chain", urls["chain"], c, args.seconds, plane))
                    grpc_client.modify_proxy(cfg, {"mirror_path": "off"})
                    results.append(measure(cfg, launcher, "chain-ids", urls["chain"], c, args.seconds, plane))
                    grpc_client.modify_proxy(cfg, mirror_on)
            if ratio == ratios[0] and n == 0 and not args.no_waf:
                with waf_checked_proxy(cfg):
                    results += [measure(cfg, launcher, "chain+waf", urls["chain"], c, args.seconds, "python")
                                for c in connection_counts]  # fmt: skip
    return results


@dataclasses.dataclass
class FixedRate:
    name: str
    ratio: float
    proxy: str
    rate: int
    p50_ms: float
    p99_ms: float
    success: float
    throughput: float
    requests: int
    cpu_s: dict[str, float]  # each kind of pod's, and the trace backend's ("jaeger"), during the run
    python_s: dict[str, float]  # each kind of pod's own Python process alone (without nginx, the engine)
    copies: Copies | None = None

    def sustained(self) -> bool:
        return self.success == 1.0 and self.throughput >= 0.95 * self.rate


def vegeta(cfg: Config, name: str, url: str, rate: int, seconds: int, proxy: str) -> FixedRate:
    """One fixed-rate run (an open model: requests are sent on schedule whether or not answers came),
    once the trace backend is done with the previous runs."""
    settle_backend(cfg)
    launcher = local_stack(cfg)
    binary = str(cfg.stack_cache / "vegeta" / "vegeta")
    jaeger = launcher.process("jaeger")
    pods_before, python_before = pod_cpu_parts(launcher)
    before = {**pods_before, "jaeger": backend_cpu(jaeger)}
    attack = subprocess.run(
        [binary, "attack", f"-rate={rate}/s", f"-duration={seconds}s", "-timeout=5s", "-header", "User-Agent: wrk"],
        input=f"GET {url}\n".encode(), capture_output=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    out = json.loads(subprocess.run([binary, "report", "-type=json"], input=attack.stdout, capture_output=True,
                                    check=True, timeout=60).stdout)  # fmt: skip
    pods_after, python_after = pod_cpu_parts(launcher)
    after = {**pods_after, "jaeger": backend_cpu(jaeger)}
    lat = out["latencies"]
    return FixedRate(name, cfg.sdc_trace_ratio, proxy, rate, lat["50th"] / 1e6, lat["99th"] / 1e6, out["success"],
                     out["throughput"], out["requests"], {k: after[k] - before[k] for k in after},
                     {k: python_after[k] - python_before[k] for k in python_after})  # fmt: skip


def fixed_rates(
    base: Config, args: argparse.Namespace, ratios: list[float], dataplane: str, proxy_planes: list[str]
) -> list[FixedRate]:
    """Per tracing ratio and proxy data plane: the chain at ``--rate`` (lowered by 30% at a time
    until it keeps up, every answer a success), then the server, the lb and the chain without the
    IDS copy at that rate."""
    if not (base.stack_cache / "vegeta" / "vegeta").exists():
        print("vegeta is not built (make setup): no fixed-rate figures")
        return []
    out: list[FixedRate] = []
    mirror_on = {"mirror_path": f"http://snort-ids:{topology.ids_http_port()}"}
    for ratio in ratios:
        cfg = dataclasses.replace(base, sdc_trace_ratio=ratio, sdc_dataplane=dataplane)
        restart(cfg, ["sdc"])
        pods = {"server": "clover-server1", "lb": "http-lb-v1", "chain": PROXY}
        urls = {name: f"http://{topology.pod_ip(cfg, pod)}:9180{args.path}" for name, pod in pods.items()}
        for plane in proxy_planes:
            proxy_on(cfg, plane)
            vegeta(cfg, "chain", urls["chain"], args.rate, 2, plane)  # the restarted pods warmed, not measured
            rate = args.rate
            while True:
                copies_before = settled_copies(cfg)
                chain = vegeta(cfg, "chain", urls["chain"], rate, args.seconds, plane)
                chain.copies = settled_copies(cfg) - copies_before
                out.append(chain)
                if chain.sustained() or rate <= 50:
                    break
                rate = rate * 7 // 10
            out += [vegeta(cfg, name, urls[name], rate, args.seconds, plane) for name in ("server", "lb")]
            grpc_client.modify_proxy(cfg, {"mirror_path": "off"})
            out.append(vegeta(cfg, "chain-ids", urls["chain"], rate, args.seconds, plane))
            grpc_client.modify_proxy(cfg, mirror_on)
    return out


def report_fixed(args: argparse.Namespace, fixed: list[FixedRate]) -> None:
    if not fixed:
        return
    print(f"\nvegeta, fixed rate, {args.seconds}s each, lb on nginx: p50/p99 ms (success, answers/s)")
    for ratio, proxy in dict.fromkeys((r.ratio, r.proxy) for r in fixed):
        runs = [r for r in fixed if (r.ratio, r.proxy) == (ratio, proxy)]
        for r in runs:
            c = r.copies
            copies = "" if c is None else (f"; copies: {c.inspected} inspected, {c.dropped} dropped, {c.failed} "
                                           f"failed, {c.missed} missed")  # fmt: skip
            per_k = per_thousand(r.cpu_s, r.requests)
            pods = sum(v for k, v in per_k.items() if k != "jaeger")
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in per_k.items() if k != "jaeger" and v >= 0.005)
            python_k = per_thousand(r.python_s, r.requests)
            python = f"{sum(python_k.values()):.2f}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in python_k.items() if per_k[k] >= 0.005
            )
            print(f"{ratio:>5g} proxy {proxy:<6} {LABELS[r.name]:<32} {r.rate:>5}/s {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
                  f"({r.success:.3f}, {r.throughput:.0f}/s{copies}); CPU s per 1,000: pods {pods:.2f} ({cpu}; "
                  f"their Python alone {python}), Jaeger {per_k['jaeger']:.2f}")  # fmt: skip
        by = {r.name: r for r in runs}  # the last run of each: the chain at the rate it kept up with
        rate = by["chain"].rate
        kept = "" if by["chain"].sustained() else " (the chain did not keep up even there)"
        lower = f"; the chain did not keep up with {args.rate}/s" if rate != args.rate else ""
        print(f"trace {ratio:g}, proxy on {proxy}, at {rate}/s{lower}{kept}: p99 added: "
              f"lb {by['lb'].p99_ms - by['server'].p99_ms:+.2f}, "
              f"proxy (+IDS) {by['chain'].p99_ms - by['lb'].p99_ms:+.2f}, "
              f"proxy (no IDS) {by['chain-ids'].p99_ms - by['lb'].p99_ms:+.2f}, "
              f"the IDS copy {by['chain'].p99_ms - by['chain-ids'].p99_ms:+.2f}")  # fmt: skip


def report(args: argparse.Namespace, results: list[Result], load_before: tuple[float, ...],
           load_after: tuple[float, ...]) -> None:  # fmt: skip
    print(f"\nwrk -t1 -d{args.seconds}s against {args.path} (keep-alive); load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}")  # fmt: skip
    print(f"pods' CPU seconds per 1,000 requests (nginx with its pod)\n{'trace':>5} {'lb':<6} {'proxy':<6} "
          f"{'target':<32} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          + " ".join(f"{k:>7}" for k in ("total", *POD_KINDS)))  # fmt: skip
    for r in results:
        per_k = per_thousand(r.cpu_s, r.requests)
        lb = r.dataplane
        print(f"{r.ratio:>5g} {lb:<6} {r.proxy or '-':<6} {LABELS[r.name]:<32} {r.connections:>5} {r.rps:>7.0f} "
              f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.errors:>6} {sum(per_k.values()):>7.2f} "
              + " ".join(f"{per_k[k]:>7.2f}" for k in POD_KINDS))  # fmt: skip
    print("\nthe copies to the IDS (each measured run's, once none was in flight)")
    for r in results:
        if r.copies is not None:
            print(f"{r.ratio:>5g} {r.dataplane:<6} {r.proxy:<6} {LABELS[r.name]:<32} {r.requests} requests: "
                  f"{r.copies.inspected} inspected by the IDS, {r.copies.dropped} dropped (backlog), "
                  f"{r.copies.failed} failed, {r.copies.missed} missed by the engine")  # fmt: skip
    print()
    for ratio in dict.fromkeys(r.ratio for r in results):
        for c in dict.fromkeys(r.connections for r in results):
            runs = [r for r in results if r.ratio == ratio and r.connections == c]
            servers = {r.dataplane: r for r in runs if r.name == "server"}
            lbs = {r.dataplane: r for r in runs if r.name == "lb"}
            by: dict[tuple[str, str, str], Result] = {(r.name, r.dataplane, r.proxy): r for r in runs}
            for dataplane, proxy in dict.fromkeys((r.dataplane, r.proxy) for r in runs if r.name == "chain"):
                hop, server = lbs[dataplane], servers[dataplane]
                chain, bare = by[("chain", dataplane, proxy)], by[("chain-ids", dataplane, proxy)]
                line = (f"trace {ratio:g}, {c} conns, lb on {dataplane}, proxy on {proxy}: chain/server "
                        f"{chain.rps / server.rps:.2f} (no IDS {bare.rps / server.rps:.2f}); added p50/p99 ms: "
                        f"lb {_hop(hop, server)}, proxy (+IDS) {_hop(chain, hop)}, proxy (no IDS) {_hop(bare, hop)}, "
                        f"the IDS copy {_hop(chain, bare)}")  # fmt: skip
                if ("chain+waf", dataplane, "python") in by:
                    line += f", the WAF check {_hop(by[('chain+waf', dataplane, 'python')], chain)}"
                print(line)
            if {"nginx", "python"} <= set(lbs):
                chains = {(d, p) for n, d, p in by if n == "chain"}
                proxy = next(p for d, p in sorted(chains) if (("nginx", p) in chains and ("python", p) in chains))
                chain_ratio = _ratio(by[("chain", "nginx", proxy)], by[("chain", "python", proxy)], "lb")
                print(f"trace {ratio:g}, {c} conns, servers and lbs nginx/python: "
                      f"server {_ratio(servers['nginx'], servers['python'], 'servers')}, "
                      f"lb {_ratio(lbs['nginx'], lbs['python'], 'lb')}, "
                      f"chain (proxy on {proxy}) {chain_ratio}")  # fmt: skip
            for dataplane in lbs:
                if ("chain", dataplane, "nginx") in by and ("chain", dataplane, "python") in by:
                    pair = [(by[(n, dataplane, "nginx")], by[(n, dataplane, "python")]) for n in ("chain", "chain-ids")]
                    ids = f"{_per_k(pair[0][0], 'ids'):.2f} vs {_per_k(pair[0][1], 'ids'):.2f}"
                    print(f"trace {ratio:g}, {c} conns, lb on {dataplane}, proxy nginx/python: chain "
                          f"{_ratio(*pair[0], 'proxy')}, chain without the IDS {_ratio(*pair[1], 'proxy')}, "
                          f"IDS CPU s/1k copies {ids}")  # fmt: skip


def per_thousand(cpu_s: dict[str, float], requests: int) -> dict[str, float]:
    """CPU seconds per 1,000 requests, by kind."""
    return {k: v / requests * 1000 if requests else 0.0 for k, v in cpu_s.items()}


def _per_k(r: Result, kind: str) -> float:
    return per_thousand(r.cpu_s, r.requests)[kind]


def _hop(outer: Result, inner: Result) -> str:
    return f"{outer.p50_ms - inner.p50_ms:+.2f}/{outer.p99_ms - inner.p99_ms:+.2f}"


def _ratio(nginx: Result, python: Result, kind: str) -> str:
    """nginx's req/s over python's, and the CPU ``kind``'s pods used per 1,000 requests in each."""
    return (f"{nginx.rps / python.rps:.2f}x req/s ({kind} CPU s/1k {_per_k(nginx, kind):.2f} vs "
            f"{_per_k(python, kind):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
