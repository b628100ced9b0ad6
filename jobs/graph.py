"""The mesh as a graph: who made each request a service answered (its *caller*), the graph's
aggregates, and its Redis hashes.

``with_edge_requests`` adds to a read's spans each request another service made, with its caller,
for the edge kinds of jobs/kinds.py; one aggregation (jobs/facts.py) then counts the spans for every
other kind and those requests for the edge kinds. The caller is:

* **application tracers** (jaeger, zipkin): the service of the span's parent, when that is
  another service (the client span of A whose child is B's server span). The parent is looked up
  among the spans read (one join of the requests with the read's span ids and services), then,
  for a parent in a bucket not read, in ``visibility.spans`` by its primary key (trace id, span
  id), a direct join of point reads whose few rows are broadcast.
* **Clovisor**: the pod at the exchange's client address: the service whose Clovisor spans of the
  same bucket carry that address as their own (the server address of an exchange it answered,
  the client address of one it made); an address no traced pod has names the caller itself. So
  a service with no tracer at all appears, traced on its veth, and so does a caller Clovisor
  does not trace. The addresses (one row per pod and bucket) are broadcast.

Only requests are joined, with the columns the edge kinds read: client and internal spans,
user-agents and nodes never cross the network.

A request's edge is kept in its own span's bucket. A parent stored after its child's bucket was
computed is in the same bucket or in the one before (a call starts after its caller's span
does), so each changed bucket is recomputed with the next one (``with_next_buckets``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
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
# What the edge kinds read of a request (jobs/facts.py span_facts); the other span columns are null.
EDGE_READS = (
    "bucket", "traceid", "service", "source", "span_kind", "operation_name", "http_url", "status_code", "grpc_status",
    "upstream_cluster", "duration_us", "start_time", "request_size", "response_size",
)  # fmt: skip

# (traceid, parent_spanid) rows -> the same with ``stored_service``: the service of that span as stored.
ParentLookup = Callable[[DataFrame], DataFrame]


def parents_in(table: DataFrame) -> ParentLookup:
    """The lookup of parents in ``table`` (columns traceid, spanid, service): ``visibility.spans``
    read with the connector's direct join, or any frame of those columns."""
    stored = table.select(
        F.col("traceid").alias("stored_trace"),
        F.col("spanid").alias("stored_span"),
        F.col("service").alias("stored_service"),
    )

    def lookup(wanted: DataFrame) -> DataFrame:
        on = (wanted["traceid"] == stored["stored_trace"]) & (wanted["parent_spanid"] == stored["stored_span"])
        return wanted.join(stored, on).select("traceid", "parent_spanid", "stored_service")

    return lookup


def _present(column: Column) -> Column:
    return column.isNotNull() & (column != "")


def _edge_columns(spans: DataFrame) -> list[Column]:
    """SPAN_COLUMNS of a request as the edge kinds need them: what they do not read is null."""
    types = dict(spans.dtypes)
    return [F.col(c) if c in EDGE_READS else F.lit(None).cast(types[c]).alias(c) for c in SPAN_COLUMNS]


def requests_with_callers(
    spans: DataFrame, stored_parents: ParentLookup, open_buckets: Collection[int] | None = None
) -> DataFrame:
    """The requests in ``spans`` (SPAN_COLUMNS of jobs/facts.py and GRAPH_COLUMNS) that another
    service made, with their ``caller`` (SPAN_COLUMNS and caller). A parent not in ``spans`` is
    looked up in the store for the requests of ``open_buckets`` (ms; None: all), the buckets whose
    previous bucket is not in ``spans``: elsewhere a parent is in the read (a call starts right
    after its caller's client span does)."""
    clovisor = F.col("source") == CLOVISOR
    requests = spans.where(is_request())
    traced = requests.where(~clovisor & _present(F.col("parent_spanid"))).select(
        *_edge_columns(spans), F.col("parent_spanid").alias("parent_key")
    )
    in_read = spans.select(
        F.col("traceid").alias("read_trace"), F.col("spanid").alias("read_span"),
        F.col("service").alias("read_service"), F.col("bucket").alias("read_bucket"),
    )  # fmt: skip
    parent_in_read = (F.col("traceid") == F.col("read_trace")) & (F.col("parent_key") == F.col("read_span"))
    joined = traced.join(in_read, parent_in_read, "left")
    asking, answering = traced, in_read
    if open_buckets is not None:  # their requests and the parents in the same buckets: a small join
        chosen = list(open_buckets)
        asking = traced.where(F.unix_millis("bucket").isin(chosen))
        answering = in_read.where(F.unix_millis("read_bucket").isin(chosen))
    unresolved = (
        asking.join(answering, parent_in_read, "left_anti")
        .select("traceid", F.col("parent_key").alias("parent_spanid"))
        .distinct()
    )
    stored = F.broadcast(
        stored_parents(unresolved).select(
            F.col("traceid").alias("stored_trace"), F.col("parent_spanid").alias("stored_parent"), "stored_service"
        )
    )
    stored_on = (joined["traceid"] == stored["stored_trace"]) & (joined["parent_key"] == stored["stored_parent"])
    traced_callers = joined.join(stored, stored_on, "left").select(
        *SPAN_COLUMNS, F.coalesce(F.col("read_service"), F.col("stored_service")).alias("caller")
    )

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
    exchanges = requests.where(clovisor & _present(F.col("src_ip"))).select(*_edge_columns(spans), "src_ip")
    at_address = (exchanges["bucket"] == addresses["pod_bucket"]) & (exchanges["src_ip"] == addresses["pod_ip"])
    clovisor_callers = exchanges.join(addresses, at_address, "left").select(
        *SPAN_COLUMNS, F.coalesce(F.col("pod_service"), F.col("src_ip")).alias("caller")
    )
    found = traced_callers.unionByName(clovisor_callers)
    return found.where(F.col("caller").isNotNull() & (F.col("caller") != F.col("service")))


def with_edge_requests(
    spans: DataFrame, stored_parents: ParentLookup, open_buckets: Collection[int] | None = None
) -> DataFrame:
    """``spans`` (SPAN_COLUMNS and GRAPH_COLUMNS) as SPAN_COLUMNS with a null ``caller``, and each
    request another service made once more with its ``caller``: jobs/facts.py ``bucket_facts``
    aggregates the former into every kind but the graph's, the latter into the graph's, in one pass."""
    found = requests_with_callers(spans, stored_parents, open_buckets)
    return spans.select(*SPAN_COLUMNS, F.lit(None).cast("string").alias("caller")).unionByName(found)


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
