"""The mesh as a graph: who made each request a service answered (its *caller*), the graph's
aggregates, and its Redis hashes.

``with_callers`` gives every span of a read a ``caller`` column, null but for a request another
service made; one aggregation (jobs/facts.py) then counts each span into every kind and, with a
caller, into the edge kinds of jobs/kinds.py too. The caller is:

* **application tracers** (jaeger, zipkin): the service of the span's parent, when that is
  another service (the client span of A whose child is B's server span), found in the request's
  bucket or the one before (read for that when it is not among the buckets read).
* **Clovisor**: the pod at the exchange's client address: the service whose Clovisor spans of the
  same bucket carry that address as their own (the server address of an exchange it answered,
  the client address of one it made); an address no traced pod has names the caller itself. So
  a service with no tracer at all appears, traced on its veth, and so does a caller Clovisor
  does not trace.

Every lookup is broadcast (a long and a name per span of the read, one address per pod and
bucket), so the spans themselves never cross the network.

A request's edge is kept in its own span's bucket. A parent stored after its child's bucket was
computed is in the same bucket or in the one before (a call starts after its caller's span
does), so each changed bucket is recomputed with the next one (``with_next_buckets``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from clover import figures, keys
from jobs import kinds
from jobs.aggregates import Aggregate
from jobs.facts import SPAN_COLUMNS, is_request
from jobs.kinds import AggregateKey
from jobs.publish import Window, by_kind, headline_source, seconds_of_data

# The columns of spans_by_bucket that only the graph reads.
GRAPH_COLUMNS = ("spanid", "parent_spanid", "src_ip", "dst_ip")
CLOVISOR = "clovisor"


def _present(column: Column) -> Column:
    return column.isNotNull() & (column != "")


def _span_key(trace: Column, span: Column, bucket_ms: Column) -> Column:
    """A span's id within its trace and bucket as one 64-bit number: the parent lookups join on a
    long (a wrong caller would need two of one step's span keys to collide in 64 bits)."""
    return F.xxhash64(trace, span, bucket_ms)


def with_callers(spans: DataFrame, earlier: DataFrame, width_ms: int) -> DataFrame:
    """``spans`` (SPAN_COLUMNS and GRAPH_COLUMNS) as SPAN_COLUMNS and ``caller``: for a request
    another service made, that service; null for every other span. A call starts right after its
    caller's span does, so a parent is in the request's bucket or else in the one before, among
    ``spans`` or ``earlier`` (bucket, traceid, spanid, service: the spans of the bucket before each
    bucket read whose previous bucket is not read).

    Every lookup is a broadcast (a long and a name per span, and the Clovisor addresses), so the
    spans themselves are never shuffled; (bucket, trace id, span id) is the stored spans' primary
    key, so each lookup finds one parent at most."""
    clovisor, request = F.col("source") == CLOVISOR, is_request()
    parent, bucket_ms = F.col("parent_spanid"), F.unix_millis("bucket")
    traced = request & ~clovisor & _present(parent)
    looked_up = spans.select(
        *SPAN_COLUMNS,
        F.when(traced, _span_key(F.col("traceid"), parent, bucket_ms)).alias("same_bucket"),
        F.when(traced, _span_key(F.col("traceid"), parent, bucket_ms - width_ms)).alias("bucket_before"),
        F.when(request & clovisor & _present(F.col("src_ip")), F.col("src_ip")).alias("client_ip"),
    )
    ids = spans.select("bucket", "traceid", "spanid", "service").unionByName(
        earlier.select("bucket", "traceid", "spanid", "service")
    )
    # One table for both lookups: the same plan, so Spark builds and broadcasts it once.
    parents = F.broadcast(
        ids.select(_span_key(F.col("traceid"), F.col("spanid"), F.unix_millis("bucket")).alias("key"), "service")
    )
    in_bucket, before = parents.alias("in_bucket"), parents.alias("before")
    own_address = F.when(F.col("span_kind") == "server", F.col("dst_ip")).when(
        F.col("span_kind") == "client", F.col("src_ip")
    )
    addresses = F.broadcast(
        spans.where(clovisor & _present(F.col("service")))
        .select(F.col("bucket").alias("pod_bucket"), own_address.alias("pod_ip"), "service")
        .where(_present(F.col("pod_ip")))
        .groupBy("pod_bucket", "pod_ip")
        .agg(F.min("service").alias("pod_service"))
    )
    at_address = (looked_up["bucket"] == addresses["pod_bucket"]) & (looked_up["client_ip"] == addresses["pod_ip"])
    joined = (
        looked_up.alias("request")
        .join(in_bucket, F.col("request.same_bucket") == F.col("in_bucket.key"), "left")
        .join(before, F.col("request.bucket_before") == F.col("before.key"), "left")
        .join(addresses, at_address, "left")
    )
    found = F.coalesce("in_bucket.service", "before.service", "pod_service", "client_ip")
    own = [F.col(f"request.{c}") for c in SPAN_COLUMNS]
    return joined.select(*own, F.when(found != F.col("request.service"), found).alias("caller"))


def earlier_buckets(buckets: Iterable[int], width_ms: int) -> list[int]:
    """The buckets (ms) whose spans ``with_callers`` needs besides ``buckets``': the one before
    each, when not among them."""
    chosen = set(buckets)
    return sorted({b - width_ms for b in chosen} - chosen)


def with_next_buckets(buckets: Iterable[int], width_ms: int, last_ms: int) -> list[int]:
    """``buckets`` and the bucket after each (up to ``last_ms``), sorted."""
    chosen = set(buckets)
    return sorted(chosen | {b + width_ms for b in chosen if b + width_ms <= last_ms})


# -- publication ---------------------------------------------------------------------------------


@dataclass
class Edge:
    """One edge's requests over a period as one source saw them: the figures, by URL, by status."""

    requests: Aggregate = field(default_factory=Aggregate)
    urls: dict[str, Aggregate] = field(default_factory=lambda: defaultdict(Aggregate))
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))


