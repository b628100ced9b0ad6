"""A controller whose backing services are all on a closed port, for unit tests: Redis, the
collector and the validation service answer 503, and its pod registry is an empty folder."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Flask

from clover.config import Config
from controller.app import create_app


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline_config(state_dir: Path, **changes: Any) -> Config:
    port = closed_port()
    return replace(
        Config(),
        redis_url=f"redis://127.0.0.1:{port}/0",
        collector_grpc=f"127.0.0.1:{port}",
        validation_grpc=f"127.0.0.1:{port}",
        state_dir=state_dir,
        **changes,
    )


def offline_app(state_dir: Path, **changes: Any) -> Flask:
    return create_app(offline_config(state_dir, **changes), dashboard=False)
