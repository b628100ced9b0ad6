"""The snort-ids pod's intake of the proxy's copies: its CPU per 1,000 copies and how fast it answers them.

    .venv/bin/python bench/sdc/ids_intake.py [--copies 10000] [--rate 1000] [--connections 16]
                                             [--trace-ratio 0.01] [--repeat 1] [--baseline-ref 569d7f5]
                                             [--tag idsb] [--port-offset 0]

Starts its own Redis and Jaeger (``bench/sdc/chain.py``, state in ``.clover/bench-ids-intake/``,
ports 31xxx + ``--port-offset``) and runs the snort-ids pod alone on a loopback address, twice
per repeat: from ``--baseline-ref`` (the intake before the lean sink; the tree is taken with
``git archive``, the generated protos copied beside it) and from this tree. vegeta sends
``--copies`` copies at ``--rate`` per second over ``--connections`` keep-alive connections, each
copy with the headers nginx's mirror adds (``sdc/nginx_proxy.py``): X-Forwarded-For, X-Real-IP,
X-Forwarded-Proto, X-Request-Id, Forwarded, X-Clover-Mirror, the sender's Envoy headers and the
trace context, sampled for ``--trace-ratio`` of them (as the proxy decides). A copy's answer
latency is what the proxy's nginx waits before it lets the client's connection go.

It prints, per run, the CPU seconds per 1,000 copies of the pod (its Python process) and of its
engine child, the p50/p99/max of the answer latency, the copies the engine inspected, and the
medians' ratios baseline/new. Everything it started is stopped, also on SIGTERM or a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import psutil
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.sdc.chain import BenchBusy, BenchStack, bench_env  # noqa: E402
from clover.config import Config  # noqa: E402
from sdc import topology  # noqa: E402
from sdc.local import pod_env  # noqa: E402
from stack.launcher import StackError  # noqa: E402

IDS = "snort-ids"
PROXY = "proxy-access-control"
CLIENT_IP = "192.0.2.10"  # the client the copies say they are from (Forwarded, X-Real-IP)
READY_SECONDS = 40.0
STOP_SECONDS = 15.0
WARM_COPIES = 200


@dataclasses.dataclass
class Run:
    intake: str
    copies: int
    pod_cpu_s: float
    engine_cpu_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    success: float
    throughput: float
    inspected: int

    def per_k(self, cpu_s: float) -> float:
        return cpu_s / self.copies * 1000


def copy_targets(cfg: Config, n: int, ratio: float, seed: int) -> str:
    """``n`` copies in vegeta's http format, each with the headers nginx's mirror location sets."""
    rng = random.Random(seed)
    ids_url = f"http://{topology.pod_ip(cfg, IDS)}:{topology.ids_http_port()}"
    proxy_ip = topology.pod_ip(cfg, PROXY)
    out = []
    for i in range(n):
        trace_id, span_id = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
        sampled = rng.random() < ratio
        port = 1024 + i % 60000
        headers = {
            "Host": f"{proxy_ip}:{topology.HTTP_PORT}",
            "X-Forwarded-For": CLIENT_IP,
            "X-Real-IP": CLIENT_IP,
            "X-Forwarded-Proto": "http",
            "X-Request-Id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "Forwarded": f'for="{CLIENT_IP}:{port}";by="{proxy_ip}:{topology.HTTP_PORT}";proto=http',
            "X-Clover-Mirror": "length=0; truncated=0; xff=0; rid=1",
            "x-envoy-downstream-service-cluster": PROXY,
            "x-envoy-downstream-service-node": PROXY,
            "traceparent": f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}",
            "X-B3-TraceId": trace_id,
            "X-B3-SpanId": span_id,
            "X-B3-Sampled": "1" if sampled else "0",
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "Accept-Language": "en-US,en;q=0.5",
        }
        lines = [f"GET {ids_url}/catalog/?page={i % 50}", *(f"{k}: {v}" for k, v in headers.items())]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def baseline_tree(ref: str, where: Path) -> Path:
    """The repository at ``ref``, with this tree's generated protos (they are not committed)."""
    tree = where / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for generated in (ROOT / "protos").glob("*_pb2*.py"):
        shutil.copy(generated, tree / "protos" / generated.name)
    return tree


