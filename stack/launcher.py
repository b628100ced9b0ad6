"""Starting, stopping and inspecting the parts of the local stack.

Each running part has ``<state dir>/<part>/process.json`` with its pid and the process's start
time (so a recycled pid is never mistaken for the part). ``up`` checks everything it can
before starting anything: artifacts, Java, free ports. When a part fails to become ready,
every part this call started is stopped again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from clover.config import Config
from stack.hostsetup import HostSetup, Progress
from stack.java import JavaNotFound, find_java
from stack.parts import Part, PartDirs
from stack.probes import ProbeFailed


class StackError(RuntimeError):
    """A part could not be started or stopped; the message says which and why."""


@dataclass(frozen=True)
class PartStatus:
    """One row of ``cloverctl local status``."""

    name: str
    port: int
    pid: int | None
    health: str
    rss_bytes: int | None = None
    detail: str = ""


def _quiet(_: str) -> None:
    pass


def port_owner(port: int) -> str:
    """Who listens on ``port``: ``pid N (name)``, or a note that the owner is not visible."""
    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        return "an unknown process (run as root to see it)"
    for conn in connections:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                return "an unknown process"
            try:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline()[:3]) or proc.name()})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return "another socket (not listening)"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Launcher:
    """Runs a set of parts as detached processes under one state directory."""

    def __init__(
        self,
        cfg: Config,
        parts: Mapping[str, Part],
        groups: Mapping[str, list[str]] | None = None,
        default: list[str] | None = None,
    ):
        """``groups`` name sets of parts (``sdc`` = the sample chain); ``default`` is what
        ``up``/``status`` act on when no part is named (all parts when None)."""
        self.cfg = cfg
        self.parts = dict(parts)
        self.groups = dict(groups or {})
        self.default = list(default) if default is not None else list(self.parts)

    # -- bookkeeping ---------------------------------------------------------------------------

    def dirs(self, name: str) -> PartDirs:
        part = self.parts.get(name)
        return PartDirs(self.cfg.state_dir / (part.home if part and part.home else name))

    def _record_file(self, name: str) -> Path:
        return self.dirs(name).root / "process.json"

    def process(self, name: str) -> psutil.Process | None:
        """The live process of a part, or None (a stale record is removed)."""
        record = self._record_file(name)
        try:
            info = json.loads(record.read_text())
            proc = psutil.Process(info["pid"])
            if abs(proc.create_time() - info["create_time"]) > 1 or proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(info["pid"])
            return proc
        except FileNotFoundError:
            return None
        except (psutil.Error, ValueError, KeyError):
            record.unlink(missing_ok=True)
            return None

    def select(self, names: Iterable[str] | None) -> list[Part]:
        """The parts named, groups expanded, in start order (the default set when none are named)."""
        chosen: list[str] = []
        for name in list(names or []) or self.default:
            if name in self.groups:
                chosen += self.groups[name]
            elif name in self.parts:
                chosen.append(name)
            else:
                known = ", ".join([*self.parts, *self.groups])
                raise StackError(f"unknown part {name!r}; parts and groups are: {known}")
        return [p for p in self.parts.values() if p.name in chosen]

    def running(self) -> list[Part]:
        """Every part with a live process, in start order."""
        return [p for p in self.parts.values() if self.process(p.name) is not None]

    # -- checks before anything starts ---------------------------------------------------------

    def preflight(self, parts: list[Part]) -> None:
        """Raise StackError for the first reason these parts cannot start; start nothing."""
        for part in parts:
            missing = [str(p) for p in part.installed if not p.exists()]
            if missing:
                raise StackError(f"{part.name}: {missing[0]} is missing; run `make setup` first")
        if any(p.uses_java for p in parts):
            try:
                find_java(self.cfg.java_home)
            except JavaNotFound as exc:
                names = ", ".join(p.name for p in parts if p.uses_java)
                raise StackError(f"cannot start {names}: {exc}") from None
        seen: dict[int, str] = {}
        for part in parts:
            for label, port in part.ports.items():
                if port in seen:
                    raise StackError(f"port {port} is configured twice: {seen[port]} and {part.name} {label}")
                seen[port] = f"{part.name} {label}"
                if not port_is_free(port):
                    raise StackError(
                        f"port {port} ({part.name} {label}) is already in use by {port_owner(port)}; "
                        "stop it or configure another port"
                    )

    # -- up ------------------------------------------------------------------------------------

    def up(self, names: Iterable[str] | None = None, fresh: bool = False, progress: Progress = _quiet) -> None:
        """Start the parts that are not running and wait until every one is ready."""
        parts = self.select(names)
        if fresh:
            self.down([p.name for p in parts], progress)
            for part in parts:
                shutil.rmtree(self.dirs(part.name).root, ignore_errors=True)
            progress("removed the data of " + ", ".join(p.name for p in parts))
        live = {p.name: self.process(p.name) for p in parts}
        to_start = [p for p in parts if live[p.name] is None]
        for part in parts:
            proc = live[part.name]
            if proc is not None:
                progress(f"{part.name:<11} already running (pid {proc.pid})")
        self.preflight(to_start)
        started: list[Part] = []
        confirmed: list[Part] = []
        try:
            for setup in _host_setups(to_start):
                setup.setup(progress)
            for part in to_start:
                progress(f"{part.name:<11} starting" + (f" on port {part.main_port}" if part.main_port else ""))
                self._spawn(part)
                started.append(part)
                if part.ready_before_next:
                    self._wait_ready([part], progress)
                    confirmed.append(part)
            self._wait_ready([p for p in parts if p not in confirmed], progress)
        except BaseException as exc:
            for part in reversed(started):
                self._stop(part, _quiet)
            self._undo_host_setups(parts, progress)
            if isinstance(exc, StackError):
                raise
            if isinstance(exc, KeyboardInterrupt):
                raise StackError("interrupted; the parts this command started were stopped") from None
            raise StackError(f"{type(exc).__name__}: {exc}; the parts this command started were stopped") from exc

    def _spawn(self, part: Part) -> None:
        dirs = self.dirs(part.name)
        dirs.root.mkdir(parents=True, exist_ok=True)
        launch = part.prepare(dirs)
        env = {**os.environ, **launch.env}
        with open(dirs.log, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {part.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                launch.argv,
                cwd=dirs.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        info = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "argv": launch.argv}
        self._record_file(part.name).write_text(json.dumps(info))

    def _wait_ready(self, parts: list[Part], progress: Progress) -> None:
        start = time.monotonic()
        pending = {p.name: p for p in parts}
        last_reason: dict[str, str] = {}
        while pending:
            for name, part in list(pending.items()):
                proc = self.process(name)
                if proc is None:
                    raise StackError(f"{name} exited while starting; last lines of {self.dirs(name).log}:\n"
                                     + self.tail(name, 15))  # fmt: skip
                try:
                    part.probe()
                except ProbeFailed as exc:
                    last_reason[name] = str(exc)
                    if time.monotonic() - start > part.startup_timeout:
                        raise StackError(
                            f"{name} was not ready after {part.startup_timeout:.0f}s ({exc}); see {self.dirs(name).log}"
                        ) from None
                    continue
                del pending[name]
                progress(f"{name:<11} ready ({part.health}) after {time.monotonic() - start:.1f}s")
            if pending:
                time.sleep(0.5)

    # -- down ----------------------------------------------------------------------------------

    def down(self, names: Iterable[str] | None = None, progress: Progress = _quiet) -> None:
        """Stop the named parts (every part when none are named), last started first."""
        chosen = self.select(names) if names else list(self.parts.values())
        for part in reversed(chosen):
            self._stop(part, progress)
        self._undo_host_setups(chosen, progress)

    def _undo_host_setups(self, parts: list[Part], progress: Progress) -> None:
        """Tear down the host setups of ``parts`` that none of their parts still uses."""
        running = self.running()
        for setup in _host_setups(parts):
            if not any(p.host_setup is setup for p in running):
                setup.teardown(progress)

    def _stop(self, part: Part, progress: Progress) -> None:
        proc = self.process(part.name)
        if proc is None:
            return
        started = time.monotonic()
        if part.before_stop is not None:
            try:
                part.before_stop()
            except Exception as exc:  # stopping goes on: the process is what must end
                progress(f"{part.name:<11} before stopping: {type(exc).__name__}: {exc}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        if not self._wait_gone(proc, part.stop_timeout):
            progress(f"{part.name:<11} did not stop within {part.stop_timeout:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            self._wait_gone(proc, 10)
        self._record_file(part.name).unlink(missing_ok=True)
        progress(f"{part.name:<11} stopped after {time.monotonic() - started:.1f}s")

    @staticmethod
    def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # reap it when it is our own child
                os.waitpid(proc.pid, os.WNOHANG)
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
            time.sleep(0.1)
        return False

    # -- status and logs -----------------------------------------------------------------------

    def status(self, names: Iterable[str] | None = None) -> list[PartStatus]:
        rows = []
        for part in self.select(names):
            proc = self.process(part.name)
            if proc is None:
                rows.append(PartStatus(part.name, part.main_port, None, "stopped"))
                continue
            try:
                rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
            except psutil.Error:
                rss = None
            try:
                part.probe()
                rows.append(PartStatus(part.name, part.main_port, proc.pid, "healthy", rss))
            except ProbeFailed as exc:
                rows.append(PartStatus(part.name, part.main_port, proc.pid, "unhealthy", rss, str(exc)))
        return rows

    def tail(self, name: str, lines: int = 50) -> str:
        log = self.dirs(name).log
        if not log.exists():
            return ""
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _host_setups(parts: Iterable[Part]) -> list[HostSetup]:
    """The distinct host setups of ``parts``, in part order."""
    found: list[HostSetup] = []
    for part in parts:
        if part.host_setup is not None and not any(part.host_setup is s for s in found):
            found.append(part.host_setup)
    return found
