"""Where the logs go: the store's address, the shipper's, retention and the stream's name."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from clover.config import LOOPBACK, ConfigError, state_dir_of

STREAM_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
ACCESS_LOG_TARGETS = ("file", "stdout")


@dataclass(frozen=True)
class LogSettings:
    """``CLOVER_LOG_*`` and ``CLOVER_ACCESS_LOG_*``: the store (VictoriaLogs) and shipper of the logs."""

    store_url: str = f"http://{LOOPBACK}:9428"
    shipper_metrics_port: int = 8889
    # Entries older than this are dropped by the store (VictoriaLogs' -retentionPeriod).
    retention_days: int = 7
    # Every entry carries ``stream``: the name its queries select (one store, several stacks).
    stream: str = "clover"
    # Each chain pod writes <access_log_dir>/<pod>.log and rotates it past access_log_max_bytes.
    access_log_dir: Path = Path(".clover/access-logs")
    access_log_max_bytes: int = 16 * 1024 * 1024
    # Rotated generations a pod keeps (older ones are removed: the shipper must have read them).
    access_log_keep: int = 3
    # Where the pods write their entries: their own file, or (in the cluster) standard output,
    # which the container runtime keeps under /var/log/pods for the shipper.
    access_log: str = "file"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LogSettings:
        d = cls()
        store_url = env.get("CLOVER_LOG_STORE_URL", d.store_url).rstrip("/")
        parts = urlsplit(store_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"CLOVER_LOG_STORE_URL={store_url!r} is not an http(s) URL with a host")
        stream = env.get("CLOVER_LOG_STREAM", d.stream)
        if not STREAM_NAME.fullmatch(stream):
            raise ConfigError(
                f"CLOVER_LOG_STREAM={stream!r} must be 1-63 of a-z 0-9 _ . - starting with a letter or digit"
            )
        directory = env.get("CLOVER_ACCESS_LOG_DIR")
        target = env.get("CLOVER_ACCESS_LOG", d.access_log)
        if target not in ACCESS_LOG_TARGETS:
            raise ConfigError(f"CLOVER_ACCESS_LOG={target!r} must be one of {', '.join(ACCESS_LOG_TARGETS)}")
        return cls(
            store_url=store_url,
            shipper_metrics_port=_number(env, "CLOVER_LOG_SHIPPER_METRICS_PORT", d.shipper_metrics_port, 65535),
            retention_days=_number(env, "CLOVER_LOG_RETENTION_DAYS", d.retention_days, 36500),
            stream=stream,
            access_log_dir=Path(directory).resolve() if directory else state_dir_of(env) / "access-logs",
            access_log_max_bytes=_number(env, "CLOVER_ACCESS_LOG_MAX_BYTES", d.access_log_max_bytes, 2**40),
            access_log_keep=_number(env, "CLOVER_ACCESS_LOG_KEEP", d.access_log_keep, 100000),
            access_log=target,
        )

    @property
    def store_port(self) -> int:
        port = urlsplit(self.store_url).port
        return port if port is not None else (443 if self.store_url.startswith("https") else 80)


def _number(env: Mapping[str, str], name: str, default: int, highest: int) -> int:
    value = env.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None
    if not 1 <= number <= highest:
        raise ConfigError(f"{name}={value!r} must be between 1 and {highest}")
    return number