class IdsPod:
    """The snort-ids pod run from ``tree`` (``with IdsPod(...) as pod:``), stopped with SIGTERM."""

    command: ClassVar[list[str]] = [sys.executable, "-m", "sdc.pod", IDS]

    def __init__(self, cfg: Config, tree: Path):
        self.cfg = cfg
        self.tree = tree
        self.proc: subprocess.Popen[bytes] | None = None
        self.stats_url = f"http://127.0.0.1:{topology.stats_port(cfg, IDS)}/stats"

    def __enter__(self) -> IdsPod:
        env = {**os.environ, **pod_env(self.cfg), "PYTHONPATH": str(self.tree)}
        log = open(self.cfg.state_dir / f"{IDS}-{self.tree.name}.log", "ab")  # the child writes it
        self.proc = subprocess.Popen(self.command, cwd=self.tree, env=env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        log.close()
        deadline = time.monotonic() + READY_SECONDS
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise StackError(f"{IDS} from {self.tree} did not get ready; see {log.name}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            return requests.get(self.stats_url.replace("/stats", "/ready"), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the pod's process and by its children (the engine)."""
        assert self.proc is not None
        pod = psutil.Process(self.proc.pid)
        own = pod.cpu_times()
        children = 0.0
        for child in pod.children(recursive=True):
            t = child.cpu_times()
            children += t.user + t.system
        return own.user + own.system, children

    def inspected(self) -> int:
        count: int = requests.get(self.stats_url, timeout=5).json()["engine"]["requests_inspected"]
        return count


def vegeta(cfg: Config, targets: Path, rate: int, copies: int, connections: int) -> dict[str, Any]:
    binary = str(cfg.stack_cache / "vegeta" / "vegeta")
    seconds = copies / rate
    attack = subprocess.run(
        [binary, "attack", f"-targets={targets}", f"-rate={rate}/s", f"-duration={seconds:.3f}s", "-timeout=5s",
         f"-workers={connections}", f"-max-workers={connections}", f"-connections={connections}",
         f"-max-connections={connections}"],
        capture_output=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    report = subprocess.run([binary, "report", "-type=json"], input=attack.stdout, capture_output=True, check=True,
                            timeout=60).stdout  # fmt: skip
    out: dict[str, Any] = json.loads(report)
    return out


def measure(cfg: Config, args: argparse.Namespace, intake: str, tree: Path, targets: Path, warm: Path) -> Run:
    with IdsPod(cfg, tree) as pod:
        vegeta(cfg, warm, args.rate, WARM_COPIES, args.connections)
        time.sleep(0.5)
        before_inspected = pod.inspected()
        pod_before, engine_before = pod.cpu()
        out = vegeta(cfg, targets, args.rate, args.copies, args.connections)
        time.sleep(0.5)  # the last batch reaches the engine
        pod_after, engine_after = pod.cpu()
        inspected = pod.inspected() - before_inspected
    lat = out["latencies"]
    return Run(intake, out["requests"], pod_after - pod_before, engine_after - engine_before,
               lat["50th"] / 1e6, lat["99th"] / 1e6, lat["max"] / 1e6, out["success"], out["throughput"],
               inspected)  # fmt: skip


def report(runs: list[Run], args: argparse.Namespace, load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    print(f"\n{args.copies} copies at {args.rate}/s over {args.connections} keep-alive connections, trace ratio "
          f"{args.trace_ratio:g}; load average before {' '.join(f'{x:.2f}' for x in load[0])}, after "
          f"{' '.join(f'{x:.2f}' for x in load[1])}")  # fmt: skip
    print(f"{'intake':<9} {'copies':>6} {'pod CPU s/1k':>12} {'engine s/1k':>11} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'success':>7} {'answers/s':>9} {'inspected':>9}")  # fmt: skip
    for r in runs:
        print(f"{r.intake:<9} {r.copies:>6} {r.per_k(r.pod_cpu_s):>12.3f} {r.per_k(r.engine_cpu_s):>11.3f} "
              f"{r.p50_ms:>7.3f} {r.p99_ms:>7.3f} {r.max_ms:>7.2f} {r.success:>7.3f} {r.throughput:>9.0f} "
              f"{r.inspected:>9}")  # fmt: skip

    def medians(figure: Callable[[Run], float]) -> tuple[float, float]:
        return (statistics.median(figure(r) for r in runs if r.intake == "baseline"),
                statistics.median(figure(r) for r in runs if r.intake == "new"))  # fmt: skip

    failed = [r.intake for r in runs if r.success < 1 or r.inspected != r.copies or r.copies < 0.99 * args.copies]
    if failed:
        print(f"NOT COMPARABLE: in the {', '.join(failed)} run(s) copies failed, were not inspected, or were not all "
              f"sent at the rate")  # fmt: skip
    cpu = medians(lambda r: r.per_k(r.pod_cpu_s))
    p50 = medians(lambda r: r.p50_ms)
    p99 = medians(lambda r: r.p99_ms)
    print(f"medians, baseline -> new (ratio baseline/new): pod CPU s/1k copies {cpu[0]:.3f} -> {cpu[1]:.3f} "
          f"({cpu[0] / cpu[1]:.2f}x), answer p50 {p50[0]:.3f} -> {p50[1]:.3f} ms ({p50[0] / p50[1]:.2f}x), "
          f"p99 {p99[0]:.3f} -> {p99[1]:.3f} ms ({p99[0] / p99[1]:.2f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=10000, help="copies sent per run (1..100000)")
    parser.add_argument("--rate", type=int, default=1000, help="copies per second (1..20000)")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections (1..256)")
    parser.add_argument("--trace-ratio", type=float, default=0.01, help="share of copies whose trace is sampled")
    parser.add_argument("--repeat", type=int, default=1, help="baseline and new runs, alternated (1..10)")
    parser.add_argument("--baseline-ref", default="569d7f5", help="git revision with the intake to compare with")
    parser.add_argument("--tag", default="idsb", help="prefix of the pods' names in the registry (1-7 characters)")
    parser.add_argument("--port-offset", type=int, default=0, help="added to every port of the benchmark's stack")
    args = parser.parse_args()
    limits = [(args.copies, 1, 100000, "--copies"), (args.rate, 1, 20000, "--rate"),
              (args.connections, 1, 256, "--connections"), (args.repeat, 1, 10, "--repeat"),
              (args.port_offset, 0, 999, "--port-offset")]  # fmt: skip
    for value, low, high, name in limits:
        if not low <= value <= high:
            sys.exit(f"bench/sdc/ids_intake: {name} takes {low}..{high}, not {value}")
    if not (0 <= args.trace_ratio <= 1 and re.fullmatch(r"[a-z][a-z0-9]{0,6}", args.tag)):
        sys.exit(
            "bench/sdc/ids_intake: --trace-ratio takes 0..1, --tag 1-7 lowercase letters or digits (a letter first)"
        )

    state_dir = os.environ.get("CLOVER_BENCH_STATE_DIR") or str(ROOT / ".clover/bench-ids-intake")
    env = bench_env(state_dir, port_offset=args.port_offset, tag=args.tag, netns_mode=False)
    try:
        with BenchStack(env, parts=("redis", "jaeger")) as stack, tempfile.TemporaryDirectory() as tmp:
            cfg = dataclasses.replace(stack.cfg, sdc_trace_ratio=args.trace_ratio)
            if not (cfg.stack_cache / "vegeta" / "vegeta").exists():
                sys.exit("bench/sdc/ids_intake: vegeta is not built (make setup)")
            trees = {"baseline": baseline_tree(args.baseline_ref, Path(tmp)), "new": ROOT}
            targets, warm = Path(tmp) / "copies.txt", Path(tmp) / "warm.txt"
            targets.write_text(copy_targets(cfg, args.copies, args.trace_ratio, seed=1))
            warm.write_text(copy_targets(cfg, WARM_COPIES, args.trace_ratio, seed=2))
            print(f"snort-ids on {topology.pod_ip(cfg, IDS)} (loopback), baseline {args.baseline_ref}, new {ROOT}")
            load_before = os.getloadavg()
            runs = [measure(cfg, args, intake, tree, targets, warm)
                    for _ in range(args.repeat) for intake, tree in trees.items()]  # fmt: skip
            report(runs, args, (load_before, os.getloadavg()))
    except (BenchBusy, StackError, subprocess.CalledProcessError) as exc:
        sys.exit(f"bench/sdc/ids_intake: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench/sdc/ids_intake: interrupted; what this run started was stopped")


if __name__ == "__main__":
    main()
