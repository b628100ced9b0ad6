"""The local cluster with Clover's systems: how long each step takes, and what it costs idle.

    sudo .venv/bin/python -m bench.cluster.run [--idle 60] [--state-dir .clover-bench-cluster]

Needs root, the built cluster (``make cluster-build``) and the images (``make images``). In its
own state directory (fresh: an empty etcd) it times

* ``local up cluster`` from built binaries to every part ready (node Ready, cluster DNS);
* loading the images (controller, Redis, Cassandra, Kafka, Spark) into the cluster's containerd;
* ``create system datastore`` (Cassandra StatefulSet on a volume, Redis) and ``create system
  controller`` + ``nodeport`` until the controller answers ``/health`` through NodePort 32044;
* ``create system kafka``; then, with ``--spans`` requests of a made-up tracked service waiting
  in Kafka (the analytics enabled in Redis, as ``start visibility`` does), ``create system
  visibility`` until its drivers are ready and their executor pods run, and until the first
  figures of those requests are in Redis (exactly ``--spans`` requests);
* ``delete system ...`` until the pods and the volume claims are gone; ``local down cluster``;

and the idle CPU (% of one core) and memory (RSS) of every process of the cluster, over
``--idle`` seconds, with the datastore, Kafka, the controller and the visibility system deployed
beside the baseline: the same cluster idle with nothing of Clover's in it; and the ingest rate
(Kafka -> Spark -> Cassandra, end to end, bench/ingest/load.py's spans after as many to warm
up) of the ingest running as Spark on Kubernetes (its driver pod and one executor pod of at most
one core, as ``create system visibility`` makes them) beside the same load through the local
``spark-submit.sh`` run (``python -m bench.ingest.run --down``: the benchmark stack, ports
+20000, started after the cluster is down and taken down after), and their ratio.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.ingest.load import feed, make_spans
from clover import keys, topics
from clover.config import Config
from protos import records_pb2
from stack.catalogue import local_stack
from stack.cluster import containers
from stack.cluster.layout import ClusterPaths
from stack.cluster.parts import GROUP
from stack.images import build

ROOT = Path(__file__).resolve().parents[2]
CLOVERCTL = Path(sys.executable).parent / "cloverctl"
IMAGES = ["clover-redis", "clover-cassandra", "clover-controller", "clover-kafka", "clover-spark"]
NAMESPACE = "clover-system"
HEALTH = "http://10.251.0.1:32044/health"


def cluster_processes(paths: ClusterPaths) -> list[psutil.Process]:
    """The cluster's parts and everything under its containerd (shims, containers)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(paths.root) in cmdline:
            found[proc.pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
    return list(found.values())


def idle(paths: ClusterPaths, seconds: float) -> tuple[float, float]:
    """CPU (% of one core) and RSS (MiB) of the cluster's processes over ``seconds``."""
    procs = cluster_processes(paths)
    before = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            before[p.pid] = sum(p.cpu_times()[:2])
    started = time.monotonic()
    time.sleep(seconds)
    used, rss = 0.0, 0
    for p in procs:
        try:
            used += sum(p.cpu_times()[:2]) - before.get(p.pid, 0.0)
            rss += p.memory_info().rss
        except psutil.Error:
            pass
    return 100 * used / (time.monotonic() - started), rss / 2**20


def cloverctl(paths: ClusterPaths, *args: str) -> None:
    subprocess.run([str(CLOVERCTL), *args, "--kubeconfig", str(paths.kubeconfig)], check=True,
                   capture_output=True, text=True)  # fmt: skip


def until_healthy(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(HEALTH, timeout=5) as answer:
                if answer.status == 200:
                    return
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def kubectl_json(paths: ClusterPaths, *args: str) -> Any:
    argv = [str(paths.bin / "kubectl"), "--kubeconfig", str(paths.kubeconfig), "-n", NAMESPACE, *args, "-o", "json"]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


def redis_of(paths: ClusterPaths) -> redis.Redis:
    """The cluster's Redis at its pod's address, with the password from its Secret."""
    pod = kubectl_json(paths, "get", "pods", "-l", "app=redis")["items"][0]
    secret = kubectl_json(paths, "get", "secret", "clover-redis")["data"]["password"]
    return redis.Redis(host=pod["status"]["podIP"], port=6379, password=base64.b64decode(secret).decode(),
                       decode_responses=True, socket_timeout=10)  # fmt: skip


def waiting_requests(paths: ClusterPaths, service: str, count: int) -> None:
    """``count`` requests of ``service`` (server spans) in Kafka, acknowledged."""
    from kafka import KafkaProducer

    bootstrap = f"{kubectl_json(paths, 'get', 'pod', 'kafka-0')['status']['podIP']}:9092"
    topics.ensure_topics(bootstrap)
    start_us = int(time.time() * 1_000_000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type="lz4")
    try:
        for i in range(count):
            span = records_pb2.Span(
                trace_id=f"{service}-{i}", span_id="s", service=service, operation_name="GET /b",
                start_time_us=start_us + i * 1000, duration_us=1000 + i % 500, http_method="GET", http_url="/b",
                http_status_code=200, user_agent="bench", node_id=service, source=records_pb2.JAEGER,
                kind=records_pb2.SPAN_KIND_SERVER, upstream_cluster="none",
            )  # fmt: skip
            producer.send(topics.SPANS, key=span.trace_id.encode(), value=span.SerializeToString())
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)


def until_figures(store: redis.Redis, service: str, count: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while store.hget(keys.service_stats(service), "request_count") != str(count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no figures for {count} requests of {service} in Redis after {timeout:.0f}s")
        time.sleep(0.5)


def ingest_report(paths: ClusterPaths) -> dict[str, float]:
    """The ingest driver's progress report, in its pod."""
    argv = [str(paths.bin / "kubectl"), "--kubeconfig", str(paths.kubeconfig), "-n", NAMESPACE, "exec",
            "clover-ingest-0", "-c", "spark", "--", "cat", "/var/lib/clover/ingest/status.json"]  # fmt: skip
    report: dict[str, float] = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    return report


def cluster_ingest_rate(paths: ClusterPaths, spans: int, warmup: int) -> float:
    """Spans per second through the ingest in the cluster, after ``warmup`` spans through it."""
    bootstrap = f"{kubectl_json(paths, 'get', 'pod', 'kafka-0')['status']['podIP']}:9092"
    start_us = int(time.time() * 1_000_000)
    if warmup:
        warm = feed(bootstrap, make_spans(warmup, f"warm{int(time.time())}", start_us),
                    lambda: ingest_report(paths).get("spans", 0))  # fmt: skip
        print(f"  cluster ingest warm-up ({warmup:,} spans, not counted): {warm:,.0f} spans/s")
    rate = feed(bootstrap, make_spans(spans, f"ing{int(time.time())}", start_us),
                lambda: ingest_report(paths).get("spans", 0))  # fmt: skip
    print(f"  cluster ingest ({spans:,} spans): {rate:,.0f} spans/s", flush=True)
    return rate


def local_ingest_rate(spans: int, warmup: int) -> dict[str, float]:
    """bench/ingest's run on the benchmark stack (started, then taken down): its JSON line."""
    argv = [sys.executable, "-m", "bench.ingest.run", "--spans", str(spans), "--warmup", str(warmup), "--down"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    if done.returncode != 0:
        raise SystemExit(f"python -m bench.ingest.run exited {done.returncode}")
    result: dict[str, float] = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of each idle measurement")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".clover-bench-cluster")
    parser.add_argument("--spans", type=int, default=10_000, help="requests waiting in Kafka for the visibility system")
    parser.add_argument("--ingest-spans", type=int, default=10_000, help="spans of each ingest rate measured")
    parser.add_argument("--ingest-warmup", type=int, default=10_000, help="spans through each ingest before")
    args = parser.parse_args()
    cfg = replace(Config.from_env(), state_dir=args.state_dir.resolve())
    paths = ClusterPaths.of(cfg)
    archives = build.archives(Config.from_env(), names=IMAGES)
    if missing := [a.name for a in archives if not a.exists()]:
        print(f"no image archives {missing}: run make images first", file=sys.stderr)
        return 1
    stack = local_stack(cfg)
    figures: dict[str, float] = {}
    in_cluster = f"ingest rate, Spark on Kubernetes ({args.ingest_spans} spans) spans/s"
    cluster_rate = 0.0
    try:
        started = time.monotonic()
        stack.up([GROUP], fresh=True)
        figures["local up cluster (built, fresh etcd) s"] = time.monotonic() - started
        figures["baseline: idle cluster CPU %"], figures["baseline: idle cluster RSS MiB"] = idle(paths, args.idle)
        started = time.monotonic()
        containers.import_images(paths, archives)
        figures[f"load {len(archives)} images s"] = time.monotonic() - started
        started = time.monotonic()
        cloverctl(paths, "create", "system", "datastore")
        figures["create system datastore (ready) s"] = time.monotonic() - started
        started = time.monotonic()
        cloverctl(paths, "create", "system", "controller")
        cloverctl(paths, "create", "system", "controller", "nodeport")
        until_healthy()
        figures["create system controller + nodeport -> /health 200 s"] = time.monotonic() - started
        started = time.monotonic()
        cloverctl(paths, "create", "system", "kafka")
        figures["create system kafka (ready) s"] = time.monotonic() - started
        service = f"bench{int(time.time())}"
        waiting_requests(paths, service, args.spans)
        store = redis_of(paths)
        store.sadd(keys.VISIBILITY_SERVICES, service)
        store.set(keys.ANALYTICS_ENABLED, "1")
        started = time.monotonic()
        cloverctl(paths, "create", "system", "visibility")
        figures["create system visibility -> drivers ready, executors running s"] = time.monotonic() - started
        until_figures(store, service, args.spans)
        figures[f"create system visibility -> first figures in Redis ({args.spans} requests) s"] = (
            time.monotonic() - started
        )
        cluster_rate = figures[in_cluster] = cluster_ingest_rate(paths, args.ingest_spans, args.ingest_warmup)
        cpu, rss = idle(paths, args.idle)
        figures["with Clover: idle cluster CPU %"], figures["with Clover: idle cluster RSS MiB"] = cpu, rss
        started = time.monotonic()
        for system in (("visibility",), ("controller", "nodeport"), ("controller",), ("kafka",), ("datastore",)):
            cloverctl(paths, "delete", "system", *system)
        figures["delete systems (gone) s"] = time.monotonic() - started
    finally:
        started = time.monotonic()
        stack.down([GROUP])
        figures["local down cluster s"] = time.monotonic() - started
    if in_cluster in figures:  # the same load through the local stack, with the cluster down
        local = local_ingest_rate(args.ingest_spans, args.ingest_warmup)["ingest_spans_per_s"]
        figures[f"ingest rate, local spark-submit.sh ({args.ingest_spans} spans) spans/s"] = local
        figures["ingest rate ratio, Kubernetes / local"] = cluster_rate / local
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:8.1f}")
    print(json.dumps({k: round(v, 2) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
