"""The modsecurity-crs pod: Apache with ModSecurity and the Core Rule Set, and the reader that
takes its audit log to Redis.

Apache runs as a child of the pod's process, inside the pod's network namespace (``ip netns
exec``), listening on the pod's address; as root its workers run as ``www-data``. Its
configuration is rendered into ``<pod dir>/conf`` from ``stack/conf/modsecurity-*`` with the
configured CRS mode and paranoia level. If Apache exits, the pod stops (the launcher sees it down).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from clover import keys
from clover.config import Config
from sdc import topology
from sdc.runtime import Runtime
from sdc.waf.audit import (
    SCORE_LOG_RULE_ID,
    SCORE_RULE_ID,
    AuditEntryError,
    WafAlert,
    alert_entry,
    event_fields,
    parse_entry,
)
from stack.parts import CONF_DIR, render

log = logging.getLogger(__name__)

APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
CRS_RULES = "/usr/share/modsecurity-crs/rules"
WORKER_USER = "www-data"
START_SECONDS = 30.0
STOP_SECONDS = 5.0
POLL_SECONDS = 0.1
# Past this size the reader empties the audit log once it has read all of it (Apache appends).
AUDIT_LOG_MAX_BYTES = 64 * 1024 * 1024
DISRUPTIVE = {"anomaly": "pass", "self-contained": "deny,status:403"}


def proxy_addresses(cfg: Config) -> str:
    """Whose X-Real-IP Apache believes: proxy-access-control's address; in a cluster, where the
    proxy has no fixed address, the pod network's."""
    if topology.mode(cfg) == topology.CLUSTER:
        return cfg.cluster_pod_cidr
    return topology.pod_ip(cfg, "proxy-access-control")


class WafStartFailed(RuntimeError):
    """Apache did not start; the message carries the end of its error log."""


class AuditLogReader:
    """Follows a file Apache appends JSON lines to, from where it was when the reader began."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self._partial = b""

    def lines(self) -> list[bytes]:
        """The complete lines appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        if self.offset > AUDIT_LOG_MAX_BYTES and not self._partial:
            with open(self.path, "r+b") as f:
                f.truncate(0)
            self.offset = 0
        return [line for line in complete if line.strip()]


