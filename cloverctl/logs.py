"""``cloverctl get logs``: the sample chain's access-log entries from the log store, through the
controller (GET /logs): of one trace (every hop of that request), of a service, since a time."""

from __future__ import annotations

from typing import Any

import click

from cloverctl import rest
from cloverctl.rest import output_option

COLUMNS = (("time", 24), ("pod", 20), ("source", 20), ("destination", 20), ("responseCode", 4), ("responseSize", 8),
           ("latency", 9), ("method", 6), ("traceId", 32), ("spanId", 16), ("url", 0))  # fmt: skip
HEADINGS = {"responseCode": "CODE", "responseSize": "SIZE", "latency": "MS", "traceId": "TRACE", "spanId": "SPAN"}


def lines(entries: list[dict[str, Any]]) -> list[str]:
    def row(values: list[str]) -> str:
        return " ".join(v.ljust(w) if w else v for v, (_, w) in zip(values, COLUMNS, strict=True)).rstrip()

    out = [row([HEADINGS.get(name, name.upper()) for name, _ in COLUMNS])]
    out += [row([str(e.get(name, "")) for name, _ in COLUMNS]) for e in entries]
    return out


@click.command("logs", epilog=rest.EXIT_CODES_HELP)
@click.option("--trace", metavar="ID", help="Only the entries of this trace (every hop of one request).")
@click.option("--service", metavar="S", help="Only the entries of this service or pod (what it answered or sent).")
@click.option("--since", metavar="D", help="Only the last D: 30s, 10m, 2h, 7d.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1, max=10_000),
              help="How many entries (the newest).")  # fmt: skip
@output_option
def get_logs(trace: str | None, service: str | None, since: str | None, limit: int) -> None:
    """Show the chain's access-log entries, oldest first (GET /logs)."""
    params = {k: v for k, v in (("trace", trace), ("service", service), ("since", since)) if v}
    found = rest.data("GET", "/logs", params={**params, "limit": limit})
    if rest.json_output():
        rest.echo_json(found)
        return
    for line in lines(found["entries"]):
        click.echo(line)
    click.echo(f"\n{found['count']} entries")
