"""Visibility commands: ``init visibility``, ``start visibility [-f]``, ``stop visibility``.

They drive the collector's gRPC control service (``CLOVER_COLLECTOR_GRPC``) through the same
client functions the controller relays with.
"""

from __future__ import annotations

from typing import Any

import click
import yaml

from clover.config import Config, ConfigError
from collector import client


def _collector() -> str:
    try:
        return Config.from_env().collector_grpc
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _port(value: Any, field: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise click.ClickException(f"{field} {value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise click.ClickException(f"{field} {port} is outside 1..65535")
    return port


def collector_settings(path: str | None) -> dict[str, Any]:
    """The StartCollector fields from a start_visibility.yaml (facts §7); defaults for the rest."""
    if path is None:
        return {}
    try:
        with open(path) as f:
            body = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    if not isinstance(body, dict):
        raise click.ClickException(f"{path}: expected a mapping of settings")
    settings: dict[str, Any] = {}
    if "sample_interval" in body:
        try:
            settings["sinterval"] = float(body["sample_interval"])
        except (TypeError, ValueError):
            raise click.ClickException(f"sample_interval {body['sample_interval']!r} is not a number") from None
    for host, port in (("t_host", "t_port"), ("m_host", "m_port")):
        if (host in body) != (port in body):
            raise click.ClickException(f"{host} and {port} must be given together")
        if host in body:
            settings[host] = str(body[host])
            settings[port] = _port(body[port], port)
    if "t_backend" in body:
        settings["t_backend"] = str(body["t_backend"])
    unknown = set(body) - {"sample_interval", "t_host", "t_port", "m_host", "m_port", "t_backend"}
    if unknown:
        raise click.ClickException(f"{path}: unknown field {sorted(unknown)[0]!r}")
    return settings


def _run(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        message = call(*args, **kwargs)
    except client.CollectorUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(message)
    if message.startswith("Failed"):
        raise SystemExit(1)


@click.command("visibility")
def init_visibility() -> None:
    """Create the visibility keyspace and tables in Cassandra."""
    _run(client.init_visibility, _collector())


@click.command("visibility")
@click.option("-f", "--file", "file_", type=click.Path(dir_okay=False), help="start_visibility.yaml")
def start_visibility(file_: str | None) -> None:
    """Start collecting traces and metrics (settings from -f, defaults from the configuration)."""
    _run(client.start_collector, _collector(), **collector_settings(file_))


@click.command("visibility")
def stop_visibility() -> None:
    """Stop collecting."""
    _run(client.stop_collector, _collector())
