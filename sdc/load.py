"""A steady synthetic load on the sample chain: what `make demo` runs so there is traffic to see.

Requests go to proxy-access-control at a fixed rate, from a mix of pages, methods and user
agents, with a share of misses (404) so the dashboard has errors to show. It runs until SIGTERM
and logs a line of counts every 10 seconds.

  python -m sdc.load [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp

from clover.config import Config
from clover.logs import setup_logging
from sdc import topology

log = logging.getLogger("clover.load")


@dataclass(frozen=True)
class Visit:
    method: str
    path: str
    user_agent: str


# One round of the mix: mostly page views, a file upload (204), one miss (404) in ten.
MIX = (
    Visit("GET", "/", "chrome"),
    Visit("GET", "/index.html", "safari"),
    Visit("GET", "/test", "chrome"),
    Visit("GET", "/", "firefox"),
    Visit("GET", "/index.html", "curl/8.0"),
    Visit("GET", "/index.html", "chrome"),
    Visit("POST", "/upload_test", "python-requests/2.32"),
    Visit("GET", "/missing/page", "safari"),
    Visit("GET", "/", "jmeter"),
    Visit("GET", "/test", "firefox"),
)


def describe(rate: float) -> str:
    """What the load sends, for people: the rate and the share of each visit."""
    shares = Counter(f"{v.method} {v.path}" for v in MIX)
    mix = ", ".join(f"{visit} {100 * n / len(MIX):.0f}%" for visit, n in shares.items())
    return f"{rate:g} requests/s to proxy-access-control: {mix} (the miss answers 404)"


def proxy_url(cfg: Config) -> str:
    return f"http://{topology.pod_ip(cfg, 'proxy-access-control')}:{topology.HTTP_PORT}"


async def drive(base_url: str, rate: float, stop: asyncio.Event, count: int | None = None) -> Counter[str]:
    """Send MIX round after round at ``rate`` requests per second until ``stop`` is set (or, with
    ``count``, until that many were sent); the answers' statuses (or errors) are counted."""
    outcomes: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=10)
    interval = 1.0 / rate
    next_report = time.monotonic() + 10
    in_flight: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, visit: Visit) -> None:
        data = None
        if visit.method == "POST":
            data = aiohttp.FormData()
            data.add_field("file1", b"hello clover", filename="hello.txt", content_type="text/plain")
        try:
            async with session.request(
                visit.method, base_url + visit.path, headers={"User-Agent": visit.user_agent}, data=data
            ) as response:
                await response.read()
                outcomes[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcomes[type(exc).__name__] += 1

    async with aiohttp.ClientSession(timeout=timeout) as session:
        next_send = time.monotonic()
        for sent, visit in enumerate(itertools.cycle(MIX)):
            if stop.is_set() or sent == count:
                break
            task = asyncio.create_task(one(session, visit))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            next_send += interval
            delay = next_send - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if time.monotonic() >= next_report:
                log.info("sent so far: %s", dict(sorted(outcomes.items())))
                next_report += 10
        if in_flight:
            await asyncio.wait(in_flight, timeout=10)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description="Steady synthetic load on the sample chain's proxy")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--url", help="base URL (default: proxy-access-control of the local chain)")
    args = parser.parse_args()
    if args.rate <= 0:
        parser.error(f"--rate {args.rate} must be positive")
    setup_logging()
    base_url = args.url or proxy_url(Config.from_env())

    async def run() -> Counter[str]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("sending %.0f requests/s to %s", args.rate, base_url)
        return await drive(base_url, args.rate, stop)

    outcomes = asyncio.run(run())
    log.info("stopped; sent %s", dict(sorted(outcomes.items())))


if __name__ == "__main__":
    main()
