"""The CPU one span of the chain costs a pod: the OpenTelemetry SDK (the baseline) beside ``sdc.tracing``.

    .venv/bin/python bench/sdc/spans.py [--spans 20000] [--repeat 3]

Each side makes ``--spans`` SERVER spans with the tags a Python hop sets (``http_tags`` and the
pod's node_id, a distinct request id each), ends them with ``finish`` (status and response size),
then encodes them as the OTLP/HTTP body in batches of 512: the SDK with ``TracerProvider`` and the
OTLP exporter's ``encode_spans`` (what the pods used until 2026-12-07), ``sdc.tracing.Telemetry``
with ``sdc.otlp.SpanEncoder``. Nothing is sent. It prints the process CPU µs per span of each
step, per repeat, and the medians' ratio SDK/ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanKind

from clover.config import Config
from sdc.tracing import SCOPE, Telemetry, finish, http_tags

POD = "clover-server1"
NAME = "clover-server1.default.svc.cluster.local:9180/*"
BATCH = 512


class Kept(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def tags(i: int) -> dict[str, str | int | bool]:
    return http_tags(url="http://clover-server1:9180/about.html", method="GET", user_agent="wrk/4.2",
                     request_size=0, upstream_cluster="inbound|9180||clover-server1.default.svc.cluster.local",
                     request_id=f"{i:032x}", peer="10.244.0.11:40112")  # fmt: skip


def timed(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def sdk_run(n: int, node_id: str) -> tuple[float, float]:
    kept = Kept()
    provider = TracerProvider(resource=Resource.create({"service.name": POD}), sampler=ALWAYS_ON)
    provider.add_span_processor(kept)
    tracer = provider.get_tracer(SCOPE)

    def make() -> None:
        for i in range(n):
            span = tracer.start_span(NAME, kind=SpanKind.SERVER, attributes={"node_id": node_id, **tags(i)})
            finish(span, 200, 4_310)

    def encode() -> None:
        for i in range(0, n, BATCH):
            encode_spans(kept.spans[i : i + BATCH]).SerializeToString()

    return timed(make), timed(encode)


def our_run(n: int, cfg: Config) -> tuple[float, float]:
    tel = Telemetry(cfg, POD, schedule_delay_ms=3_600_000)
    ended: list[Span] = []
    tel.sender.add = ended.append  # type: ignore[method-assign,assignment]  # kept, not sent

    def make() -> None:
        for i in range(n):
            finish(tel.start(NAME, SpanKind.SERVER, None, tags(i)), 200, 4_310)

    def encode() -> None:
        for i in range(0, n, BATCH):
            tel.sender.encoder.request(ended[i : i + BATCH])  # type: ignore[arg-type]

    return timed(make), timed(encode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cfg = dataclasses.replace(Config.from_env(), sdc_trace_ratio=1.0, otlp_http_url="http://127.0.0.1:9")
    node_id = Telemetry(cfg, POD, schedule_delay_ms=3_600_000).node_id
    totals: dict[str, list[float]] = {"sdk": [], "ours": []}
    for repeat in range(args.repeat):
        for side in ("sdk", "ours"):
            seconds = sdk_run(args.spans, node_id) if side == "sdk" else our_run(args.spans, cfg)
            make, encode = (s / args.spans * 1e6 for s in seconds)
            totals[side].append(make + encode)
            print(f"repeat {repeat + 1} {side:4}  make+end {make:6.1f} µs/span  encode {encode:6.1f}  "
                  f"total {make + encode:6.1f}")  # fmt: skip
    sdk, ours = statistics.median(totals["sdk"]), statistics.median(totals["ours"])
    print(f"median total: sdk {sdk:.1f} µs/span, ours {ours:.1f} µs/span, sdk/ours {sdk / ours:.2f}")


if __name__ == "__main__":
    main()
