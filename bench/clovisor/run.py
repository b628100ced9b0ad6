"""Clovisor's overhead and capture completeness, with its baseline in the same run.

nginx (1 worker, ``return 200``) serves in a pod (network namespace behind a veth on a bridge);
wrk loads it from the root namespace through the pod's host-side veth. Rounds alternate
detached / attached (Clovisor running as its own process, spans going to a real Kafka) and
report, per side: throughput, p99 latency, machine CPU time per 1,000 requests, and for the
attached side Clovisor's own CPU per 1,000 requests, its RSS, BPF time per request and
completeness = exchanges Clovisor captured / requests nginx served; the CPU of the bench's Kafka
broker; and the agent's CPU while that broker hangs (process stopped, sockets open).

BPF time comes from kernel.bpf_stats_enabled, which reads the clock twice around every program
run (a cost of the measurement, not of Clovisor): the saturation rounds that give the
throughput ratio run without it, an extra attached saturation run and the fixed-rate runs with it.

    sudo .venv/bin/python -m bench.clovisor.run [--seconds 5] [--rounds 2] [--connections 20]
        [--cpu-priority normal|batch|idle] [--max-spans-per-second N]  (clovisor run options)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from clovisor.cli import CPU_PRIORITIES
from clovisor.datapath import Limits

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.208.7.0/24"
PORT_OFFSET = 3000  # the bench's own Redis and Kafka, beside a demo or test stack


@dataclass
class Side:
    requests: int
    seconds: float
    p99_ms: float
    cpu_s: float  # wrk + nginx + clovisor, during the run

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_s / self.requests


def machine_cpu() -> float:
    """CPU seconds of the processes under test: wrk (a waited-for child), nginx, Clovisor.

    Per process rather than machine-wide: other work on a shared machine must not count.
    The tc programs run in the softirq of the sending process, so their time is inside."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = children.ru_utime + children.ru_stime
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("nginx", "clovisor"):
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
    return total


