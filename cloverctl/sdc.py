"""Sample-chain commands. Through the controller's REST API (facts §7): ``set lb|server -f``,
``create idsrules -f``, ``start|stop ids``. Straight to the pods over gRPC (``sdc.client``):
``set proxy -f``, ``get lb|server|proxy|ids|idsrules`` and ``delete idsrules``.

The yaml files are the original samples (``cloverctl/yaml/``). The output is the pod's reply,
e.g. "Modified nginx config"; a refused change exits 1 with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from clover.config import Config, ConfigError
from cloverctl import rest
from cloverctl.rest import output_option
from sdc import client

YAML_DIR = Path(__file__).resolve().parent / "yaml"


def _cfg() -> Config:
    try:
        return Config.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def load_yaml(path: str) -> Any:
    """A yaml file, looked up as given, else in cloverctl's yaml directory (like the original)."""
    file = Path(path)
    if not file.exists() and not file.is_absolute() and (YAML_DIR / path).exists():
        file = YAML_DIR / path
    try:
        return yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such file (nor in {YAML_DIR})") from None
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None


def _run(fn: Any, *args: Any) -> Any:
    try:
        return fn(_cfg(), *args)
    except client.SdcError as exc:
        raise click.ClickException(str(exc)) from None


file_option = click.option("-f", "--file", "file_", required=True, help="The yaml file (e.g. lbv2.yaml).")


@click.command("lb", epilog=rest.EXIT_CODES_HELP)
@file_option
@output_option
def set_lb(file_: str) -> None:
    """Change a load balancer's server list (POST /nginx/lb), e.g. -f lbv2.yaml."""
    rest.text("POST", "/nginx/lb", rest.load_yaml(file_))


@click.command("server", epilog=rest.EXIT_CODES_HELP)
@file_option
@output_option
def set_server(file_: str) -> None:
    """Change a server's site, locations and files (POST /nginx/server), e.g. -f server.yaml."""
    rest.text("POST", "/nginx/server", rest.load_yaml(file_))


@click.command("proxy")
@file_option
def set_proxy(file_: str) -> None:
    """Change the proxy's upstream, mirror or block time (ModifyProxy)."""
    click.echo(_run(client.modify_proxy, load_yaml(file_)))


@click.command("idsrules", epilog=rest.EXIT_CODES_HELP)
@file_option
@output_option
def create_idsrules(file_: str) -> None:
    """Add a rule to snort-ids' local.rules (POST /snort/addrule), e.g. -f idsrule_scan.yaml;
    it takes effect after `stop ids` and `start ids`."""
    rest.text("POST", "/snort/addrule", rest.load_yaml(file_))


@click.command("ids", epilog=rest.EXIT_CODES_HELP)
@output_option
def start_ids() -> None:
    """Start the IDS engine (GET /snort/start)."""
    rest.text("GET", "/snort/start")


@click.command("ids", epilog=rest.EXIT_CODES_HELP)
@output_option
def stop_ids() -> None:
    """Stop the IDS engine and clear its logs (GET /snort/stop)."""
    rest.text("GET", "/snort/stop")


@click.command("ids")
def get_ids() -> None:
    """Show the IDS engine's state and counts."""
    click.echo(yaml.safe_dump(_run(client.snort_status), sort_keys=False).rstrip())


@click.command("idsrules")
@click.option("--all", "all_", is_flag=True, help="Include the community rules.")
@click.option("--sid", "sids", multiple=True, help="Only these signature ids.")
def get_idsrules(all_: bool, sids: tuple[str, ...]) -> None:
    """List snort-ids' local rules (and with --all the community rules)."""
    rules = _run(client.list_rules, list(sids), "all" if all_ else "local")
    if not rules:
        click.echo("No rules.")
    for rule in rules:
        state = "loaded" if rule["loaded"] else "not loaded (restart the IDS)"
        click.echo(f"{rule['sid']:>9} {rule['file']:<16} {state:<11} {rule['text']}")


@click.command("idsrules")
@click.option("--sid", "sids", multiple=True, required=True, help="Signature id to delete (repeatable).")
def delete_idsrules(sids: tuple[str, ...]) -> None:
    """Delete rules from snort-ids' local.rules (effective after the next start)."""
    click.echo(_run(client.delete_rules, list(sids)))


def _show(name: str) -> None:
    click.echo(yaml.safe_dump(_run(client.get_config, name), sort_keys=False).rstrip())


@click.command("lb")
@click.argument("name", default="http-lb-v1")
def get_lb(name: str) -> None:
    """Show a load balancer's running configuration (default http-lb-v1)."""
    _show(name)


@click.command("server")
@click.argument("name", default="clover-server1")
def get_server(name: str) -> None:
    """Show a server's running configuration (default clover-server1)."""
    _show(name)


@click.command("proxy")
@click.argument("name", default="proxy-access-control")
def get_proxy(name: str) -> None:
    """Show the proxy's configuration and the clients it blocks."""
    _show(name)


def register(verbs: dict[str, click.Group]) -> None:
    """Add the commands to cloverctl's verbs."""
    for verb, commands in {
        "set": [set_lb, set_server, set_proxy],
        "create": [create_idsrules],
        "start": [start_ids],
        "stop": [stop_ids],
        "get": [get_ids, get_idsrules, get_lb, get_server, get_proxy],
        "delete": [delete_idsrules],
    }.items():
        for command in commands:
            verbs[verb].add_command(command)