Edges = dict[tuple[str, str], dict[str, Edge]]  # (caller, callee) -> source -> edge


def edges_of(aggregates: Mapping[AggregateKey, Aggregate]) -> Edges:
    """The edges in ``aggregates``, by (caller, callee) and source."""
    found: Edges = defaultdict(lambda: defaultdict(Edge))
    for (caller, callee, source), agg in by_kind(aggregates, kinds.EDGE).items():
        found[(caller, callee)][source].requests.add(agg)
    for (caller, callee, source, target), agg in by_kind(aggregates, kinds.EDGE_URL).items():
        found[(caller, callee)][source].urls[target].add(agg)
    for (caller, callee, source, status), agg in by_kind(aggregates, kinds.EDGE_STATUS).items():
        found[(caller, callee)][source].statuses[status] += agg.count
    return found


def _edge_json(edge: Edge, source: str, seconds: Callable[[Aggregate, Aggregate | None], float | None],
               ever: Edge | None) -> str:  # fmt: skip
    """The published value of an edge: its figures, and its URLs' figures and status counts."""

    def period(agg: Aggregate, first: Aggregate | None) -> dict[str, str]:
        return figures.publish(figures.Period(agg, seconds(agg, first), source))

    value: dict[str, object] = dict(period(edge.requests, ever.requests if ever else None))
    value["urls"] = {url: period(agg, ever.urls.get(url) if ever else None) for url, agg in sorted(edge.urls.items())}
    value["status_codes"] = dict(sorted(edge.statuses.items()))
    return json.dumps(value, sort_keys=True)


def graph_hashes(totals: Mapping[AggregateKey, Aggregate], window: Mapping[AggregateKey, Aggregate],
                 span: Window) -> dict[str, dict[str, str]]:  # fmt: skip
    """The graph's hashes (clover/keys.py ``graph``): whole retention and window, each edge from the
    source that saw most of its requests, and as each source saw it."""
    whole, recent = edges_of(totals), edges_of(window)
    hashes: dict[str, dict[str, str]] = defaultdict(dict)

    def whole_seconds(agg: Aggregate, _: Aggregate | None) -> float | None:
        return seconds_of_data(agg)

    def window_seconds(agg: Aggregate, ever: Aggregate | None) -> float | None:
        return span.seconds(ever.first_us if ever else None) if agg.count else None

    for is_window, found in ((False, whole), (True, recent)):
        for pair, by_source in found.items():
            member = keys.graph_edge_field(*pair)
            headline = headline_source({s: e.requests for s, e in by_source.items()})
            for source, edge in sorted(by_source.items()):
                ever = whole.get(pair, {}).get(source) if is_window else None
                seconds = window_seconds if is_window else whole_seconds
                value = _edge_json(edge, source, seconds, ever)
                hashes[keys.graph(is_window, source)][member] = value
                if source == headline:
                    hashes[keys.graph(is_window)][member] = value
    return dict(hashes)
