"""The stack the benchmarks run on: ports +20000 and state in .clover-bench/, so a demo stack
and the test stack can keep running beside it. Import this module before anything reads the
configuration."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFSET = 20000
BENCH_ENV = {
    "CLOVER_STATE_DIR": str(ROOT / ".clover-bench"),
    "CLOVER_REDIS_URL": f"redis://127.0.0.1:{6379 + OFFSET}/0",
    "CLOVER_KAFKA_BOOTSTRAP": f"127.0.0.1:{9092 + OFFSET}",
    "CLOVER_KAFKA_CONTROLLER_PORT": str(9093 + OFFSET),
    "CLOVER_CASSANDRA_PORT": str(9042 + OFFSET),
    "CLOVER_CASSANDRA_STORAGE_PORT": str(7000 + OFFSET),
    "CLOVER_PROMETHEUS_URL": f"http://127.0.0.1:{9090 + OFFSET}",
    "CLOVER_JAEGER_URL": f"http://127.0.0.1:{16686 + OFFSET}",
    "CLOVER_JAEGER_QUERY_GRPC_PORT": str(16685 + OFFSET),
    "CLOVER_JAEGER_THRIFT_PORT": str(14268 + OFFSET),
    "CLOVER_JAEGER_AGENT_PORT": str(6831 + OFFSET),
    "CLOVER_JAEGER_HEALTH_PORT": str(13133 + OFFSET),
    "CLOVER_OTLP_HTTP_URL": f"http://127.0.0.1:{4318 + OFFSET}",
    "CLOVER_OTLP_GRPC_PORT": str(4317 + OFFSET),
    "CLOVER_COLLECTOR_GRPC": "127.0.0.1:51054",
}
for _name, _value in BENCH_ENV.items():
    os.environ.setdefault(_name, _value)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
