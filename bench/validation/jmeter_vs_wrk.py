"""How many requests/s one JMeter master sustains against a local server, beside wrk.

    .venv/bin/python bench/validation/jmeter_vs_wrk.py [--connections 8] [--seconds 10]

The server is nginx (one worker, keep-alive, ``return 200``) on a loopback port, fast enough
that the load generator is what is measured. In the same run:

* JMeter: a duration-bounded plan (``--connections`` threads, loop forever, ``--warmup`` +
  ``--seconds``) run exactly as the validation service runs it (non-GUI, every sample written to
  the JTL); the rate is the samples that start after the warm-up (the JIT needs several seconds on
  a busy machine) divided by the time they span.
* wrk (the baseline): the same number of keep-alive connections for the same time.

Both are printed with the CPU time each generator used per 1,000 requests, and the ratio.
The machine is shared: keep runs short; ``--repeat`` alternates the two.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from clover.config import Config
from validation.jmeter import JMeter
from validation.jmx import render_jmx
from validation.plan import parse_plan
from validation.results import read_jtl
from validation.runner import Run

NGINX_CONF = """\
worker_processes 1;
daemon off;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


@dataclass(frozen=True)
class Measure:
    name: str
    requests: int
    errors: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_seconds / max(self.requests, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process and its (live) children, including reaped children of each."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def start_nginx(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / d).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("nginx did not start")


def cpu_between(readings: list[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds used between two wall-clock times, from (time, cumulative CPU) readings."""
    before = max((r for r in readings if r[0] <= start), default=readings[0])
    after = min((r for r in readings if r[0] >= end), default=readings[-1])
    return after[1] - before[1]


def run_jmeter(jmeter: JMeter, work: Path, port: int, threads: int, seconds: int, warmup: int) -> Measure:
    """A JMeter run of warmup + seconds; measured over the samples that start after the warm-up."""
    plan = parse_plan(
        {
            "load_spec": {"num_threads": threads, "loops": 0, "duration": warmup + seconds},
            "url_list": [{"name": "bench", "url": f"http://127.0.0.1:{port}/", "user-agent": "clover-bench"}],
        }
    )
    jmx = work / "bench.jmx"
    jmx.write_text(render_jmx(plan))
    run = Run(jmeter, jmx, work / "jmeter-run", "bench.jmx")
    master = psutil.Process(run.info.pid)
    readings: list[tuple[float, float]] = []
    while not run.wait(0.2):
        with contextlib.suppress(psutil.Error):
            readings.append((time.time(), tree_cpu(master)))  # the JVM's CPU time until it exits
    samples = read_jtl(run.jtl)
    if not samples:
        raise SystemExit(f"JMeter produced no samples; see {run.console}")
    start = min(s.timestamp for s in samples) + warmup * 1000
    steady = [s for s in samples if s.timestamp >= start]
    first, last = min(s.timestamp for s in steady), max(s.end for s in steady)
    errors = sum(1 for s in steady if not s.success)
    cpu = cpu_between(readings, first / 1000, last / 1000)
    return Measure("JMeter 5.6.3 master", len(steady), errors, (last - first) / 1000, cpu)


def run_wrk(port: int, connections: int, threads: int, seconds: int) -> Measure:
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    proc = psutil.Popen(
        [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE,
        text=True,
    )
    cpu = 0.0
    while proc.poll() is None:
        cpu = max(cpu, tree_cpu(proc))
        time.sleep(0.2)
    out = proc.stdout.read() if proc.stdout else ""
    requests = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not requests:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    took = float(requests.group(2)) / (1000 if requests.group(3) == "ms" else 1)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    return Measure(f"wrk {threads} threads (baseline)", int(requests.group(1)), errors, took, cpu)


def describe(m: Measure) -> str:
    return (
        f"{m.name:<28} {m.rate:>10,.0f} req/s  ({m.requests:,} requests in {m.seconds:.1f}s, {m.errors} errors,"
        f" {m.cpu_per_1000 * 1000:.0f} ms CPU per 1,000 requests)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=8, help="JMeter threads = wrk connections")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds of each run")
    parser.add_argument("--warmup", type=int, default=8, help="JMeter seconds before the measured ones (JIT warm-up)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    cfg = Config.from_env()
    jmeter = JMeter.find(cfg.jmeter_dir, cfg.java_home)
    print(
        f"Load generators against nginx (1 worker, keep-alive, return 200) on loopback; {args.connections}"
        f" connections, {args.seconds}s each; {os.cpu_count()} CPUs, load average"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory(prefix="clover-bench-") as tmp:
        root = Path(tmp)
        nginx, port = start_nginx(root / "nginx")
        try:
            pairs = []
            for i in range(args.repeat):
                work = root / f"jmeter-{i}"
                work.mkdir()
                j = run_jmeter(jmeter, work, port, args.connections, args.seconds, args.warmup)
                w = run_wrk(port, args.connections, args.wrk_threads, args.seconds)
                print(describe(j))
                print(describe(w))
                print(f"{'ratio JMeter / wrk':<28} {j.rate / w.rate:>10.2f}")
                pairs.append((j, w))
            if args.repeat > 1:
                jr = sorted(j.rate for j, _ in pairs)[len(pairs) // 2]
                wr = sorted(w.rate for _, w in pairs)[len(pairs) // 2]
                print(f"median of {args.repeat}: JMeter {jr:,.0f} req/s, wrk {wr:,.0f} req/s, ratio {jr / wr:.2f}")
        finally:
            nginx.terminate()
            nginx.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
