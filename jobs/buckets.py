"""Where a row goes: the time bucket of a span or a metric sample, and the shard of a trace.

Each rule is written once in Python and once as a Spark column, side by side, so the ingest
(Spark), the analytics (Spark and Python) and the tests that seed Cassandra agree. Buckets are
``CLOVER_BUCKET_SECONDS`` wide (10 s by default) and named by their start, in milliseconds since
the epoch; the shard spreads a bucket's spans over ``SHARDS`` partitions by trace id.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

from pyspark.sql import Column
from pyspark.sql import functions as F

SHARDS = 4


def bucket_ms(time_us: int, width_s: int) -> int:
    """Start (ms since the epoch) of the bucket that a moment ``time_us`` (µs) falls in."""
    width_us = width_s * 1_000_000
    return time_us // width_us * width_us // 1000


def bucket_ms_column(time_us: Column, width_s: int) -> Column:
    """``bucket_ms`` as a Spark column."""
    width_us = width_s * 1_000_000
    return (F.floor(time_us / width_us) * (width_us // 1000)).cast("long")


def bucket_timestamp_column(time_us: Column, width_s: int) -> Column:
    """The bucket as the timestamp Cassandra's bucket columns hold."""
    return F.timestamp_millis(bucket_ms_column(time_us, width_s))


def window_buckets(now_ms: int, window_s: int, width_s: int) -> list[int]:
    """The buckets of the sliding window that ends at ``now_ms``, oldest first."""
    width = width_s * 1000
    first = (now_ms - window_s * 1000) // width * width
    return list(range(first, now_ms + 1, width))


def shard_of(trace_id: str) -> int:
    """The shard of a trace's rows inside a bucket: CRC-32 of the id's UTF-8 bytes."""
    return zlib.crc32(trace_id.encode()) % SHARDS


def shard_column(trace_id: Column) -> Column:
    """``shard_of`` as a Spark column."""
    return F.pmod(F.crc32(F.encode(trace_id, "UTF-8")), F.lit(SHARDS)).cast("int")


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime (as the Cassandra driver returns) is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)
