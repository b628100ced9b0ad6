"""The trace backend's CPU per span: the local stack's Jaeger configuration (each receiver writes
before it answers) beside the same with a batch processor in the pipeline (the baseline, what it
had until 2026-12-08).

    .venv/bin/python bench/sdc/jaeger_batch.py [--spans 35000] [--rate 7000] [--senders 4] [--repeat 6]

Renders ``stack/conf/jaeger.yaml`` on the benchmark's ports (``bench/sdc/chain.py``), and the
baseline from it with ``processors: [batch]`` (timeout 200 ms) added. Makes ``--spans`` SERVER
spans as a pod does (``bench/sdc/jaeger_tags.py``) and posts them in batches of 512 at ``--rate``
spans a second from ``--senders`` threads, as the chain's pods post theirs at the same time. Each
repeat starts each side's Jaeger on an empty Badger store (sides taking turns) and counts its CPU
from the first post until it is idle again. Prints Jaeger's CPU µs per span per repeat, the
medians and least of each side, and their ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psutil
import requests
import yaml

from bench.sdc.chain import bench_env
from bench.sdc.jaeger_tags import bodies
from bench.sdc.run import QUIET_CORES, backend_cpu, wait_idle
from bench.sdc.spans import BATCH, POD
from clover.config import Config
from sdc.tracing import Telemetry
from stack.parts import LOCAL, PartDirs, jaeger_part
from stack.probes import ProbeFailed

SIDES = ("batch processor", "ours")


def configs(cfg: Config, root: Path) -> dict[str, Path]:
    """Each side's configuration file: the stack's, and the baseline made from it."""
    ours = Path(jaeger_part(cfg, LOCAL).prepare(PartDirs(root / "ours")).argv[-1])
    baseline = yaml.safe_load(ours.read_text())
    baseline["service"]["pipelines"]["traces"]["processors"] = ["batch"]
    baseline["processors"] = {"batch": {"timeout": "200ms"}}
    batched = root / "batched" / "jaeger.yaml"
    batched.parent.mkdir(parents=True)
    batched.write_text(yaml.safe_dump(baseline).replace(str(root / "ours"), str(root / "batched")))
    return {"batch processor": batched, "ours": ours}


def post_all(url: str, posts: list[bytes], rate: int, senders: int) -> None:
    started = time.monotonic()

    def sender(first: int) -> None:
        session = requests.Session()
        for i in range(first, len(posts), senders):
            time.sleep(max(0.0, started + i * BATCH / rate - time.monotonic()))
            session.post(url, data=posts[i], headers={"Content-Type": "application/x-protobuf"}).raise_for_status()

    threads = [threading.Thread(target=sender, args=(first,)) for first in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def one_run(cfg: Config, conf: Path, posts: list[bytes], args: argparse.Namespace) -> float:
    """Jaeger's CPU µs per span on an empty store, until it is idle after the last post."""
    binary = cfg.stack_cache / "jaeger" / "jaeger"
    jaeger = subprocess.Popen([str(binary), "--config", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert jaeger.poll() is None, f"Jaeger ended at start: {jaeger.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
            try:
                jaeger_part(cfg, LOCAL).probe()
                break
            except ProbeFailed as exc:
                assert time.monotonic() < deadline, f"Jaeger not ready within 30 s: {exc}"
                time.sleep(0.1)
        process = psutil.Process(jaeger.pid)
        wait_idle(process, 120)
        before = backend_cpu(process)
        post_all(f"{cfg.otlp_http_url}/v1/traces", posts, args.rate, args.senders)
        wait_idle(process, 120)
        # wait_idle's last half second, when Jaeger was already idle, is not the spans'.
        spans: int = args.spans
        return (backend_cpu(process) - before - QUIET_CORES * 0.5) / spans * 1e6
    finally:
        jaeger.terminate()
        jaeger.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=35_000)
    parser.add_argument("--rate", type=int, default=7_000, help="spans a second")
    parser.add_argument("--senders", type=int, default=4, help="threads posting at the same time")
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args()
    cfg = Config.from_env(bench_env())
    tel = Telemetry(cfg, POD, schedule_delay_ms=3_600_000)
    posts = bodies(tel, args.spans, {k: str(v) for k, v in tel.resource.items()})
    tel.shutdown()
    costs: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="jaeger-batch-") as tmp:
        files = configs(cfg, Path(tmp))
        for repeat in range(args.repeat):
            for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
                for store in Path(tmp).glob("*/data"):
                    shutil.rmtree(store)
                    store.mkdir()
                costs[side].append(one_run(cfg, files[side], posts, args))
                print(f"repeat {repeat + 1} {side:15}  Jaeger {costs[side][-1]:6.1f} µs CPU/span", flush=True)
    for label, pick in (("median", statistics.median), ("least", min)):
        batched, ours = pick(costs["batch processor"]), pick(costs["ours"])
        print(f"{label}: with the batch processor {batched:.1f} µs/span, ours {ours:.1f} µs/span, "
              f"batch/ours {batched / ours:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
