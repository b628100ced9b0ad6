"""``python -m controller.server``: serve the REST API and the dashboard until SIGTERM/SIGINT.

One process (waitress, a pool of threads). It listens where ``CLOVER_CONTROLLER_URL`` points
(loopback by default); ``--listen 0.0.0.0:8000`` opens it to the network, which without
``CLOVER_API_TOKEN`` leaves every mutating route open, so it says so.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from urllib.parse import urlsplit

from waitress import create_server

from clover.config import Config, ConfigError, is_loopback_host
from clover.logs import setup_logging
from controller.api import services_of
from controller.app import DASHBOARD_PATH, create_app

log = logging.getLogger("controller")


def listen_address(cfg: Config, listen: str | None) -> tuple[str, int]:
    """(host, port) from ``--listen host:port`` or the controller URL."""
    if listen:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--listen {listen!r} must look like host:port")
        return host.strip("[]") or "127.0.0.1", int(port)
    parts = urlsplit(cfg.controller_url)
    return parts.hostname or "127.0.0.1", cfg.controller_port


def serve(cfg: Config, listen: str | None = None, threads: int = 8) -> None:
    host, port = listen_address(cfg, listen)
    app = create_app(cfg)
    # waitress refuses a larger body itself (413) before reading it, as the app does for other servers.
    server = create_server(app, host=host, port=port, threads=threads, ident="clover-controller",
                           max_request_body_size=cfg.api_max_body_bytes)  # fmt: skip

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not is_loopback_host(host) and not cfg.api_token:
        log.warning("listening on %s without CLOVER_API_TOKEN: anyone who reaches it can change state", host)
    log.info("clover-controller listening on http://%s:%d (dashboard: http://%s:%d%s)",
             host, port, host, port, DASHBOARD_PATH)  # fmt: skip
    try:
        server.run()
    finally:
        server.close()
        services_of(app).close()
        log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="clover-controller: REST API and dashboard")
    parser.add_argument("--listen", help="host:port to listen on (default: the host and port of CLOVER_CONTROLLER_URL)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        serve(Config.from_env(), args.listen, args.threads)
    except ConfigError as exc:
        sys.exit(f"clover-controller: {exc}")
    except OSError as exc:
        sys.exit(f"clover-controller: cannot listen: {exc}")


if __name__ == "__main__":
    main()
