"""Where the IDS copy costs the chain its throughput: the copy as shipped (through the proxy's relay
to the IDS) beside the same copy sent to an nginx that only answers it (what any IDS would cost at
best), each also sent without the relay, and the chain without the copy; one server alone is the
baseline.

    .venv/bin/python bench/sdc/copy_path.py [--trace-ratios 1.0,0.01] [--seconds 4] [--rounds 3]
                                            [--connections 16] [--tag sdcp] [--port-offset 300]

Starts the benchmark's stack as ``run.py`` does (``bench/sdc/chain.py``), the servers, load
balancers and proxy on nginx. The answer-only nginx listens on the IDS pod's address, port
``ANSWER_ONLY_PORT`` (in its namespace when the pods have one): ``return 200``, no log. The arms
without the relay rewrite the proxy's rendered ``nginx.conf``: its copy location proxies straight
to the IDS and logs each copy as the relay does (so the pod's Python reads the same lines), then
nginx reloads; the next ModifyProxy renders the pod's own again. Not a configuration the pod can
run: without the relay, an IDS that stalls holds the clients' connections (the relay is what
``test_an_ids_that_stalls_holds_its_copies_and_not_the_clients`` checks).

Per tracing ratio (the pods restarted with it), the arms take turns ``--rounds`` times (wrk,
``--connections`` keep-alive connections, ``--seconds`` each, after 1 s of warm-up and once Jaeger
is idle). Prints each arm's req/s per round, the median, median / the server's, the CPU per 1,000
requests of the proxy pod, the IDS pod and the answer-only nginx, and for each round of an arm
with the copy: copies inspected by the IDS's engine (or answered by the answer-only nginx) / the
requests wrk counted (those still in flight when wrk stops are answered and copied but not
counted, so up to ``--connections`` more copies; fewer: copies the proxy dropped, its backlog full).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psutil

from bench.sdc.chain import BenchBusy, BenchStack, bench_env
from bench.sdc.run import PROXY, pod_cpu, restart, settle_backend, settled_copies, wrk
from clover.config import Config
from sdc import grpc_client, topology
from sdc.nginx_plane import log_format, preamble, socket_dir, status_server, status_words
from sdc.nginx_proxy import COPY_LOCATION, RELAY_SOCKET
from stack.catalogue import local_stack
from stack.launcher import StackError

ANSWER_ONLY_PORT = 8081
IDS = "snort-ids"


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    copies_to: int | None  # the port on the IDS's address the copies go to; None: no copy
    relay: bool = True
    target: str = PROXY  # the pod wrk sends to


# Consecutive arms differ in their mirror_path, so each ModifyProxy renders the pod's configuration anew.
ARMS = (
    Arm("server alone", None, target="clover-server1"),
    Arm("chain, no copy", None),
    Arm("relay -> IDS (as shipped)", topology.IDS_HTTP_PORT),
    Arm("direct -> IDS", topology.IDS_HTTP_PORT, relay=False),
    Arm("relay -> answer-only nginx", ANSWER_ONLY_PORT),
    Arm("direct -> answer-only nginx", ANSWER_ONLY_PORT, relay=False),
)


@dataclasses.dataclass
class Run:
    rps: float
    requests: int
    cpu: dict[str, float]  # CPU seconds per 1,000 requests: proxy, ids, answer-only
    copies: int | None  # inspected by the engine or answered by the answer-only nginx


class AnswerOnly:
    """An nginx on the IDS pod's address that answers every request with 200 and nothing else."""

    def __init__(self, cfg: Config):
        self.home = cfg.state_dir / "answer-only"
        self.cfg = cfg
        self.process: subprocess.Popen[bytes] | None = None
        self.asked = 0  # status requests made: stub_status counts them too

    def __enter__(self) -> AnswerOnly:
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        status_socket = socket_dir(self.home) / "status.sock"
        status_socket.parent.mkdir(parents=True, exist_ok=True)
        status_socket.unlink(missing_ok=True)
        conf = self.home / "nginx.conf"
        conf.write_text(f"""{preamble("answer-only", self.home, 0.0, "")}\
    server {{
        listen {topology.pod_ip(self.cfg, IDS)}:{ANSWER_ONLY_PORT} backlog=1024;
        access_log off;
        location / {{ return 200; }}
    }}
{status_server(self.home)}}}
""")
        argv = ["nginx", "-e", str(self.home / "error.log"), "-c", str(conf)]
        if topology.mode(self.cfg) == "netns":
            argv = ["ip", "netns", "exec", topology.netns_name(self.cfg, IDS), *argv]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not status_socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the answer-only nginx did not start; see {self.home / 'error.log'}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def answered(self) -> int:
        """Requests answered so far (stub_status), this question left out, once none is coming in."""
        seen = [-1]
        while True:
            self.asked += 1
            words = status_words(self.home)
            seen.append(int(words[words.index(b"requests") + 3]) - self.asked)  # after: accepts handled requests
            if seen[-1] == seen[-2]:
                return seen[-1]
            time.sleep(0.5)

    def cpu(self) -> float:
        if self.process is None:
            return 0.0
        with contextlib.suppress(psutil.Error):
            procs = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
            return sum(sum(p.cpu_times()[:2]) for p in procs)
        return 0.0


