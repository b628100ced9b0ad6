"""Protocol plugins: Python modules that parse what the kernel does not.

A plugin is a Python file defining a class ``Parser`` with a method

    parse(session_key: str, is_req: bool, data: bytes) -> tuple[bytes, dict[str, str] | None]

``data`` holds the payload bytes Clovisor saw (for ``http`` ports: each message head; for other
protocols: the first bytes of each segment), appended to what an earlier call left. Return
``(rest, fields)``: ``fields`` are added to the session's span as tags; ``rest`` is kept and
prepended to the next data. Return ``(data, None)`` when more bytes are needed. This is the
original's Go ``Parser`` interface, in Python.

Configure as the original: ``HSET clovisor_proto_cfg <protocol> /path/to/plugin.py``, then
``PUBLISH clovisor_proto_plugin_cfg_chan <protocol>`` to (re)load it without a restart.

A plugin runs inside Clovisor, as root, and anyone who can write Redis names its path. So a path
is only loaded from the plugin directory (CLOVER_CLOVISOR_PLUGIN_DIR, default
/etc/clover/clovisor-plugins) and only when nobody but root could have written it: the file, the
directory and every directory above it belong to root (or to the user Clovisor runs as) and are
not group- or world-writable (a sticky directory such as /tmp may be above it); a symlink may
point only inside the directory. Anything else is refused, logged with the path and the reason,
and counted (``plugins.refused`` in ``clovisor status``, ``clovisor_plugins_refused`` on /metrics).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from clover.config import Config

log = logging.getLogger(__name__)

MAX_BUFFER = 64 * 1024  # bytes kept per session direction while a plugin asks for more


class Parser(Protocol):
    def parse(self, session_key: str, is_req: bool, data: bytes) -> tuple[bytes, dict[str, str] | None]: ...


class PluginError(Exception):
    """A plugin could not be loaded; the message says which file and why."""


class PluginRefused(PluginError):
    """A plugin path Clovisor will not run: outside the plugin directory, or writable by someone
    other than root. The message names the path and the reason."""


def _unsafe(path: Path, st: os.stat_result, sticky_ok: bool = False) -> str | None:
    """Why ``path`` could have been written by someone other than root (None: it could not)."""
    if st.st_uid not in (0, os.geteuid()):
        return f"{path} is owned by uid {st.st_uid}, not root"
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        names = {stat.S_IWGRP: "group-writable", stat.S_IWOTH: "world-writable"}
        who = names.get(writable, "group- and world-writable")
        return f"{path} is {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def read_trusted(protocol: str, path: str, plugin_dir: Path) -> tuple[Path, bytes]:
    """The file ``path`` names and its bytes, if it is a plugin Clovisor may run (module doc);
    else PluginRefused. The bytes are read from the descriptor that was checked."""

    def refuse(reason: str) -> PluginRefused:
        return PluginRefused(f"plugin for {protocol!r} refused: {path}: {reason}")

    if not os.path.isabs(path):
        raise refuse("not an absolute path")
    root = Path(os.path.realpath(plugin_dir))
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root):
        link = f" (a symlink to {real})" if real != Path(os.path.abspath(path)) else ""
        raise refuse(f"outside the plugin directory {root}{link}")
    if not root.is_dir():
        raise refuse(f"the plugin directory {plugin_dir} does not exist (CLOVER_CLOVISOR_PLUGIN_DIR)")
    for directory in (root, *root.parents):
        reason = _unsafe(directory, os.stat(directory), sticky_ok=directory != root)
        if reason:
            raise refuse(f"the plugin directory is not safe: {reason}")
    for directory in real.parents:
        if directory == root:
            break
        reason = _unsafe(directory, os.stat(directory))
        if reason:
            raise refuse(reason)
    if not real.is_file():  # before opening: a FIFO would block the open
        raise PluginError(f"plugin for {protocol!r}: {path} is not a file")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        reason = _unsafe(real, os.fstat(fd))
        if reason:
            raise refuse(reason)
        with os.fdopen(os.dup(fd), "rb") as file:
            return real, file.read()
    finally:
        os.close(fd)


def load_parser(protocol: str, path: str, plugin_dir: Path) -> Parser:
    """Run ``path`` afresh (a reload picks up a changed file) and return its ``Parser()``;
    PluginRefused for a path read_trusted refuses."""
    file, source = read_trusted(protocol, path, plugin_dir)
    digest = hashlib.sha1(source).hexdigest()[:12]
    module = types.ModuleType(f"clovisor_plugin_{protocol}_{digest}")
    module.__file__ = str(file)
    try:
        exec(compile(source, str(file), "exec"), module.__dict__)  # a trusted plugin, by design
    except Exception as exc:
        raise PluginError(f"plugin for {protocol!r}: importing {path} failed: {exc!r}") from exc
    cls = getattr(module, "Parser", None)
    if cls is None or not callable(getattr(cls, "parse", None)):
        raise PluginError(f"plugin for {protocol!r}: {path} defines no class Parser with a parse() method")
    parser: Parser = cls() if isinstance(cls, type) else cls
    return parser


@dataclass
class PluginSet:
    """The loaded plugins by protocol, and the per-session buffers of their pending bytes."""

    plugin_dir: Path = field(default_factory=lambda: Config().clovisor_plugin_dir)
    parsers: dict[str, Parser] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    refused: int = 0  # paths refused by read_trusted, each time one was configured or reloaded
    _buffers: dict[tuple[object, bool], bytes] = field(default_factory=dict)

    @property
    def protocols(self) -> frozenset[str]:
        return frozenset(self.parsers)

    def sync(self, proto_cfg: Mapping[str, str], force: frozenset[str] = frozenset()) -> list[str]:
        """Load plugins newly configured (or named in ``force``), drop unconfigured ones.
        Returns the protocols (re)loaded."""
        loaded = []
        for protocol in list(self.parsers):
            if protocol not in proto_cfg:
                del self.parsers[protocol]
                self.paths.pop(protocol, None)
                log.info("plugin for %s removed", protocol)
        for protocol, path in proto_cfg.items():
            if protocol in self.parsers and self.paths.get(protocol) == path and protocol not in force:
                continue
            if protocol in self.errors and self.paths.get(protocol) == path and protocol not in force:
                continue
            self.paths[protocol] = path
            try:
                self.parsers[protocol] = load_parser(protocol, path, self.plugin_dir)
                self.errors.pop(protocol, None)
                loaded.append(protocol)
                log.info("plugin for %s loaded from %s", protocol, path)
            except PluginError as exc:
                self.errors[protocol] = str(exc)
                self.parsers.pop(protocol, None)
                self.refused += isinstance(exc, PluginRefused)
                log.error("%s", exc)
        return loaded

    def feed(self, protocol: str, session: object, session_key: str, is_req: bool, data: bytes) -> dict[str, str]:
        """Give a plugin the next bytes of a session direction; returns the fields it found."""
        parser = self.parsers.get(protocol)
        if parser is None:
            return {}
        buf_key = (session, is_req)
        buf = self._buffers.pop(buf_key, b"") + data
        try:
            rest, fields = parser.parse(session_key, is_req, buf)
        except Exception as exc:  # a plugin's bug must not stop tracing
            self.failures += 1
            log.warning("plugin %s failed on %s: %r", protocol, session_key, exc)
            return {}
        if fields is None:
            if len(buf) <= MAX_BUFFER:
                self._buffers[buf_key] = buf
            return {}
        if rest:
            self._buffers[buf_key] = bytes(rest[:MAX_BUFFER])
        return {str(k): str(v) for k, v in fields.items()}

    def forget(self, session: object) -> None:
        self._buffers.pop((session, True), None)
        self._buffers.pop((session, False), None)
