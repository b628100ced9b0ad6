"""The detection engine ("Snort"): a child process of the snort-ids pod.

StartSnort runs ``python -m sdc.ids.engine``; StopSnort ends it. It loads community.rules and
local.rules once at start (like Snort, a rule change needs a restart), inspects every HTTP
request the pod's sink hands it over a SOCK_SEQPACKET socket pair, and, given an interface,
captured packets. Alerts go to Redis, the fast alert log and the proxy (``AlertSink``).

Messages on the socket pair are JSON. From the pod: ``{"t": "http", ...}`` records, one or
more a message, separated by newlines. To the pod:
``{"t": "ready", "sids": [...], "errors": [...]}`` once the rules are loaded, then
``{"t": "stats", ...}`` every quarter second.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from clover.config import Config
from clover.logs import setup_logging
from sdc.ids.alerts import Alert, AlertSink
from sdc.ids.packets import LINKTYPE_ETHERNET, PACKET_OUTGOING, decode, open_capture
from sdc.ids.rules import Rule, http_subject, load_classifications, read_rules_file
from sdc.netns import Placement
from sdc.runtime import run_loop
from sdc.tracing import Telemetry

log = logging.getLogger("sdc.ids.engine")

POD = "snort-ids"
REPORT_SECONDS = 0.25


def encode_record(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def http_record(
    src: str, sport: int, dst: str, dport: int, method: str, target: str, headers: list[tuple[str, str]],
    body: bytes, traceparent: str, at: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "t": "http", "src": src, "sp": sport, "dst": dst, "dp": dport, "m": method, "u": target,
        "h": headers, "b": base64.b64encode(body).decode(), "tp": traceparent, "at": at,
    }  # fmt: skip


class Engine:
    def __init__(self, args: argparse.Namespace, cfg: Config):
        self.args = args
        self.cfg = cfg
        self.channel = socket.socket(fileno=args.fd)
        self.channel.setblocking(False)
        classifications = load_classifications()
        rules_dir = Path(args.rules_dir)
        entries = read_rules_file(rules_dir / "community.rules", classifications)
        entries += read_rules_file(rules_dir / "local.rules", classifications)
        self.errors = [f"{e.file}: {e.error}: {e.text[:100]}" for e in entries if e.rule is None]
        for error in self.errors:
            log.warning("rule skipped: %s", error)
        rules = [e.rule for e in entries if e.rule is not None and e.rule.action == "alert"]
        self.rules = rules
        self.http_rules: list[Rule] = [r for r in rules if r.applies_to_http()]
        self.packet_rules: list[Rule] = [r for r in rules if r.applies_to_packets()]
        self.telemetry = Telemetry(cfg, POD)
        self.sink = AlertSink(cfg, self.telemetry, Path(args.log_dir))
        self.counts = {"requests": 0, "packets": 0}
        self.capture: socket.socket | None = None
        self.stopping = asyncio.Event()

    def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.channel.send(json.dumps(message).encode())

    def open_capture(self) -> None:
        if not self.args.capture_if or not self.packet_rules:
            return
        placement = Placement(self.args.ip, self.args.netns or None)
        placement.open()
        try:
            with placement.inside():
                skip = tuple(self.args.skip_port)
                self.capture = open_capture(self.args.capture_if, skip, self.args.only_ip or None)
        finally:
            placement.close()
        log.info("capturing packets on %s for %d packet rules", self.args.capture_if, len(self.packet_rules))

    def on_packets(self) -> None:
        assert self.capture is not None
        for _ in range(256):
            try:
                frame, address = self.capture.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                return
            if self.args.skip_outgoing and address[2] == PACKET_OUTGOING:
                continue
            self.counts["packets"] += 1
            decoded = decode(frame)
            if decoded is None:
                continue
            now = time.time()
            for rule in self.packet_rules:
                if rule.matches_subject(decoded.subject):
                    self.sink.submit(
                        Alert(rule, decoded.subject, now, decoded.data, LINKTYPE_ETHERNET, from_packet=True)
                    )

    def on_http(self, record: dict[str, Any]) -> None:
        self.counts["requests"] += 1
        body = base64.b64decode(record["b"])
        headers = [(k, v) for k, v in record["h"]]
        subject = http_subject(record["src"], record["sp"], record["dst"], record["dp"], record["m"], record["u"],
                               headers, body)  # fmt: skip
        data = subject.buffers["raw"]
        for rule in self.http_rules:
            if rule.matches_subject(subject):
                self.sink.submit(Alert(rule, subject, record.get("at") or time.time(), data, None, record["tp"]))

    async def read_channel(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(self.channel, 1 << 20)
            except OSError:
                data = b""
            if not data:
                log.info("the snort-ids pod closed the channel; stopping")
                self.stopping.set()
                return
            for line in data.split(b"\n"):
                try:
                    record = orjson.loads(line)
                except ValueError:
                    continue
                if record.get("t") == "http":
                    try:
                        self.on_http(record)
                    except Exception:
                        log.exception("inspecting a request failed")

    def stats(self) -> dict[str, Any]:
        return {"t": "stats", **self.counts, **self.sink.counts, "pending": self.sink.pending, "rules": len(self.rules)}

    async def report(self) -> None:
        while True:
            self._send(self.stats())
            await asyncio.sleep(REPORT_SECONDS)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.open_capture()
        self.sink.start()
        if self.capture is not None:
            loop.add_reader(self.capture.fileno(), self.on_packets)
        self._send({"t": "ready", "sids": [r.sid for r in self.rules], "errors": self.errors,
                    "capture": self.args.capture_if if self.capture else ""})  # fmt: skip
        tasks = [asyncio.create_task(self.read_channel()), asyncio.create_task(self.report())]
        log.info("Snort engine running: %d rules (%d HTTP, %d packet)", len(self.rules), len(self.http_rules),
                 len(self.packet_rules))  # fmt: skip
        await self.stopping.wait()
        if self.capture is not None:
            loop.remove_reader(self.capture.fileno())
            self.capture.close()
        for task in tasks:
            task.cancel()
        await self.sink.close()
        self._send(self.stats())
        self.telemetry.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="the SOCK_SEQPACKET end shared with the pod")
    parser.add_argument("--rules-dir", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--ip", required=True, help="the pod's address")
    parser.add_argument("--netns", default="", help="the pod's network namespace (for capture)")
    parser.add_argument("--capture-if", default="", help="interface to capture packets on (none: no capture)")
    parser.add_argument("--only-ip", default="", help="capture only packets to or from this address")
    parser.add_argument(
        "--skip-port",
        type=int,
        action="append",
        default=[],
        help="TCP port whose flows are not captured (the HTTP sink, the control port)",
    )
    parser.add_argument("--skip-outgoing", action="store_true", help="ignore sent copies (loopback capture)")
    args = parser.parse_args()
    setup_logging()
    os.makedirs(args.log_dir, exist_ok=True)
    run_loop(Engine(args, Config.from_env()).run())


if __name__ == "__main__":
    main()
