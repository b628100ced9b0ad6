"""The snort-ids pod: the HTTP sink for the proxy's copies, the engine, and ``snort.Controller``.

* HTTP (port 80; 8080 without root): the sink (``sdc.ids.sink``) answers every copied request
  as soon as it is read (the original ran an nginx there); then the pod hands it to the engine,
  rebuilt as the client sent it: the proxy's forwarding headers are removed and the client's and
  proxy's addresses come from the RFC 7239 ``Forwarded`` header.
* gRPC 50052: AddRules appends to ``/etc/snort/rules/local.rules`` in the pod's file system
  (the rule is compiled first; a bad one, or a different rule with a sid already in use, is
  refused); StartSnort/StopSnort run and end the engine process (``sdc.ids.engine``); StopSnort
  also clears ``/var/log/snort``. ListRules, DeleteRules and GetStatus are Clover additions.
* On pod start, like the original's alert processor, ``snort_events`` and the events it lists
  are deleted from Redis, then the engine starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import redis.asyncio as aioredis

from clover import keys
from protos import snort_pb2, snort_pb2_grpc
from sdc import topology
from sdc.forward import FORWARDING_HEADERS, TRACE_HEADERS
from sdc.ids.engine import encode_record, http_record
from sdc.ids.rules import (
    COMMUNITY_FILE,
    RuleError,
    RuleFileEntry,
    build_rule,
    compile_rule,
    load_classifications,
    read_rules_file,
)
from sdc.ids.sink import Copy, SinkListener
from sdc.metrics import Registry
from sdc.runtime import ConfigRefused, Runtime

log = logging.getLogger(__name__)

ADDED = "Added to local rules"
FAILED_ADD = "Failed to add to local rules"
ALREADY = "Snort already running"
MIRROR_FIELD = re.compile(r"(\w+)=(\d+)")
# What the chain's hops add to a request (the copy's X-Request-Id too when the proxy made it).
HOP_HEADERS = FORWARDING_HEADERS | TRACE_HEADERS
HOP_HEADERS_WITH_REQUEST_ID = HOP_HEADERS | {"x-request-id"}
READY_TIMEOUT = 20.0
HANDOFF_SECONDS = 0.005
HANDOFF_BYTES = 512 * 1024  # the engine reads messages of up to 1 MiB


def parse_forwarded(value: str) -> dict[str, tuple[str, int]]:
    """``for="1.2.3.4:5678";by="10.0.0.1:9180"`` -> {"for": ("1.2.3.4", 5678), ...}."""
    out = {}
    for part in value.split(";"):
        name, _, raw = part.strip().partition("=")
        raw = raw.strip().strip('"')
        host, _, port = raw.rpartition(":")
        if name.lower() in ("for", "by") and host and port.isdigit():
            out[name.lower()] = (host.strip("[]"), int(port))
    return out


def _first_entries(xff: str, n: int) -> str:
    return ", ".join([entry.strip() for entry in xff.split(",")][:n])


class EngineProcess:
    """The running engine child, its channel and its latest counts.

    Copies are handed over in batches: those that arrive within ``HANDOFF_SECONDS`` go in one
    message (records separated by newlines), so the engine wakes once per batch, not per copy."""

    def __init__(self, proc: subprocess.Popen[bytes], channel: socket.socket, registry: Registry):
        self.proc = proc
        self.channel = channel
        self.registry = registry
        self.ready = asyncio.Event()
        self.loaded = False
        self.sids: list[int] = []
        self.errors: list[str] = []
        self.capture = ""
        self.stats: dict[str, int] = {}
        self.dropped = 0
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.flush_at: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def hand(self, record: bytes) -> None:
        if self.batch_bytes + len(record) + 1 > HANDOFF_BYTES:
            self.flush()
        self.batch.append(record)
        self.batch_bytes += len(record) + 1
        if self.flush_at is None:
            self.flush_at = asyncio.get_running_loop().call_later(HANDOFF_SECONDS, self.flush)

    def flush(self) -> None:
        if self.flush_at is not None:
            self.flush_at.cancel()
            self.flush_at = None
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        if not batch:
            return
        try:
            self.channel.send(b"\n".join(batch))
        except OSError:  # full (BlockingIOError) or the engine is gone
            self.dropped += len(batch)
            self.registry.inc("clover_sdc_ids_requests_dropped_total", len(batch), help="Copies the engine missed")
            return
        self.registry.inc("clover_sdc_ids_requests_handed_total", len(batch), help="Copies handed to the engine")


class SnortIds:
    kind = "ids"

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.rules_dir = runtime.rootfs / "etc" / "snort" / "rules"
        self.local_rules = self.rules_dir / "local.rules"
        self.log_dir = runtime.rootfs / "var" / "log" / "snort"
        self.classifications = load_classifications()
        self.http_port = runtime.ports["http"]
        self.inbound_stats = runtime.inbound(self.http_port)
        self.listener = SinkListener(runtime, self.take, self.inbound_stats)
        self.engine: EngineProcess | None = None
        self.lock = asyncio.Lock()
        self.last_stats: dict[str, int] = {}
        runtime.refreshers.append(self._refresh)
        runtime.stats_extra = self.status_dict

    # -- the sink ------------------------------------------------------------------------------

    def take(self, copy: Copy) -> None:
        """A copy the sink answered: to the engine, rebuilt as the client sent it."""
        engine = self.engine
        if engine is not None and engine.ready.is_set():
            engine.hand(encode_record(self._record(copy)))

    def _record(self, copy: Copy) -> dict[str, Any]:
        inbound, received = copy.inbound, copy.inbound.received
        forwarded = parse_forwarded(received.headers.get("forwarded", ""))
        src, sport = forwarded.get("for", (received.headers.get("x-real-ip", inbound.client_ip), 0))
        dst, dport = forwarded.get("by", (inbound.client_ip, topology.HTTP_PORT))
        mirror = dict(MIRROR_FIELD.findall(received.headers.get("x-clover-mirror", "")))
        client_xff = int(mirror.get("xff", "0"))  # entries of X-Forwarded-For the client sent
        added = HOP_HEADERS_WITH_REQUEST_ID if mirror.get("rid") == "1" else HOP_HEADERS
        if client_xff:
            added = added - {"x-forwarded-for"}
        headers = [(name, value) for name, value in copy.headers if name.lower() not in added]
        if client_xff:
            headers = [(name, _first_entries(value, client_xff) if name.lower() == "x-forwarded-for" else value)
                       for name, value in headers]  # fmt: skip
        tp = inbound.traceresponse or ""
        return http_record(
            src, sport, dst, dport, received.method, received.target, headers, copy.body, tp, time.time()
        )

    # -- the engine ----------------------------------------------------------------------------

    def _engine_args(self, fd: int) -> list[str]:
        rt = self.runtime
        args = [sys.executable, "-m", "sdc.ids.engine", "--fd", str(fd), "--rules-dir", str(self.rules_dir),
                "--log-dir", str(self.log_dir), "--ip", rt.ip, "--skip-port", str(self.http_port),
                "--skip-port", str(rt.ports["grpc"])]  # fmt: skip
        if os.geteuid() == 0:
            if rt.netns:
                args += ["--netns", rt.netns, "--capture-if", "eth0"]
            else:
                args += ["--capture-if", "lo", "--only-ip", rt.ip, "--skip-outgoing"]
        return args

    async def start_engine(self) -> EngineProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        ours.setblocking(False)
        try:
            # Popen (fork+exec in C) rather than the event loop's spawn: safe while gRPC threads run.
            proc = subprocess.Popen(
                self._engine_args(theirs.fileno()), pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        finally:
            theirs.close()
        engine = EngineProcess(proc, ours, self.runtime.registry)
        self.engine = engine
        reader = asyncio.create_task(self._read_engine(engine))
        try:
            await asyncio.wait_for(engine.ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            await self._end_engine(engine)
            reader.cancel()
            raise ConfigRefused(f"the engine did not load its rules within {READY_TIMEOUT:.0f}s") from None
        if not engine.loaded:
            status = await asyncio.to_thread(engine.proc.wait)
            self.engine = None
            raise ConfigRefused(f"the engine exited with status {status} while loading; see the pod log")
        return engine

    async def _read_engine(self, engine: EngineProcess) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(engine.channel, 1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if message.get("t") == "ready":
                engine.sids = list(message.get("sids", []))
                engine.errors = list(message.get("errors", []))
                engine.capture = message.get("capture", "")
                engine.loaded = True
                engine.ready.set()
            elif message.get("t") == "stats":
                engine.stats = {k: v for k, v in message.items() if isinstance(v, int)}
                self.last_stats = engine.stats
        engine.ready.set()  # the engine is gone: wake up anyone waiting for it
        await asyncio.to_thread(engine.proc.wait)
        if self.engine is engine:
            log.warning("the engine (pid %s) exited with status %s", engine.pid, engine.proc.returncode)
            self.engine = None

    async def _end_engine(self, engine: EngineProcess) -> None:
        engine.flush()
        if engine.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                engine.proc.terminate()
            try:
                await asyncio.to_thread(engine.proc.wait, 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    engine.proc.kill()
                await asyncio.to_thread(engine.proc.wait)
        engine.channel.close()

    def clear_logs(self) -> None:
        if self.log_dir.exists():
            for path in self.log_dir.iterdir():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    # -- rules ---------------------------------------------------------------------------------

    def local_entries(self) -> list[RuleFileEntry]:
        return read_rules_file(self.local_rules, self.classifications)

    def community_entries(self) -> list[RuleFileEntry]:
        return read_rules_file(self.rules_dir / "community.rules", self.classifications)

    def add_rule(self, request: snort_pb2.AddRule) -> str:
        try:
            if request.rule.strip():
                text = request.rule.strip()
            else:
                text = build_rule({f.name: getattr(request, f.name) for f in request.DESCRIPTOR.fields})
            rule = compile_rule(text, self.classifications)
        except RuleError as exc:
            raise ConfigRefused(str(exc)) from None
        for entry in self.community_entries():
            if entry.rule is not None and entry.rule.sid == rule.sid:
                raise ConfigRefused(f"sid {rule.sid} is used by the community rule {entry.rule.msg!r}")
        for entry in self.local_entries():
            if entry.rule is not None and entry.rule.sid == rule.sid:
                if entry.text == text:
                    return ADDED
                raise ConfigRefused(f"sid {rule.sid} is already used in local.rules by {entry.text!r}; delete it first")
        self._write_local([*(e.text for e in self.local_entries()), text])
        return ADDED

    def delete_rules(self, sids: list[str]) -> str:
        entries = self.local_entries()
        present = {str(e.rule.sid) for e in entries if e.rule is not None}
        missing = [s for s in sids if s not in present]
        if not sids:
            raise ConfigRefused("sids: name at least one signature id to delete")
        if missing:
            raise ConfigRefused(f"sids {', '.join(missing)} are not in local.rules")
        kept = [e.text for e in entries if e.rule is None or str(e.rule.sid) not in sids]
        self._write_local(kept)
        return f"Deleted {len(entries) - len(kept)} rule(s) from local rules"

    def _write_local(self, lines: list[str]) -> None:
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.local_rules.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, self.local_rules)

    # -- status --------------------------------------------------------------------------------

    def _refresh(self) -> None:
        self.listener.refresh()
        engine = self.engine
        registry = self.runtime.registry
        registry.set("clover_sdc_ids_engine_running", 1 if engine else 0, "1 while the engine runs")
        stats = engine.stats if engine else self.last_stats
        registry.set("clover_sdc_ids_requests_inspected", stats.get("requests", 0),
                     "Requests the current engine inspected")  # fmt: skip
        registry.set("clover_sdc_ids_packets_inspected", stats.get("packets", 0),
                     "Packets the current engine inspected")  # fmt: skip
        registry.set("clover_sdc_ids_alerts", stats.get("alerts", 0), "Alerts the current engine raised")

    def status(self) -> snort_pb2.SnortStatus:
        engine = self.engine
        stats = engine.stats if engine else {}
        return snort_pb2.SnortStatus(
            running=engine is not None,
            pid=engine.pid if engine else 0,
            rules_loaded=len(engine.sids) if engine else 0,
            requests_inspected=stats.get("requests", 0),
            packets_inspected=stats.get("packets", 0),
            alerts=stats.get("alerts", 0),
            packet_capture=bool(engine and engine.capture),
            interface=engine.capture if engine else "",
            dropped=(engine.dropped if engine else 0) + stats.get("alerts_dropped", 0),
            alerts_pending=stats.get("pending", 0),
        )

    def status_dict(self) -> dict[str, Any]:
        s = self.status()
        return {"engine": {f.name: getattr(s, f.name) for f in s.DESCRIPTOR.fields}}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not (self.rules_dir / "community.rules").exists():
            shutil.copy(COMMUNITY_FILE, self.rules_dir / "community.rules")
        self.local_rules.touch()
        await self._reset_events()
        await self.start_engine()

    async def _reset_events(self) -> None:
        client = aioredis.Redis.from_url(self.runtime.cfg.redis_url, socket_timeout=3, socket_connect_timeout=3)
        try:
            ids = await client.smembers(keys.SNORT_EVENTS)
            events = (keys.snort_event(i.decode() if isinstance(i, bytes) else i) for i in ids)
            await client.delete(keys.SNORT_EVENTS, keys.SNORT_EVENT_SEQ, *events)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("could not clear the previous alerts in Redis: %s", exc)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await self._end_engine(engine)


class SnortControl(snort_pb2_grpc.ControllerServicer):  # type: ignore[misc]  # protoc's gRPC base is untyped
    def __init__(self, ids: SnortIds):
        self.ids = ids
        self.runtime = ids.runtime

    async def _reply(
        self,
        context: grpc.aio.ServicerContext[Any, snort_pb2.SnortReply],
        method: str,
        failed: str,
        work: Callable[[], Awaitable[str]],
    ) -> snort_pb2.SnortReply:
        span = self.runtime.rpc_span(context, f"snort.Controller/{method}")
        try:
            async with self.ids.lock:
                message = await work()
        except ConfigRefused as exc:
            self.runtime.registry.inc("clover_sdc_config_rejected_total", help="Configuration changes refused")
            log.warning("%s refused: %s", method, exc)
            span.end()
            await context.abort(exc.code, f"{failed}: {exc}")
        log.info("%s: %s", method, message)
        span.end()
        return snort_pb2.SnortReply(message=message)

    async def AddRules(
        self, request: snort_pb2.AddRule, context: grpc.aio.ServicerContext[snort_pb2.AddRule, snort_pb2.SnortReply]
    ) -> snort_pb2.SnortReply:
        async def work() -> str:
            return await asyncio.to_thread(self.ids.add_rule, request)

        return await self._reply(context, "AddRules", FAILED_ADD, work)

    async def StartSnort(
        self,
        request: snort_pb2.ControlSnort,
        context: grpc.aio.ServicerContext[snort_pb2.ControlSnort, snort_pb2.SnortReply],
    ) -> snort_pb2.SnortReply:
        async def work() -> str:
            if self.ids.engine is not None:
                return ALREADY
            engine = await self.ids.start_engine()
            return f"Started Snort on pid: {engine.pid}"

        return await self._reply(context, "StartSnort", "Failed to start Snort", work)

    async def StopSnort(
        self,
        request: snort_pb2.ControlSnort,
        context: grpc.aio.ServicerContext[snort_pb2.ControlSnort, snort_pb2.SnortReply],
    ) -> snort_pb2.SnortReply:
        async def work() -> str:
            engine = self.ids.engine
            if engine is None:
                first = "Failed to stop Snort (not running)"
            else:
                self.ids.engine = None
                await self.ids._end_engine(engine)
                first = f"Stopped Snort on pid: {engine.pid}"
            try:
                await asyncio.to_thread(self.ids.clear_logs)
                second = "Cleared Snort logs"
            except OSError as exc:
                second = f"Failed to clear Snort logs ({exc})"
            return f"{first}, {second}"

        return await self._reply(context, "StopSnort", "Failed to stop Snort", work)

    async def ListRules(
        self, request: snort_pb2.RuleQuery, context: grpc.aio.ServicerContext[snort_pb2.RuleQuery, snort_pb2.RuleList]
    ) -> snort_pb2.RuleList:
        entries = self.ids.local_entries()
        if request.scope == "all":
            entries = self.ids.community_entries() + entries
        elif request.scope not in ("", "local"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"scope {request.scope!r} must be local or all")
        loaded = set(self.ids.engine.sids) if self.ids.engine else set()
        wanted = set(request.sids)
        rules = []
        for e in entries:
            if e.rule is None:
                continue
            if wanted and str(e.rule.sid) not in wanted:
                continue
            rules.append(snort_pb2.RuleInfo(sid=str(e.rule.sid), rev=str(e.rule.rev), msg=e.rule.msg, text=e.text,
                                            file=e.file, loaded=e.rule.sid in loaded))  # fmt: skip
        return snort_pb2.RuleList(rules=rules)

    async def DeleteRules(
        self, request: snort_pb2.RuleQuery, context: grpc.aio.ServicerContext[snort_pb2.RuleQuery, snort_pb2.SnortReply]
    ) -> snort_pb2.SnortReply:
        async def work() -> str:
            return await asyncio.to_thread(self.ids.delete_rules, list(request.sids))

        return await self._reply(context, "DeleteRules", "Failed to delete local rules", work)

    async def GetStatus(
        self,
        request: snort_pb2.ControlSnort,
        context: grpc.aio.ServicerContext[snort_pb2.ControlSnort, snort_pb2.SnortStatus],
    ) -> snort_pb2.SnortStatus:
        return self.ids.status()


def add_to(server: grpc.aio.Server, ids: SnortIds) -> None:
    snort_pb2_grpc.add_ControllerServicer_to_server(SnortControl(ids), server)
