"""Sample-chain commands, all through the controller's REST API: the original's (docs/compatibility.md §7)
``set lb|server -f``, ``create idsrules -f`` and ``start|stop ids``, and the new ``set proxy -f``,
``get lb|server|proxy|ids|idsrules`` and ``delete idsrules``.

The yaml files are the original samples (``cloverctl/yaml/``). The output is the pod's reply,
e.g. "Modified nginx config"; a refused change exits 1 with the reason.
"""

from __future__ import annotations

from typing import Any

import click
import yaml

from cloverctl import rest
from cloverctl.rest import output_option

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


@click.command("proxy", epilog=rest.EXIT_CODES_HELP)
@file_option
@output_option
def set_proxy(file_: str) -> None:
    """Change the proxy's upstream, mirror or block time (POST /nginx/proxy)."""
    rest.text("POST", "/nginx/proxy", rest.load_yaml(file_))


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


def _show(value: Any) -> None:
    """A mapping for people (yaml) or, with -o json, for scripts."""
    if rest.json_output():
        rest.echo_json(value)
    else:
        click.echo(yaml.safe_dump(value, sort_keys=False).rstrip())


@click.command("ids", epilog=rest.EXIT_CODES_HELP)
@output_option
def get_ids() -> None:
    """Show the IDS engine's state and counts (GET /snort/status)."""
    _show(rest.data("GET", "/snort/status"))


@click.command("idsrules", epilog=rest.EXIT_CODES_HELP)
@click.option("--all", "all_", is_flag=True, help="Include the community rules.")
@click.option("--sid", "sids", multiple=True, help="Only these signature ids.")
@output_option
def get_idsrules(all_: bool, sids: tuple[str, ...]) -> None:
    """List snort-ids' local rules, and with --all the community rules (GET /snort/rules)."""
    params = {"scope": "all" if all_ else "local", "sid": list(sids)}
    rules = rest.data("GET", "/snort/rules", params=params)["rules"]
    if rest.json_output():
        rest.echo_json(rules)
        return
    if not rules:
        click.echo("No rules.")
    for rule in rules:
        state = "loaded" if rule["loaded"] else "not loaded (restart the IDS)"
        click.echo(f"{rule['sid']:>9} {rule['file']:<16} {state:<11} {rule['text']}")


@click.command("idsrules", epilog=rest.EXIT_CODES_HELP)
@click.option("--sid", "sids", multiple=True, required=True, help="Signature id to delete (repeatable).")
@output_option
def delete_idsrules(sids: tuple[str, ...]) -> None:
    """Delete rules from snort-ids' local.rules, effective after the next start (POST /snort/delrule)."""
    rest.text("POST", "/snort/delrule", {"sids": list(sids)})


def _pod_config(name: str) -> None:
    _show(rest.data("GET", f"/nginx/config/{name}"))


@click.command("lb", epilog=rest.EXIT_CODES_HELP)
@click.argument("name", default="http-lb-v1")
@output_option
def get_lb(name: str) -> None:
    """Show a load balancer's running configuration, default http-lb-v1 (GET /nginx/config/NAME)."""
    _pod_config(name)


@click.command("server", epilog=rest.EXIT_CODES_HELP)
@click.argument("name", default="clover-server1")
@output_option
def get_server(name: str) -> None:
    """Show a server's running configuration, default clover-server1 (GET /nginx/config/NAME)."""
    _pod_config(name)


@click.command("proxy", epilog=rest.EXIT_CODES_HELP)
@click.argument("name", default="proxy-access-control")
@output_option
def get_proxy(name: str) -> None:
    """Show the proxy's configuration and the clients it blocks (GET /nginx/config/NAME)."""
    _pod_config(name)


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
