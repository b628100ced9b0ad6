"""clover-server1..5: a small site with uploads, and per-path sizes and latencies.

The pod's paths live under its own file system (``sdc.topology.rootfs``), so the original's
``site_root: /var/www/html`` works unchanged. What a request gets, in order:

1. ``POST <upload_path_config>``: the files are stored as ``<site_root><upload_path_config>/
   0000000001``... (nginx-upload-module's naming), the form fields ``<field>.name``,
   ``.content_type``, ``.path``, ``.server`` are passed to the controller's ``/upload`` as the
   original did (when it answers; else the server answers itself), reply "Uploaded file(s)
   successfully". ``POST <upload_path_test>`` stores the same way and answers 204.
2. ``/api/echo``: the request as the server saw it, as JSON (method, path, headers, client).
3. The longest matching location (``= /path`` matches exactly): with ``response_size``,
   ``latency_ms`` or ``status`` set, a synthetic answer of that size after that delay;
   ``return <code> [text]``; or ``try_files $uri @default1``: the file, else the site index.
4. A file under the site root (a directory serves its ``index.html``), ``/`` the site index,
   else 404.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from protos import nginx_pb2
from sdc import site, topology
from sdc.checks import path_field, port_field
from sdc.forward import Inbound, error_response
from sdc.nginx_control import MODIFIED, HttpService
from sdc.runtime import ConfigRefused, HttpListener, Runtime

log = logging.getLogger(__name__)

MAX_RESPONSE_SIZE = 64 * 1024 * 1024
MAX_LATENCY_MS = 30_000.0
FILLER = b"clover sample response payload 0123456789abcdefghijklmnopqrstuvwxyz\n"
UPLOADED = "Uploaded file(s) successfully"
CLIENT_HEADER = "x-clover-client"  # the client's "ip:port" from nginx in front of the site; not echoed
FILE_CACHE_SECONDS = 1.0
FILE_CACHE_LIMIT = 1024 * 1024
FILE_CACHE_ENTRIES = 256


@dataclass(frozen=True)
class Location:
    uri_match: str
    directive: str = ""
    path: str = ""
    response_size: int = 0
    latency_ms: float = 0.0
    status: int = 0

    @property
    def exact(self) -> bool:
        return self.uri_match.startswith("=")

    @property
    def prefix(self) -> str:
        return self.uri_match[1:].strip() if self.exact else self.uri_match

    @property
    def synthetic(self) -> bool:
        return bool(self.response_size or self.latency_ms or self.status)

    def matches(self, path: str) -> bool:
        return path == self.prefix if self.exact else path.startswith(self.prefix)

    def to_proto(self) -> nginx_pb2.Location:
        return nginx_pb2.Location(
            uri_match=self.uri_match, directive=self.directive, path=self.path,
            response_size=self.response_size, latency_ms=self.latency_ms, status=self.status,
        )  # fmt: skip


@dataclass(frozen=True)
class CachedFile:
    """A small file as last read; reused for FILE_CACHE_SECONDS under the same configuration."""

    data: bytes
    content_type: str
    checked: float
    config: object


@dataclass
class ServerConfig:
    server_port: int = topology.HTTP_PORT
    server_name: str = "clover-server"
    site_root: str = "/var/www/html"
    site_index: str = "index.html"
    upload_path_config: str = "/upload"
    upload_path_test: str = "/upload_test"
    locations: list[Location] = field(default_factory=lambda: [Location("/test", "try_files $uri @default1", "/test")])
    files: list[tuple[str, str]] = field(default_factory=list)


def parse_directive(directive: str, where: str) -> tuple[str, int, str]:
    """("", 0, ""), ("try_files", 0, ""), or ("return", code, text)."""
    words = directive.replace(";", " ").split()
    if not words:
        return "", 0, ""
    if words[0] == "try_files" and len(words) >= 2 and all(w.startswith(("$uri", "@", "/")) for w in words[1:]):
        return "try_files", 0, ""
    if words[0] == "return" and len(words) >= 2 and words[1].isdigit() and 100 <= int(words[1]) <= 599:
        return "return", int(words[1]), " ".join(words[2:]).strip("\"'")
    raise ConfigRefused(
        f"{where} {directive!r} is not supported; use 'try_files $uri @default1' or 'return <code> [text]'"
    )


class Site:
    """A server's site and configuration: the answers to requests and the checks and changes of
    ModifyServer, whatever listens (the pod's own HTTP listener, or nginx in front of it)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.config = ServerConfig()
        self._bodies: dict[int, bytes] = {}
        self._files: dict[str, CachedFile] = {}
        self._upload_seq = 0
        self._client: aiohttp.ClientSession | None = None

    # -- paths ---------------------------------------------------------------------------------

    def host_path(self, pod_path: str, where: str = "path") -> Path:
        """A path of the pod's file system on the host; refused when it escapes the pod."""
        root = self.runtime.rootfs.resolve()
        path = (root / pod_path.lstrip("/")).resolve()
        if path != root and not path.is_relative_to(root):
            raise ConfigRefused(f"{where} {pod_path!r} leaves the pod's file system")
        return path

    async def start(self) -> None:
        await asyncio.to_thread(self._write_site, self.config)

    def _write_site(self, config: ServerConfig) -> None:
        root = self.host_path(config.site_root)
        site.write_site(root, config.site_index, config.upload_path_config, config.upload_path_test, self.runtime.name)
        for location in config.locations:
            if location.path:
                self.host_path(config.site_root.rstrip("/") + "/" + location.path.lstrip("/")).mkdir(
                    parents=True, exist_ok=True
                )

    # -- requests ------------------------------------------------------------------------------

    async def answer(self, request: web.BaseRequest, client: str) -> web.StreamResponse:
        """The answer to ``request`` from ``client`` ("ip:port")."""
        try:
            return await self._answer(request, client)
        except ConfigRefused:
            return error_response(404, "not found", self.runtime.name)

    async def _answer(self, request: web.BaseRequest, client: str) -> web.StreamResponse:
        config = self.config
        path = request.path
        if request.method == "POST" and path in (config.upload_path_config, config.upload_path_test):
            return await self._upload(request, config, path == config.upload_path_test)
        if path == "/api/echo":
            return self._echo(request, client)
        location = self.location(config, path)
        if location is not None and location.synthetic:
            if location.latency_ms:
                await asyncio.sleep(location.latency_ms / 1000.0)
            return web.Response(
                status=location.status or 200, body=self._body(location.response_size), content_type="text/plain"
            )
        kind, code, text = parse_directive(location.directive, "directive") if location else ("", 0, "")
        if kind == "return":
            return web.Response(status=code, text=text + "\n" if text else "")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="405 Method Not Allowed\n", headers={"Allow": "GET, HEAD"})
        cached = self._files.get(path)
        if cached is not None and time.monotonic() - cached.checked < FILE_CACHE_SECONDS and cached.config is config:
            return web.Response(body=cached.data, content_type=cached.content_type)
        root = self.host_path(config.site_root)
        target = self.host_path(config.site_root.rstrip("/") + path)
        if target.is_dir():
            target = target / "index.html"
        if path == "/" or (not target.is_file() and kind == "try_files"):
            target = root / config.site_index
        if not target.is_file():
            self._files.pop(path, None)
            return error_response(404, f"{path} was not found on this server", self.runtime.name)
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.stat().st_size > FILE_CACHE_LIMIT:
            return web.FileResponse(target, headers={"Content-Type": content_type})
        data = target.read_bytes()  # small, and in the page cache: cheaper than a thread hop
        if len(self._files) < FILE_CACHE_ENTRIES:
            self._files[path] = CachedFile(data, content_type, time.monotonic(), config)
        return web.Response(body=data, content_type=content_type)

    @staticmethod
    def location(config: ServerConfig, path: str) -> Location | None:
        exact = [loc for loc in config.locations if loc.exact and loc.matches(path)]
        if exact:
            return exact[0]
        prefixed = [loc for loc in config.locations if not loc.exact and loc.matches(path)]
        return max(prefixed, key=lambda loc: len(loc.prefix)) if prefixed else None

    def _body(self, size: int) -> bytes:
        body = self._bodies.get(size)
        if body is None:
            body = (FILLER * (size // len(FILLER) + 1))[:size]
            if len(self._bodies) < 64:
                self._bodies[size] = body
        return body

    def _echo(self, request: web.BaseRequest, client: str) -> web.Response:
        body = {
            "server": self.runtime.name,
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "client": client,
            "headers": [[k, v] for k, v in request.headers.items() if k.lower() != CLIENT_HEADER],
        }
        return web.Response(text=json.dumps(body, indent=1), content_type="application/json")

    async def _upload(self, request: web.BaseRequest, config: ServerConfig, test: bool) -> web.Response:
        store = config.upload_path_test if test else config.upload_path_config
        directory = self.host_path(config.site_root.rstrip("/") + store)
        directory.mkdir(parents=True, exist_ok=True)
        if not request.content_type.startswith("multipart/"):
            return web.Response(status=400, text="400 Bad Request: expected a multipart/form-data upload\n")
        form: list[tuple[str, str]] = []
        stored = 0
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            name = part.name or "file"
            if part.filename is None:
                form.append((name, (await part.read(decode=True)).decode(errors="replace")))
                continue
            if not part.filename:
                await part.release()
                continue
            self._upload_seq = max(self._upload_seq, _highest_upload(directory)) + 1
            target = directory / f"{self._upload_seq:010d}"
            size = 0
            with open(target, "wb") as out:
                while chunk := await part.read_chunk(256 * 1024):
                    out.write(chunk)
                    size += len(chunk)
            stored += 1
            pod_path = f"{config.site_root.rstrip('/')}{store}/{target.name}"
            form += [
                (f"{name}.name", part.filename),
                (f"{name}.content_type", part.headers.get("Content-Type", "application/octet-stream")),
                (f"{name}.path", pod_path),
                (f"{name}.server", self.runtime.name),
                (f"{name}.size", str(size)),
            ]
            self.runtime.registry.inc("clover_sdc_server_uploaded_bytes_total", size, "Bytes stored by uploads")
        self.runtime.registry.inc("clover_sdc_server_uploaded_files_total", stored, "Files stored by uploads")
        if test:
            return web.Response(status=204)
        return await self._notify_controller(form)

    async def _notify_controller(self, form: list[tuple[str, str]]) -> web.Response:
        """Pass the upload's fields to the controller's /upload, as nginx's upload_pass did."""
        url = f"{self.runtime.cfg.controller_url}/upload"
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        try:
            token = self.runtime.cfg.api_token
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with self._client.post(url, data=form, headers=headers) as answer:
                text = await answer.text()
                if answer.status < 300:
                    return web.Response(status=answer.status, text=text)
                log.warning("the controller answered %s to %s: %s", answer.status, url, text[:200])
                return web.Response(text=UPLOADED, headers={"X-Clover-Controller": f"answered {answer.status}"})
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("upload stored; the controller at %s is not reachable (%s)", url, exc)
        return web.Response(text=UPLOADED, headers={"X-Clover-Controller": "unreachable"})

    # -- control -------------------------------------------------------------------------------

    def checked(self, request: nginx_pb2.ConfigServer) -> tuple[ServerConfig, list[tuple[Path, Path]]]:
        """The configuration ``request`` asks for and the file moves it needs; raises ConfigRefused."""
        current = self.config
        port = port_field(request.server_port, "server_port", current.server_port)
        site_root = path_field(request.site_root, "site_root", current.site_root)
        self.host_path(site_root, "site_root")
        index = request.site_index.strip() or current.site_index
        if "/" in index or index in (".", ".."):
            raise ConfigRefused(f"site_index {request.site_index!r} must be a file name")
        upload_config = path_field(request.upload_path_config, "upload_path_config", current.upload_path_config)
        upload_test = path_field(request.upload_path_test, "upload_path_test", current.upload_path_test)
        locations = []
        for i, loc in enumerate(request.locations):
            where = f"locations[{i}]"
            uri = loc.uri_match.strip()
            bare = uri[1:].strip() if uri.startswith("=") else uri
            if not bare.startswith("/"):
                raise ConfigRefused(f"{where}.uri_match {loc.uri_match!r} must be a path starting with '/'")
            parse_directive(loc.directive, f"{where}.directive")
            if loc.path:
                self.host_path(site_root.rstrip("/") + "/" + loc.path.lstrip("/"), f"{where}.path")
            if not 0 <= loc.response_size <= MAX_RESPONSE_SIZE:
                raise ConfigRefused(f"{where}.response_size {loc.response_size} must be within 0..{MAX_RESPONSE_SIZE}")
            if not 0 <= loc.latency_ms <= MAX_LATENCY_MS:
                raise ConfigRefused(f"{where}.latency_ms {loc.latency_ms} must be within 0..{MAX_LATENCY_MS:.0f}")
            if loc.status and not 100 <= loc.status <= 599:
                raise ConfigRefused(f"{where}.status {loc.status} must be an HTTP status (100..599)")
            locations.append(Location(uri, loc.directive.strip(), loc.path.strip(), loc.response_size,
                                      loc.latency_ms, loc.status))  # fmt: skip
        moves = []
        files = []
        for i, f in enumerate(request.files):
            src = self.host_path(f.src_file, f"files[{i}].src_file")
            dest = self.host_path(f.dest_file, f"files[{i}].dest_file")
            if not src.is_file():
                raise ConfigRefused(f"files[{i}].src_file {f.src_file!r} does not exist on {self.runtime.name}")
            if dest.is_dir():
                raise ConfigRefused(f"files[{i}].dest_file {f.dest_file!r} is a directory")
            moves.append((src, dest))
            files.append((f.src_file, f.dest_file))
        new = ServerConfig(
            server_port=port,
            server_name=request.server_name or current.server_name,
            site_root=site_root,
            site_index=index,
            upload_path_config=upload_config,
            upload_path_test=upload_test,
            locations=locations,
            files=files,
        )
        return new, moves

    async def replace(
        self, new: ServerConfig, moves: list[tuple[Path, Path]], serve: Callable[[ServerConfig], Awaitable[None]]
    ) -> None:
        """Move the files, write the site and ``serve`` it (raising OSError or ConfigRefused when it
        cannot): all of it happens, or none of it."""
        current = self.config
        done = await asyncio.to_thread(_move_all, moves)
        try:
            await asyncio.to_thread(self._write_site, new)
            await serve(new)
        except (OSError, ConfigRefused) as exc:
            await asyncio.to_thread(_undo_moves, done)
            await asyncio.to_thread(self._write_site, current)
            if isinstance(exc, ConfigRefused):
                raise
            raise ConfigRefused(
                f"server_port {new.server_port} or site_root {new.site_root}: {exc.strerror or exc}"
            ) from None
        self.config = new

    def dump(self, kind: str) -> nginx_pb2.ConfigDump:
        c = self.config
        server = nginx_pb2.ConfigServer(
            server_port=str(c.server_port),
            server_name=c.server_name,
            site_root=c.site_root,
            site_index=c.site_index,
            upload_path_config=c.upload_path_config,
            upload_path_test=c.upload_path_test,
            locations=[loc.to_proto() for loc in c.locations],
            files=[nginx_pb2.File(src_file=s, dest_file=d) for s, d in c.files],
        )
        return nginx_pb2.ConfigDump(kind=kind, pod=self.runtime.name, server=server)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class Server(HttpService):
    """A clover-server answering HTTP with its own listener."""

    kind = "server"
    listener: HttpListener

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.site = Site(runtime)
        self.inbound_stats = runtime.inbound(topology.HTTP_PORT)
        self.listener = HttpListener(runtime, self.handle, self.inbound_stats)
        runtime.refreshers.append(self.listener.server.refresh)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        inbound = Inbound.of(self.runtime, request, self.inbound_stats, self.listener.port)
        response = await self.site.answer(request, f"{inbound.client_ip}:{inbound.client_port}")
        response.headers["X-Served-By"] = self.runtime.name
        return inbound.done(response)

    async def start(self) -> None:
        await self.site.start()

    async def modify_server(self, request: nginx_pb2.ConfigServer) -> str:
        new, moves = self.site.checked(request)
        await self.site.replace(new, moves, self._listen)
        return MODIFIED

    async def _listen(self, config: ServerConfig) -> None:
        await self.listener.rebind(config.server_port)

    def dump(self) -> nginx_pb2.ConfigDump:
        return self.site.dump(self.kind)

    async def stop(self) -> None:
        await self.site.close()


def _highest_upload(directory: Path) -> int:
    numbers = [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
    return max(numbers, default=0)


def _move_all(moves: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Move every file, or none: a failure puts back the ones already moved."""
    done: list[tuple[Path, Path]] = []
    for src, dest in moves:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)
        except OSError as exc:
            _undo_moves(done)
            raise ConfigRefused(f"files: moving {src.name} failed: {exc.strerror or exc}") from None
        done.append((src, dest))
    return done


def _undo_moves(done: list[tuple[Path, Path]]) -> None:
    for src, dest in reversed(done):
        shutil.move(dest, src)
