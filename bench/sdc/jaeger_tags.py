"""The trace backend's CPU per span of the chain: the pods' spans with the SDK's ``telemetry.sdk.*``
resource tags (the baseline, what they sent until 2026-12-07) beside the spans they send now.

    .venv/bin/python bench/sdc/jaeger_tags.py [--spans 35000] [--rate 7000] [--repeat 5]

Starts the benchmark's own Jaeger (``bench/sdc/chain.py``, Badger storage as the local stack's),
makes ``--spans`` SERVER spans with ``sdc.tracing.Telemetry`` as a Python hop does (its tags and a
distinct request id each) and encodes them twice: with the pod's resource, and with the resource
``Resource.create`` makes (three ``telemetry.sdk.*`` tags more). Each side is posted in batches
of 512 at ``--rate`` spans a second (the chain's full tracing at 1,000 requests a second makes
about 7,000), sides taking turns; Jaeger's CPU is counted from the first post until it is idle
again. Badger compacts its tables now and then, which makes a repeat cost several times the
others whichever side it falls on: the medians and the least of each side are compared. Prints
Jaeger's CPU µs per span per repeat, then the medians, the least, and their ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import requests
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Span, SpanKind

from bench.sdc.chain import BenchStack, bench_env
from bench.sdc.run import QUIET_CORES, settle_backend
from bench.sdc.spans import BATCH, NAME, POD, tags
from sdc.otlp import SpanEncoder
from sdc.tracing import SCOPE, Telemetry, finish
from stack.catalogue import local_stack


def bodies(tel: Telemetry, n: int, resource: dict[str, str]) -> list[bytes]:
    ended: list[Span] = []
    tel.sender.add = ended.append  # type: ignore[method-assign,assignment]  # kept, not sent
    for i in range(n):
        finish(tel.start(NAME, SpanKind.SERVER, None, tags(i)), 200, 4_310)
    encoder = SpanEncoder(resource, SCOPE)
    return [encoder.request(ended[i : i + BATCH]) for i in range(0, n, BATCH)]  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=35_000)
    parser.add_argument("--rate", type=int, default=7_000, help="spans a second")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with BenchStack(bench_env(), parts=("jaeger",)) as stack:
        cfg = stack.cfg
        jaeger = local_stack(cfg).process("jaeger")
        assert jaeger is not None, "the benchmark's Jaeger did not start"
        tel = Telemetry(cfg, POD, schedule_delay_ms=3_600_000)
        baseline = {k: str(v) for k, v in Resource.create(dict(tel.resource)).attributes.items()}
        sides = {"sdk tags": baseline, "ours": dict(tel.resource)}
        url = f"{cfg.otlp_http_url}/v1/traces"
        session = requests.Session()
        costs: dict[str, list[float]] = {side: [] for side in sides}
        for repeat in range(args.repeat):
            for side, resource in sides.items():
                posts = bodies(tel, args.spans, resource)
                settle_backend(cfg)
                before = sum(jaeger.cpu_times()[:2])
                started = time.monotonic()
                for i, body in enumerate(posts):
                    time.sleep(max(0.0, started + i * BATCH / args.rate - time.monotonic()))
                    session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}).raise_for_status()
                settle_backend(cfg, timeout=120)
                took = time.monotonic() - started
                # settle_backend's last half second, when Jaeger was already idle, is not the spans'.
                cpu = sum(jaeger.cpu_times()[:2]) - before - QUIET_CORES * 0.5
                costs[side].append(cpu / args.spans * 1e6)
                print(f"repeat {repeat + 1} {side:8}  {len(resource)} resource tags  Jaeger {costs[side][-1]:7.1f} "
                      f"µs CPU/span  ({took:.1f} s until idle)", flush=True)  # fmt: skip
        tel.shutdown()
    for label, pick in (("median", statistics.median), ("least", min)):
        sdk, ours = pick(costs["sdk tags"]), pick(costs["ours"])
        print(f"{label}: with sdk tags {sdk:.1f} µs/span, ours {ours:.1f} µs/span, sdk/ours {sdk / ours:.2f}")


if __name__ == "__main__":
    main()
