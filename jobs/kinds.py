"""What the analytics aggregates: the kinds of partial aggregates, and what each one's key is made of.

An aggregate is kept per (bucket, kind, key). The key is a tuple of texts, the values of the
kind's ``parts`` (columns of the span facts, jobs/facts.py) in order; Cassandra stores it as a
``frozen<list<text>>``. Kinds with ``requests`` aggregate only the requests a service answered
(its server-side spans with an HTTP or gRPC status) and keep durations, errors and the quantile
sketch; the others count spans (the original's group-by keys).
"""

from __future__ import annotations

from dataclasses import dataclass

AggregateKey = tuple[str, tuple[str, ...]]  # (kind name, key parts)


@dataclass(frozen=True)
class Kind:
    name: str  # the `kind` column of the aggregate tables
    parts: tuple[str, ...]  # the span-fact columns the key is made of
    requests: bool = False  # only a service's requests, timed

    def key(self, *values: str) -> AggregateKey:
        if len(values) != len(self.parts):
            raise ValueError(f"a {self.name} key has {len(self.parts)} parts ({', '.join(self.parts)}), not {values}")
        return (self.name, values)


# Counted apart from the span facts (by trace id, and from the metric samples).
TRACES = Kind("traces", ())
METRICS = Kind("metrics", ())

# From the span facts, one aggregate per distinct key in a bucket.
SPANS = Kind("spans", ())
URL = Kind("url", ("http_url",))
AGENT = Kind("ua", ("user_agent",))
NODE = Kind("node", ("node_id",))
STATUS_URL = Kind("status_url", ("status", "http_url"))
NODE_URL = Kind("node_url", ("node_id", "http_url"))
OPERATION = Kind("op", ("operation_name",))
UPSTREAM = Kind("upstream", ("upstream_cluster",))
STATUS = Kind("status", ("status",))
REQUESTS = Kind("requests", ("service", "source"), requests=True)
URL_REQUESTS = Kind("url_requests", ("service", "source", "target"), requests=True)
# The graph (jobs/graph.py): a service's requests by the caller that made them.
EDGE = Kind("edge", ("caller", "service", "source"), requests=True)
EDGE_URL = Kind("edge_url", ("caller", "service", "source", "target"), requests=True)
EDGE_STATUS = Kind("edge_status", ("caller", "service", "source", "status"), requests=True)
GRAPH_KINDS = (EDGE, EDGE_URL, EDGE_STATUS)
# What Spark aggregates for the graph: one entry per request instead of one per graph kind (each
# a timed aggregate with its sketch); jobs/facts.py ``fold_facts`` merges these into GRAPH_KINDS.
# A request without a URL or without an HTTP status has NONE in that part.
EDGE_DETAIL = Kind("edge_detail", ("caller", "service", "source", "edge_target", "edge_status"), requests=True)
NONE = ""

# Aggregated over every span read; the graph's kinds only over the requests that have a caller.
SPAN_KINDS = (SPANS, URL, AGENT, NODE, STATUS_URL, NODE_URL, OPERATION, UPSTREAM, STATUS, REQUESTS, URL_REQUESTS)