def served(pod_exec: list[str]) -> int:
    """nginx's request counter, read over the pod's loopback (not through the traced veth)."""
    out = subprocess.run(
        [*pod_exec, "python3", "-c", "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1/status').read().decode())"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.splitlines()[2].split()[2])


def fixed_rate_load(rate: int) -> tuple[int, int]:
    """(delay ms between a connection's requests, connections) for wrk to offer ``rate`` req/s."""
    delay = 2 if rate <= 10000 else 1
    return delay, max(1, round(rate * (delay + 0.6) / 1000))  # wrk's timer adds ~0.6 ms


RATE_SCRIPT = "local d = tonumber(os.getenv('WRK_DELAY_MS'))\nfunction delay() return d end\n"


def _search(pattern: str, out: str) -> re.Match[str]:
    m = re.search(pattern, out)
    if not m:
        raise ValueError(f"no {pattern!r} in the output of wrk")
    return m


def wrk(
    url: str, seconds: int, connections: int, delay_ms: int | None = None, script: Path | None = None
) -> tuple[int, float, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    env = dict(os.environ)
    if delay_ms is not None and script is not None:
        argv += ["-s", str(script)]
        env["WRK_DELAY_MS"] = str(delay_ms)
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True, env=env).stdout
    requests = int(_search(r"(\d+) requests in", out).group(1))
    duration = re.search(r"requests in ([\d.]+)(m?s)", out)
    secs = float(duration.group(1)) * (60 if duration.group(2) == "m" else 1) if duration else float(seconds)
    p99 = _search(r"99%\s+([\d.]+)(us|ms|s)", out)
    value, unit = float(p99.group(1)), p99.group(2)
    return requests, secs, value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


@dataclass
class Attached:
    side: Side
    captured: int  # spans exported
    incomplete: int  # requests whose connection the client closed before the response ended
    served: int  # requests nginx counted
    over_budget: int  # exchanges beyond --max-spans-per-second, counted in the kernel, not emitted
    clovisor_cpu_s: float
    kafka_cpu_s: float  # the broker taking the spans, on the same two cores
    bpf_ns: int

    @property
    def completeness(self) -> float:
        """Share of the requests nginx saw that Clovisor accounted for (span or counted incomplete)."""
        return (self.captured + self.incomplete) / self.served if self.served else 0.0


@dataclass(frozen=True)
class Setup:
    """What nginx_pod() started: the bench's state directory, the agent's environment, the pod
    nginx serves in, its URL, and the bench's Kafka broker (a JVM on this machine, where a
    cluster's runs elsewhere)."""

    state: Path
    env: dict[str, str]
    pod: Any
    url: str
    broker: psutil.Process


class Bench:
    def __init__(
        self,
        setup: Setup,
        seconds: int,
        priority: str,
        budget: int,
        agent: tuple[str, ...] = (str(ROOT / ".venv" / "bin" / "clovisor"),),
    ) -> None:
        import redis

        from clover import keys
        from clover.config import Config

        state, env = setup.state, setup.env
        self.pod, self.url, self.broker, self.seconds = setup.pod, setup.url, setup.broker, seconds
        self.keys = keys
        self.redis = redis.Redis.from_url(Config.from_env(env).redis_url)
        self.status_file = state / "clovisor" / "status.json"
        self.script = state / "rate.lua"
        self.script.write_text(RATE_SCRIPT)
        self.proc = subprocess.Popen(
            [*agent, "run", "--discovery", "local", "--metrics-port", "0",
             "--cpu-priority", priority, "--max-spans-per-second", str(budget)],
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.ps = psutil.Process(self.proc.pid)
        self.rss = 0

    def status(self) -> dict[str, Any]:
        return json.loads(self.status_file.read_text()) if self.status_file.exists() else {}

    def trace(self, on: bool) -> None:
        """Attach or detach Clovisor (a label filter that selects no pod detaches it)."""
        if on:
            self.redis.delete(self.keys.CLOVISOR_LABELS)
        else:
            self.redis.delete(self.keys.CLOVISOR_LABELS)
            self.redis.rpush(self.keys.CLOVISOR_LABELS, "no-such-namespace")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.3)
            st = self.status()
            if st and bool(st.get("pods")) == on and (time.time() - self.status_file.stat().st_mtime) < 1.5:
                return
        raise RuntimeError("clovisor did not " + ("attach" if on else "detach"))

    def detached(self, connections: int, delay_ms: int | None = None) -> Side:
        cpu0 = machine_cpu()
        requests, secs, p99 = wrk(self.url, self.seconds, connections, delay_ms, self.script)
        return Side(requests, secs, p99, machine_cpu() - cpu0)

    def attached(self, connections: int, delay_ms: int | None = None, bpf_stats: bool = True) -> Attached:
        time.sleep(2.2)  # a fresh status file
        before = self.status()
        served0 = served(self.pod.exec())
        own0 = sum(self.ps.cpu_times()[:2])
        broker0 = sum(self.broker.cpu_times()[:2])
        if bpf_stats:
            subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
        side = self.detached(connections, delay_ms)
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=0"], check=True)
        served1 = served(self.pod.exec()) - 1  # not the first status request
        ended = time.time()
        deadline = time.monotonic() + 60
        while True:  # a status written after the ring buffer was drained
            time.sleep(0.5)
            after = self.status()
            fresh = self.status_file.stat().st_mtime > ended + 0.5
            if (fresh and after.get("ring_pending_bytes") == 0) or time.monotonic() > deadline:
                break
        self.rss = max(self.rss, self.ps.memory_info().rss)
        own = sum(self.ps.cpu_times()[:2]) - own0
        broker = sum(self.broker.cpu_times()[:2]) - broker0
        bpf = sum(p["run_time_ns"] - before["bpf_programs"][n]["run_time_ns"] for n, p in after["bpf_programs"].items())
        if os.environ.get("CLOVISOR_BENCH_DEBUG"):
            print(json.dumps({k: after[k] for k in ("kernel", "counters", "kafka")}, indent=1))
        spans = after["counters"]["spans"] - before["counters"]["spans"]
        incomplete = after["counters"]["incomplete"] - before["counters"]["incomplete"]
        over = after["kernel"]["over_budget"] - before["kernel"]["over_budget"]
        return Attached(side, spans, incomplete, served1 - served0, over, own, broker, bpf)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.redis.close()


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("the benchmark makes network namespaces and loads BPF programs: run it as root")


@contextlib.contextmanager
def nginx_pod() -> Iterator[Setup]:
    """The bench's own Redis and Kafka, and nginx serving in a pod; everything is stopped on the
    way out."""
    state = Path(tempfile.mkdtemp(prefix="clovisor-bench-"))
    env = dict(os.environ)
    env.update({
        "CLOVER_STATE_DIR": str(state),
        "CLOVER_REDIS_URL": f"redis://127.0.0.1:{6379 + PORT_OFFSET}/0",
        "CLOVER_KAFKA_BOOTSTRAP": f"127.0.0.1:{9092 + PORT_OFFSET}",
        "CLOVER_KAFKA_CONTROLLER_PORT": str(9093 + PORT_OFFSET),
    })  # fmt: skip
    os.environ.update(env)
    from clovisor.lab import Lab, start_nginx
    from stack.catalogue import local_stack
    from stack.secrets import local_config

    cfg = local_config()
    launcher = local_stack(cfg)
    print("starting the bench's Redis and Kafka ...", flush=True)
    launcher.up(["redis", "kafka"], fresh=True)
    lab = Lab("cvb", SUBNET)
    nginx = None
    try:
        pod = lab.add_pod("nginx", ports={"http": 80}, service="nginx")
        lab.register(cfg, pod)
        nginx = start_nginx(pod, state)
        url = f"http://{pod.ip}/"
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", url], capture_output=True, check=True)  # warm-up
        (kafka,) = launcher.status(["kafka"])
        if kafka.pid is None:
            raise RuntimeError(f"the bench's Kafka is not running ({kafka.health})")
        yield Setup(state, env, pod, url, psutil.Process(kafka.pid))
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        lab.close()
        launcher.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rates", default="5000,10000,20000", help="fixed offered rates (req/s) for the sweep")
    parser.add_argument("--cpu-priority", choices=list(CPU_PRIORITIES), default="normal",
                        help="the agent's scheduling (clovisor run --cpu-priority)")  # fmt: skip
    parser.add_argument("--max-spans-per-second", type=int, default=Limits.spans_per_second,
                        help="the agent's span budget (clovisor run --max-spans-per-second; 0: no limit)")  # fmt: skip
    args = parser.parse_args()
    require_root()

    with nginx_pod() as setup:
        bench = Bench(setup, args.seconds, args.cpu_priority, args.max_spans_per_second)
        try:
            report(args, bench)
        finally:
            bench.close()


def report(args: argparse.Namespace, bench: Bench) -> None:
    # 1. Saturation: the highest rate each side sustains.
    detached: list[Side] = []
    attached: list[Attached] = []
    for _ in range(args.rounds):
        bench.trace(False)
        detached.append(bench.detached(args.connections))
        bench.trace(True)
        attached.append(bench.attached(args.connections, bpf_stats=False))
    timed = bench.attached(args.connections)  # BPF time at saturation

    # 2. Fixed offered rates: overhead and completeness where Clovisor is meant to keep up.
    sweep = []
    for rate in (int(r) for r in args.rates.split(",")):
        delay, conns = fixed_rate_load(rate)
        bench.trace(False)
        base = bench.detached(conns, delay)
        bench.trace(True)
        sweep.append((rate, base, bench.attached(conns, delay)))

    # 3. A hung Kafka (its process stopped, its sockets open): spans buffer, up to the buffer's
    # bound at the second rate (10,000 spans/s of ~1.2 kB fill 48 MiB in ~4 s).
    rss = bench.rss
    hung_rate, _, up = sweep[min(1, len(sweep) - 1)]
    dropped = bench.status()["kafka"]["dropped"]
    bench.broker.suspend()
    try:
        delay, conns = fixed_rate_load(hung_rate)
        hung = bench.attached(conns, delay, bpf_stats=False)
        hung_rss = bench.ps.memory_info().rss
        dropped = bench.status()["kafka"]["dropped"] - dropped
    finally:
        bench.broker.resume()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    d_rps, a_rps = med([s.rps for s in detached]), med([a.side.rps for a in attached])
    d_p99, a_p99 = med([s.p99_ms for s in detached]), med([a.side.p99_ms for a in attached])
    d_cpu, a_cpu = med([s.cpu_per_1000 for s in detached]), med([a.side.cpu_per_1000 for a in attached])
    sat_captured = sum(a.captured + a.incomplete for a in attached)
    sat_served = sum(a.served for a in attached)
    own = 1000 * sum(a.clovisor_cpu_s for a in attached) / sum(a.side.requests for a in attached)
    broker = 1000 * sum(a.kafka_cpu_s for a in attached) / sum(a.side.requests for a in attached)
    timed_runs = [timed] + [x[2] for x in sweep]
    bpf_ns = sum(a.bpf_ns for a in timed_runs)
    bpf_req = sum(a.served for a in timed_runs)
    print()
    print(f"nginx (1 worker) in a pod, wrk -t1 from the root namespace, {args.seconds}s runs, 2 cores")
    print(f"Saturation, -c{args.connections}, {args.rounds} rounds alternating (medians), agent "
          f"--cpu-priority {args.cpu_priority} --max-spans-per-second {args.max_spans_per_second}")  # fmt: skip
    print(f"{'':36}{'detached':>12}{'attached':>12}{'ratio':>8}")
    print(f"{'throughput (req/s)':36}{d_rps:>12,.0f}{a_rps:>12,.0f}{a_rps / d_rps:>8.3f}   target >= 0.95")
    print(f"{'  attached with bpf_stats (req/s)':36}{'':>12}{timed.side.rps:>12,.0f}{timed.side.rps / d_rps:>8.3f}")
    rounds = zip(detached, attached, strict=True)
    each = ", ".join(f"{d.rps:,.0f}/{a.side.rps:,.0f}" for d, a in rounds)
    print(f"{'  each round, detached/attached':36}   {each}")
    print(f"{'p99 latency (ms)':36}{d_p99:>12.3f}{a_p99:>12.3f}{a_p99 / d_p99:>8.3f}")
    print(f"{'machine CPU per 1,000 req (ms)':36}{d_cpu * 1e3:>12.1f}{a_cpu * 1e3:>12.1f}{a_cpu / d_cpu:>8.3f}")
    print(f"{'clovisor process CPU / 1,000 req (ms)':36}{'':>12}{own * 1e3:>12.1f}")
    print(f"{'kafka broker CPU / 1,000 req (ms)':36}{'':>12}{broker * 1e3:>12.1f}   (not in machine CPU above)")
    sat_over = sum(a.over_budget for a in attached)
    print(f"{'completeness (accounted / served)':36}{'':>12}{sat_captured / sat_served:>12.4f}"
          f"   {sat_captured}/{sat_served}, {sat_over} over budget")  # fmt: skip
    print()
    print("Fixed offered rates (wrk with a per-connection delay), detached baseline then attached")
    print(
        f"{'offered':>8}{'served/s':>10}{'p99 ms':>16}{'CPU ms/1k req':>18}{'clovisor ms/1k':>16}"
        "   completeness (spans+incomplete)/served"
    )
    best = 0.0
    for rate, base, att in sweep:
        own_k = 1e6 * att.clovisor_cpu_s / att.side.requests
        full = att.captured + att.incomplete == att.served
        if full:
            best = max(best, att.side.rps)
        print(f"{rate:>8,}{att.side.rps:>10,.0f}{base.p99_ms:>8.2f}/{att.side.p99_ms:<7.2f}"
              f"{base.cpu_per_1000 * 1e3:>9.1f}/{att.side.cpu_per_1000 * 1e3:<8.1f}{own_k:>16.1f}"
              f"{att.completeness:>10.4f} {att.captured}+{att.incomplete}/{att.served}"
              f"{f', {att.over_budget} over budget' if att.over_budget else ''}")  # fmt: skip
    up_ms, hung_ms = (1e3 * a.clovisor_cpu_s / a.side.seconds for a in (up, hung))
    print(f"{'Kafka up / hung: agent CPU (ms/s)':36}{up_ms:>12.1f}{hung_ms:>12.1f}   at {hung_rate:,} req/s offered")
    label = "  RSS at the end (MB), spans dropped"
    print(f"{label:36}{'':>12}{hung_rss / 2**20:>12.1f}   {dropped} beyond the buffer")
    print()
    print(f"{'highest rate with 100% completeness':36}{best:>12,.0f} req/s   target >= 5,000")
    print(f"{'BPF time per request (ns)':36}{bpf_ns / bpf_req:>12.0f}   target < 1,000 (the runs with bpf_stats)")
    print(f"{'  at saturation / fixed rates':36}{timed.bpf_ns / timed.served:>12.0f}"
          f"{sum(x[2].bpf_ns for x in sweep) / sum(x[2].served for x in sweep):>12.0f}")  # fmt: skip
    print(f"{'clovisor RSS, max (MB)':36}{rss / 2**20:>12.1f}   target < 150 (Kafka up)")


if __name__ == "__main__":
    main()