def without_relay(cfg: Config, text: str) -> str:
    """The proxy's rendered configuration with its copy location proxying straight to the IDS."""
    home = topology.pod_dir(cfg, PROXY) / "nginx"
    fifo = home / "access.fifo"
    relay_pass = f"proxy_pass http://unix:{socket_dir(home)}/{RELAY_SOCKET}:{COPY_LOCATION};"
    failed_only = f"access_log {fifo} clover_relay_failed if=$clover_relay_failed;"
    http_level = "    geo $remote_addr $clover_blocked {"
    for line in (relay_pass, failed_only, http_level):
        if text.count(line) != 1:
            raise RuntimeError(f"the proxy's nginx.conf no longer has {line!r} once: update {__file__}")
    direct_format = log_format(
        "clover_direct", copy="1", copy_span="$clover_copy_span", up_len="$upstream_response_length"
    )
    direct_pass = (f"proxy_pass http://clover_ids$request_uri;\n            proxy_bind {topology.pod_ip(cfg, PROXY)};\n"
                   '            proxy_set_header Connection "";')  # fmt: skip
    text = text.replace(relay_pass, direct_pass).replace(failed_only, f"access_log {fifo} clover_direct;")
    return text.replace(http_level, direct_format + http_level)


def reload_without_relay(cfg: Config) -> None:
    home = topology.pod_dir(cfg, PROXY) / "nginx"
    conf, candidate = home / "nginx.conf", home / "nginx.direct.conf"
    candidate.write_text(without_relay(cfg, conf.read_text()))
    test = ["ip", "netns", "exec", topology.netns_name(cfg, PROXY), "nginx", "-t", "-q", "-e", str(home / "error.log")]
    subprocess.run([*test, "-c", str(candidate)], check=True)
    os.replace(candidate, conf)
    os.kill(int((home / "nginx.pid").read_text()), signal.SIGHUP)
    time.sleep(1.0)  # the old worker finishes its requests; the new one takes the next


def use(cfg: Config, arm: Arm) -> None:
    if arm.target != PROXY:
        return
    mirror = "off" if arm.copies_to is None else f"http://{IDS}:{arm.copies_to}"
    grpc_client.modify_proxy(cfg, {"mirror_path": mirror})
    if not arm.relay:
        reload_without_relay(cfg)


def copies_so_far(cfg: Config, arm: Arm, answer_only: AnswerOnly) -> int | None:
    if arm.copies_to is None:
        return None
    if arm.copies_to == ANSWER_ONLY_PORT:
        return answer_only.answered()
    return settled_copies(cfg).inspected


