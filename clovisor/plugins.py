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
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

MAX_BUFFER = 64 * 1024  # bytes kept per session direction while a plugin asks for more


class Parser(Protocol):
    def parse(self, session_key: str, is_req: bool, data: bytes) -> tuple[bytes, dict[str, str] | None]: ...


class PluginError(Exception):
    """A plugin could not be loaded; the message says which file and why."""


def load_parser(protocol: str, path: str) -> Parser:
    """Import ``path`` afresh (a reload picks up a changed file) and return its ``Parser()``."""
    file = Path(path)
    if not file.is_file():
        raise PluginError(f"plugin for {protocol!r}: {path} is not a file")
    digest = hashlib.sha1(file.read_bytes()).hexdigest()[:12]
    name = f"clovisor_plugin_{protocol}_{digest}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin for {protocol!r}: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"plugin for {protocol!r}: importing {path} failed: {exc!r}") from exc
    cls = getattr(module, "Parser", None)
    if cls is None or not callable(getattr(cls, "parse", None)):
        raise PluginError(f"plugin for {protocol!r}: {path} defines no class Parser with a parse() method")
    parser = cls() if isinstance(cls, type) else cls
    return parser  # type: ignore[no-any-return]


@dataclass
class PluginSet:
    """The loaded plugins by protocol, and the per-session buffers of their pending bytes."""

    parsers: dict[str, Parser] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    failures: int = 0
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
                self.parsers[protocol] = load_parser(protocol, path)
                self.errors.pop(protocol, None)
                loaded.append(protocol)
                log.info("plugin for %s loaded from %s", protocol, path)
            except PluginError as exc:
                self.errors[protocol] = str(exc)
                self.parsers.pop(protocol, None)
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
