"""The chain's HTTP plumbing without the chain: the keep-alive upstream client (against an
in-process socket server), round-robin order, the block list, pod addresses and names."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from clover.config import Config
from sdc import topology
from sdc.forward import Target, rotate
from sdc.ids.service import parse_forwarded
from sdc.metrics import Registry
from sdc.netns import Placement
from sdc.proxy import Block, Blocklist
from sdc.upstream import ConnectFailed, Pool

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(script: Script) -> tuple[asyncio.Server, int, list[int]]:
    """A socket server running ``script`` per connection; returns it, its port, connection log."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


def pool_for(port: int) -> tuple[Pool, Registry]:
    registry = Registry()
    stats = registry.cluster("outbound", 9180, "clover-server1.default.svc.cluster.local")
    return Pool("127.0.0.1", port, Placement("127.0.0.1"), stats), registry


def test_requests_reuse_one_keep_alive_connection_and_parse_both_framings() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while True:
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            n += 1
            if n % 2:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-N: %d\r\n\r\nhello" % n)
            else:
                writer.write(
                    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                )
            assert request.startswith(b"POST /x HTTP/1.1\r\nHost: up\r\n") or request.startswith(b"GET")
            await writer.drain()

    async def run() -> None:
        server, port, connections = await serve(script)
        pool, _ = pool_for(port)
        answers = [await pool.request("GET", "/a", [("Host", "up")]) for _ in range(3)]
        posted = await pool.request("POST", "/x", [("Host", "up")], b"body!")
        assert [(a.status, a.body) for a in answers] == [(200, b"hello"), (201, b"abcde"), (200, b"hello")]
        assert (posted.status, posted.body) == (201, b"abcde")
        assert answers[2].header("x-n") == "3"
        assert connections == [1]
        stats = pool.stats
        assert (stats.counters["upstream_cx_total"], stats.gauges["upstream_cx_active"]) == (1, 1)
        pool.retire()
        assert stats.gauges["upstream_cx_active"] == 0
        server.close()

    asyncio.run(run())


def test_a_connection_the_upstream_closed_while_idle_is_replaced_transparently() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then close: the next request on this connection finds it gone

    async def run() -> None:
        server, port, connections = await serve(script)
        pool, _ = pool_for(port)
        first = await pool.request("GET", "/", [("Host", "up")])
        await asyncio.sleep(0.05)
        second = await pool.request("GET", "/", [("Host", "up")])
        assert (first.status, second.status) == (200, 200)
        assert connections == [1, 2]
        server.close()

    asyncio.run(run())


def test_a_refused_connection_is_a_connect_failure() -> None:
    async def run() -> None:
        server, port, _ = await serve(lambda r, w: asyncio.sleep(0))
        server.close()
        await server.wait_closed()
        pool, _ = pool_for(port)
        with pytest.raises(ConnectFailed) as err:
            await pool.request("GET", "/", [("Host", "up")])
        assert f"connect to 127.0.0.1:{port} failed" in str(err.value)
        assert pool.stats.counters["upstream_cx_connect_fail"] == 1

    asyncio.run(run())


def _target(name: str, failed_until: float = 0.0) -> Target:
    registry = Registry()
    stats = registry.cluster("outbound", 9180, f"{name}.default.svc.cluster.local")
    pool = Pool("127.0.0.1", 1, Placement("127.0.0.1"), stats)
    return Target(f"{name}:9180", name, "127.0.0.1", 9180, pool, stats, failed_until)


def test_round_robin_starts_at_the_next_server_and_puts_failed_ones_last() -> None:
    a, b, c = _target("a"), _target("b"), _target("c")
    assert [t.service for t in rotate([a, b, c], 0)] == ["a", "b", "c"]
    assert [t.service for t in rotate([a, b, c], 4)] == ["b", "c", "a"]
    b.failed_until = 1e12
    assert [t.service for t in rotate([a, b, c], 1)] == ["c", "a", "b"]
    assert rotate([], 3) == []


def test_a_block_lasts_until_its_deadline_and_a_later_alert_extends_it() -> None:
    blocks = Blocklist()
    blocks.block(Block("192.0.2.7", 100.0, 130.0, "1", "10000003", "scan"))
    blocks.block(Block("192.0.2.7", 101.0, 120.0, "2"))  # an earlier deadline does not shorten it
    assert blocks.is_blocked("192.0.2.7", now=129.9)
    assert not blocks.is_blocked("192.0.2.8", now=110.0)
    assert [b.event_id for b in blocks.active(now=129.0)] == ["1"]
    blocks.block(Block("192.0.2.7", 125.0, 160.0, "3"))
    assert blocks.is_blocked("192.0.2.7", now=150.0)
    assert not blocks.is_blocked("192.0.2.7", now=160.0)
    assert blocks.active(now=160.0) == []


def test_pods_get_fixed_addresses_names_and_stats_ports() -> None:
    cfg = dataclasses.replace(Config.from_env({}), sdc_mode="netns", sdc_tag="abcdefg")
    assert topology.pod_ip(cfg, "proxy-access-control") == "10.177.0.10"
    assert topology.pod_ip(cfg, "http-lb-v2") == "10.177.0.12"
    assert topology.pod_ip(cfg, "clover-server5") == "10.177.0.25"
    assert topology.pod_ip(cfg, "snort-ids") == "10.177.0.30"
    assert topology.pod_ip(cfg, "modsecurity-crs") == "10.177.0.40"
    assert topology.gateway_ip(cfg) == "10.177.0.1"
    veths = [topology.host_veth(cfg, n) for n in topology.POD_NAMES]
    assert max(len(v) for v in veths) == 15 and len(set(veths)) == len(veths)
    ports = sorted(topology.stats_port(cfg, n) for n in topology.POD_NAMES)
    assert ports == list(range(15090, 15100))
    loop_cfg = dataclasses.replace(cfg, sdc_mode="loopback")
    assert topology.pod_ip(loop_cfg, "http-lb-v1") == "127.177.0.11"
    assert topology.POD_NAMES[-1] == "proxy-access-control"  # started last: it calls the others


def test_the_mirror_carries_the_client_and_proxy_addresses() -> None:
    assert parse_forwarded('for="192.0.2.7:41000";by="10.177.0.10:9180";proto=http') == {
        "for": ("192.0.2.7", 41000),
        "by": ("10.177.0.10", 9180),
    }
    assert parse_forwarded("for=unknown") == {}