class ModSecurityCrs:
    kind = "waf"

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        cfg = runtime.cfg
        root = topology.pod_dir(cfg, runtime.name)
        self.conf_dir, self.log_dir, self.run_dir = root / "conf", root / "logs", root / "run"
        self.data_dir, self.tmp_dir = root / "data", root / "tmp"
        self.audit_log = self.log_dir / "audit.log"
        self.port = runtime.ports["http"]
        self.process: asyncio.subprocess.Process | None = None
        self.redis = aioredis.Redis.from_url(cfg.redis_url, decode_responses=True, socket_timeout=5)
        self.counts = {"audit_entries": 0, "alerts": 0, "blocked": 0, "unreadable_lines": 0}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        runtime.stats_extra = self.status
        runtime.refreshers.append(self._refresh)

    # -- configuration -----------------------------------------------------------------------

    def render(self) -> Path:
        """Write httpd.conf, crs-setup.conf and allow.lua; returns httpd.conf."""
        cfg = self.runtime.cfg
        for d in (self.conf_dir, self.log_dir, self.run_dir, self.data_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        user_group = ""
        if os.geteuid() == 0:
            worker = pwd.getpwnam(WORKER_USER)
            for d in (self.data_dir, self.tmp_dir):
                os.chown(d, worker.pw_uid, worker.pw_gid)
            user_group = f"User {WORKER_USER}\nGroup #{worker.pw_gid}"
        render("modsecurity-crs-setup.conf", self.conf_dir / "crs-setup.conf", crs_mode=cfg.waf_crs_mode,
               disruptive=DISRUPTIVE[cfg.waf_crs_mode], paranoia_level=cfg.waf_paranoia_level,
               score_rule_id=SCORE_RULE_ID, score_log_rule_id=SCORE_LOG_RULE_ID)  # fmt: skip
        shutil.copyfile(CONF_DIR / "modsecurity-allow.lua", self.conf_dir / "allow.lua")
        return render(
            "modsecurity-httpd.conf", self.conf_dir / "httpd.conf", root=self.conf_dir.parent,
            listen=f"{self.runtime.ip}:{self.port}", run_dir=self.run_dir, log_dir=self.log_dir,
            data_dir=self.data_dir, tmp_dir=self.tmp_dir, conf_dir=self.conf_dir, user_group=user_group,
            modules=APACHE_MODULES, crs_rules=CRS_RULES, body_limit=cfg.waf_body_limit,
            proxy_addresses=proxy_addresses(cfg),
        )  # fmt: skip

    def command(self, conf: Path) -> list[str]:
        apache = [APACHE, "-f", str(conf), "-DFOREGROUND"]
        if self.runtime.netns:
            return ["ip", "netns", "exec", self.runtime.netns, *apache]
        return apache

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if not os.path.exists(APACHE) or not os.path.isdir(CRS_RULES):
            raise WafStartFailed(f"{APACHE} or {CRS_RULES} is missing: install apache2, libapache2-mod-security2 "
                                 "and modsecurity-crs (make setup)")  # fmt: skip
        conf = self.render()
        reader = AuditLogReader(self.audit_log)
        self.process = await asyncio.create_subprocess_exec(*self.command(conf), start_new_session=True)
        await self._wait_listening()
        cfg = self.runtime.cfg
        await self.redis.hset(keys.WAF_STATUS, mapping={
            "pod": self.runtime.name, "address": f"{self.runtime.ip}:{self.port}", "crs_mode": cfg.waf_crs_mode,
            "paranoia_level": str(cfg.waf_paranoia_level), "apache_pid": str(self.process.pid),
            "started": f"{time.time():.3f}",
        })  # fmt: skip
        self._tasks = [asyncio.create_task(self._follow(reader)), asyncio.create_task(self._watch())]
        log.info("Apache (pid %s) with ModSecurity and the CRS (%s mode, paranoia level %s) on %s:%s",
                 self.process.pid, cfg.waf_crs_mode, cfg.waf_paranoia_level, self.runtime.ip, self.port)  # fmt: skip

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.returncode is not None:
                raise WafStartFailed(f"Apache exited with {self.process.returncode}: {self._error_log_tail()}")
            with contextlib.suppress(OSError):
                sock = self.runtime.placement.tcp_socket()
                try:
                    await asyncio.get_running_loop().sock_connect(sock, (self.runtime.ip, self.port))
                    return
                finally:
                    sock.close()
            await asyncio.sleep(POLL_SECONDS)
        raise WafStartFailed(f"Apache did not listen on {self.runtime.ip}:{self.port} within {START_SECONDS:.0f}s: "
                             f"{self._error_log_tail()}")  # fmt: skip

    def _error_log_tail(self) -> str:
        try:
            lines = (self.log_dir / "error.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no error log"
        return " | ".join(lines[-3:]) or "the error log is empty"

    async def _watch(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        if not self._stopping:
            log.error("Apache exited with %s (%s); stopping the pod", code, self._error_log_tail())
            os.kill(os.getpid(), signal.SIGTERM)

    async def stop(self) -> None:
        self._stopping = True
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_SECONDS)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.redis.aclose()

    # -- the audit log to Redis --------------------------------------------------------------

    async def _follow(self, reader: AuditLogReader) -> None:
        while True:
            lines = reader.lines()
            for line in lines:
                await self._store_retrying(line)
            if not lines:
                await asyncio.sleep(POLL_SECONDS)

    async def _store_retrying(self, line: bytes) -> None:
        try:
            alert, entry = parse_entry(line)
        except AuditEntryError as exc:
            self.counts["unreadable_lines"] += 1
            log.warning("audit log line skipped (%s): %.120r", exc, line)
            return
        self.counts["audit_entries"] += 1
        if alert.rule_id:
            self.counts["alerts"] += 1
            self.counts["blocked"] += int(alert.blocked)
        delay = 0.5
        while True:
            try:
                await self.store(alert, entry)
                break
            except (aioredis.RedisError, OSError) as exc:
                log.warning("cannot store WAF audit entry %s in Redis (%s); retrying in %.1fs",
                            alert.transaction_id, exc, delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def store(self, alert: WafAlert, entry: dict[str, Any]) -> int | None:
        """The entry on the audit list and, when a CRS rule matched, the alert; returns its id."""
        event_id = int(await self.redis.incr(keys.WAF_EVENT_SEQ)) if alert.rule_id else None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.WAF_AUDIT_LOG, json.dumps(entry, sort_keys=True))
            pipe.ltrim(keys.WAF_AUDIT_LOG, 0, keys.WAF_AUDIT_LOG_LENGTH - 1)
            if event_id is not None:
                pipe.hset(keys.waf_event(event_id), mapping=event_fields(alert, event_id))  # type: ignore[arg-type]  # str values
                pipe.sadd(keys.WAF_EVENTS, str(event_id))
            pipe.hset(keys.WAF_STATUS, mapping={k: str(v) for k, v in self.counts.items()})
            await pipe.execute()
        if event_id is not None:
            self.runtime.access_log.write(alert_entry(alert, event_id, self.runtime.name, self.runtime.log_stream))
        return event_id

    def _refresh(self) -> None:
        for name, value in self.counts.items():
            self.runtime.registry.set(f"clover_sdc_waf_{name}", value, f"WAF {name.replace('_', ' ')} so far")

    def status(self) -> dict[str, Any]:
        cfg = self.runtime.cfg
        pid = self.process.pid if self.process is not None else None
        return {"waf": {"crs_mode": cfg.waf_crs_mode, "paranoia_level": cfg.waf_paranoia_level, "apache_pid": pid,
                        **self.counts}}  # fmt: skip
