"""A backing service in a container: ``python -m stack.images.entry <part>``.

The same part as ``cloverctl local up <part>`` (``stack/parts.py``): its configuration is
rendered from ``stack/conf`` with the ``CLOVER_*`` settings of the environment into
``$CLOVER_STATE_DIR/<part>/``, then this process becomes the service (exec), so the service
gets the container's signals itself. It listens on every interface and gives its clients and
peers the pod's address: ``CLOVER_POD_IP`` (or ``POD_IP``, from the downward API), else the
address the container's host name resolves to.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping

from clover.config import Config, ConfigError
from stack.parts import Addresses, Launch, Part, PartDirs, infrastructure, zipkin_part

EVERY_INTERFACE = "0.0.0.0"


def own_address(env: Mapping[str, str]) -> str:
    """The address clients and peers reach this container at."""
    named = env.get("CLOVER_POD_IP") or env.get("POD_IP")
    return named or socket.gethostbyname(socket.gethostname())


def parts(cfg: Config, at: Addresses) -> dict[str, Part]:
    return {**infrastructure(cfg, at), "zipkin": zipkin_part(cfg, at)}


def prepare(name: str, env: Mapping[str, str]) -> Launch:
    """Render the part's configuration and return what to run (the working directory is made)."""
    cfg = Config.from_env(env)
    found = parts(cfg, Addresses(EVERY_INTERFACE, own_address(env)))
    if name not in found:
        raise KeyError(f"unknown part {name!r} (one of {', '.join(found)})")
    part = found[name]
    dirs = PartDirs(cfg.state_dir / (part.home or part.name))
    dirs.root.mkdir(parents=True, exist_ok=True)
    return part.prepare(dirs)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m stack.images.entry <part>", file=sys.stderr)
        return 2
    try:
        launch = prepare(args[0], os.environ)
    except (KeyError, ConfigError, RuntimeError, OSError) as exc:
        print(f"stack.images.entry: {args[0]}: {exc}", file=sys.stderr)
        return 1
    print(f"stack.images.entry: {args[0]}: {' '.join(launch.argv)}", file=sys.stderr, flush=True)
    os.execvpe(launch.argv[0], launch.argv, {**os.environ, **launch.env})


if __name__ == "__main__":
    sys.exit(main())
