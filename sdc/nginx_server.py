"""clover-server1..5 with Debian's nginx as their data plane (CLOVER_SDC_DATAPLANE=nginx), as the
original ran them.

nginx serves the site's files (the index for ``/``, a directory's ``index.html``, a location's
``try_files``) and a location's ``return <code> [text]`` itself. Everything else goes to the pod's
Python site (``sdc.server.Site``) on a unix socket, which answers as the Python data plane does:
uploads, ``/api/echo``, a location's synthetic size, latency or status, and every request nginx
cannot answer from a file (not found, a symlink, a method other than GET or HEAD on an upload
path). ModifyServer is checked as for the Python server, the site written, then the configuration
rendered, tested with ``nginx -t`` and applied with a reload, so no request in flight is dropped.
Each request's log line gives the pod's access-log entry, its inbound statistics and, when
sampled, its SERVER span.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from aiohttp import web

from protos import nginx_pb2
from sdc.nginx_control import MODIFIED
from sdc.nginx_plane import NginxService, Upstream, log_format, preamble, socket_dir, status_server
from sdc.runtime import Runtime
from sdc.server import CLIENT_HEADER, Location, ServerConfig, Site, parse_directive
from sdc.tracing import finish

SITE_SOCKET = "site.sock"
NOT_STATIC = "    map $request_method $clover_not_static { GET 0; HEAD 0; default 1; }\n"


def quoted(text: str) -> str:
    """``text`` as one nginx configuration token."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def answer_headers(pod: str, indent: str) -> str:
    """The headers every answer of the pod carries (repeated where a block adds its own)."""
    return f"""{indent}add_header X-Served-By {quoted(pod)} always;
{indent}add_header traceresponse "00-$clover_trace_id-$clover_server_span-$clover_sampled" always;
"""


def from_files(pod: str, files: str) -> str:
    """A location answering GET and HEAD from the first of ``files`` found, else from the site."""
    return f"""            if ($clover_not_static) {{
{answer_headers(pod, " " * 16)}                add_header Allow "GET, HEAD" always;
                return 405 "405 Method Not Allowed\\n";
            }}
            error_page 403 = @site;
            try_files {files} @site;
"""


def site_upstream(home: Path) -> str:
    return f"""    upstream clover_site {{
        server unix:{socket_dir(home) / SITE_SOCKET};
        keepalive 16;
        keepalive_requests 1000000;
    }}
"""


def to_site() -> str:
    """A location whose requests the pod's Python site answers."""
    return """            proxy_pass http://clover_site;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Clover-Client "$remote_addr:$remote_port";
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 60s;
"""


def from_files_or_index(location: Location | None) -> bool:
    """Whether a request ``location`` takes (None: none) is answered with a file or the index."""
    if location is None:
        return True
    return not location.synthetic and parse_directive(location.directive, "directive")[0] != "return"


def location_body(pod: str, config: ServerConfig, location: Location) -> str:
    """What a configured location does, as the Python server's rules say."""
    if location.synthetic:
        return to_site()
    kind, code, text = parse_directive(location.directive, "directive")
    if kind == "return":
        if "$" in text:  # nginx would read a variable
            return to_site()
        body = text + "\n" if text else ""
        return f"            return {code} {quoted(body)};\n"
    index = config.site_index
    if kind == "try_files" and "$" not in index:
        return from_files(pod, f"$uri $uri/index.html {quoted('/' + index)}")
    if kind == "try_files":
        return to_site()
    return from_files(pod, "$uri $uri/index.html")


def render(pod: str, home: Path, ip: str, root: Path, config: ServerConfig, ratio: float) -> str:
    """The nginx configuration of server pod ``pod``; ``root`` is the site root on this machine."""
    locations: dict[str, str] = {}
    for exact in ("/api/echo", config.upload_path_config, config.upload_path_test):
        locations[f"= {quoted(exact)}"] = to_site()
    for location in config.locations:
        if location.exact and location.prefix == "/" and from_files_or_index(location):
            continue  # "/" answered with the site index, below
        key = f"= {quoted(location.prefix)}" if location.exact else quoted(location.prefix)
        locations.setdefault(key, location_body(pod, config, location))  # the first of equal ones wins
    if from_files_or_index(Site.location(config, "/")):
        index = config.site_index
        locations.setdefault('= "/"', from_files(pod, quoted("/" + index)) if "$" not in index else to_site())
    locations.setdefault('"/"', from_files(pod, "$uri $uri/index.html"))
    blocks = "".join(f"        location {key} {{\n{body}        }}\n" for key, body in locations.items())
    head = preamble(pod, home, ratio, log_format("clover") + NOT_STATIC) + site_upstream(home)
    return f"""{head}    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {ip}:{config.server_port} backlog=1024;
        server_name {quoted(config.server_name)};
        root {quoted(str(root))};
        disable_symlinks on from=$document_root;
        access_log {home}/access.fifo clover;
{answer_headers(pod, " " * 8)}{blocks}        location @site {{
{to_site()}        }}
    }}
{status_server(home)}}}
"""


class NginxServer(NginxService[ServerConfig]):
    kind = "server"

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.site = Site(runtime)
        self.config = self.site.config
        self._site_server = web.Server(self._answer, access_log=None, keepalive_timeout=75)
        self._site_listener: asyncio.AbstractServer | None = None

    def groups(self, config: ServerConfig) -> list[tuple[list[str], bool]]:
        return []

    def with_port(self, config: ServerConfig, port: int) -> ServerConfig:
        return dataclasses.replace(config, server_port=port)

    def render(self, config: ServerConfig, resolved: list[list[Upstream]]) -> str:
        rt = self.runtime
        root = self.site.host_path(config.site_root)
        return render(rt.name, self.listener.home, rt.ip, root, config, rt.cfg.sdc_trace_ratio)

    async def first_render(self, port: int) -> str:
        await self.site.start()
        path = socket_dir(self.listener.home) / SITE_SOCKET
        self._site_listener = await asyncio.get_running_loop().create_unix_server(self._site_server, str(path))
        text = await super().first_render(port)
        self.site.config = self.config
        return text

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self.site.answer(request, request.headers.get(CLIENT_HEADER, ""))

    async def modify_server(self, request: nginx_pb2.ConfigServer) -> str:
        new, moves = self.site.checked(request)
        self.rebind_check(new.server_port)
        await self.site.replace(new, moves, self.switch)
        self.port_applied(new.server_port)
        return MODIFIED

    def dump(self) -> nginx_pb2.ConfigDump:
        return self.site.dump(self.kind)

    def account(self, entry: dict[str, str], read_at: float) -> None:
        """One request nginx answered (its line read at ``read_at``): stats, the SERVER span, the access-log entry."""
        end, took, status, size = self.request_done(entry, read_at)
        if entry["sampled"] == "01":
            tags = self.tags(entry, self.inbound_stats.cluster)
            server = self.server_span(entry, tags, int((end - took) * 1e9))
            finish(server, status, size, end_time=int(end * 1e9))

    async def stop(self) -> None:
        await super().stop()
        if self._site_listener is not None:
            self._site_listener.close()
        await self._site_server.shutdown(1.0)
        await self.site.close()