def measure(cfg: Config, arm: Arm, answer_only: AnswerOnly, connections: int, seconds: int) -> Run:
    url = f"http://{topology.pod_ip(cfg, arm.target)}:9180/about.html"
    use(cfg, arm)
    wrk(url, connections, 1)
    copies_before = copies_so_far(cfg, arm, answer_only)
    settle_backend(cfg)
    launcher = local_stack(cfg)
    before, answer_before = pod_cpu(launcher), answer_only.cpu()
    rps, _, _, _, total, errors = wrk(url, connections, seconds)
    after, answer_after = pod_cpu(launcher), answer_only.cpu()
    if errors:
        raise RuntimeError(f"{arm.name}: {errors} of {total} requests failed")
    copies_after = copies_so_far(cfg, arm, answer_only)
    copies = None if copies_before is None or copies_after is None else copies_after - copies_before
    cpu = {kind: (after[kind] - before[kind]) * 1000 / total for kind in ("proxy", "ids")}
    cpu["answer-only"] = (answer_after - answer_before) * 1000 / total
    return Run(rps, total, cpu, copies)


def report(ratio: float, args: argparse.Namespace, runs: dict[str, list[Run]]) -> None:
    server = statistics.median(r.rps for r in runs[ARMS[0].name])
    print(f"\ntrace {ratio:g}, {args.connections} keep-alive connections, wrk {args.seconds}s, "
          f"{args.rounds} rounds (arms taking turns)")  # fmt: skip
    print(f"{'arm':<30} {'req/s each round':<24} {'median':>7} {'/server':>7}  "
          f"CPU s/1,000 req: {'proxy':>6} {'ids':>6} {'answer':>6}  copies answered")  # fmt: skip
    for arm in ARMS:
        got = runs[arm.name]
        median = statistics.median(r.rps for r in got)
        rounds = " ".join(f"{r.rps:.0f}" for r in got)
        cpu = {k: statistics.median(r.cpu[k] for r in got) for k in ("proxy", "ids", "answer-only")}
        copies = "" if got[0].copies is None else ", ".join(f"{r.copies}/{r.requests}" for r in got)
        print(f"{arm.name:<30} {rounds:<24} {median:>7.0f} {median / server:>7.2f}  "
              f"{'':16} {cpu['proxy']:>6.3f} {cpu['ids']:>6.3f} {cpu['answer-only']:>6.3f}  {copies}")  # fmt: skip


@contextlib.contextmanager
def chain_at(base: Config, ratio: float) -> Iterator[Config]:
    cfg = dataclasses.replace(base, sdc_trace_ratio=ratio, sdc_dataplane="nginx")
    restart(cfg, ["sdc"])
    try:
        yield cfg
    finally:
        grpc_client.modify_proxy(cfg, {"mirror_path": f"http://{IDS}:{topology.IDS_HTTP_PORT}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace-ratios", default="1.0,0.01", help="span sampling ratios to compare")
    parser.add_argument("--seconds", type=int, default=4, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="times each arm runs, the arms taking turns")
    parser.add_argument("--connections", type=int, default=16, help="wrk's keep-alive connections")
    parser.add_argument("--tag", default="sdcp", help="prefix of the pods' namespaces and veths")
    parser.add_argument("--port-offset", type=int, default=300, help="added to every port of the benchmark's stack")
    args = parser.parse_args()
    try:
        ratios = [float(r) for r in args.trace_ratios.split(",")]
    except ValueError as exc:
        sys.exit(f"bench/sdc/copy_path: --trace-ratios: {exc}")
    if os.geteuid() != 0 or not topology.netns_available():
        sys.exit("bench/sdc/copy_path: needs root and network namespaces (the copies cross the pods' veths)")
    env = bench_env(port_offset=args.port_offset, tag=args.tag, netns_mode=True)
    try:
        with BenchStack(env) as stack:
            print(f"sample chain in netns mode, state in {stack.cfg.state_dir}; load average {os.getloadavg()}")
            for ratio in ratios:
                with chain_at(stack.cfg, ratio) as cfg, AnswerOnly(cfg) as answer_only:
                    runs: dict[str, list[Run]] = {arm.name: [] for arm in ARMS}
                    for _ in range(args.rounds):
                        for arm in ARMS:
                            runs[arm.name].append(measure(cfg, arm, answer_only, args.connections, args.seconds))
                    report(ratio, args, runs)
            print(f"\nload average after: {os.getloadavg()}")
    except (BenchBusy, StackError) as exc:
        sys.exit(f"bench/sdc/copy_path: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench/sdc/copy_path: interrupted; what this run started was stopped")


if __name__ == "__main__":
    main()
