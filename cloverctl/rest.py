"""Talking to the clover-controller's REST API: where it is, how to call it, what to print and
which exit code to leave.

The address comes from ``--controller``, else ``CLOVER_CONTROLLER_URL``, else ``ControllerIP``
in ``~/.cloverctl.yaml`` (or ``--config FILE``, or a ``.cloverctl.yaml`` beside the cloverctl
executable, as in the original), else the local default ``http://127.0.0.1:8000``.
``ControllerIP`` may be an address, ``host:port`` or a URL. For a bare address without
``ControllerPort``, a kubeconfig's Service clover-controller decides, as in the original (its
load balancer, else the address with its NodePort); otherwise the port is 8000.
The API token (for a controller started with ``CLOVER_API_TOKEN``) comes from ``--token``,
``CLOVER_API_TOKEN`` or ``Token`` in the same file, else, for a controller on a loopback
address, the local stack's (``<state dir>/secrets/api-token``, made by ``cloverctl local up``).

Exit codes: 0 done; 1 the controller or a service refused or failed (or a check failed);
2 a usage problem (bad option, unreadable or malformed file); 3 the controller cannot be reached.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import requests
import yaml

from clover.config import (
    API_TOKEN_FILE,
    Config,
    ConfigError,
    is_loopback_host,
    read_secret,
    secret_file,
    state_dir_of,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
DEFAULT_PORT = 8000
CONTROLLER_SERVICE = "clover-controller"
CONFIG_NAME = ".cloverctl.yaml"
YAML_DIR = Path(__file__).resolve().parent / "yaml"
TIMEOUT = 330.0  # a truncate of large tables takes a while; the controller's own limit is 300 s
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 refused or failed (or a check failed); 2 usage problem (bad option or file); "
    "3 the controller cannot be reached."
)


class UsageProblem(click.ClickException):
    """A bad option value or an unusable file: exit 2."""

    exit_code = EXIT_USAGE


class Unreachable(click.ClickException):
    exit_code = EXIT_UNREACHABLE


class Refused(click.ClickException):
    """The controller answered with an error: exit 1, the message (and every problem) shown."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, body: dict[str, Any] | None = None):
        super().__init__(message)
        self.body = body or {}

    def show(self, file: Any = None) -> None:
        if json_output():
            click.echo(json_dumps(self.body or {"error": self.message}), err=True)
            return
        click.echo(f"Error: {self.message}", err=True)
        problems = self.body.get("problems") or []
        if len(problems) > 1:
            for p in problems:
                where = f"{p['field']}: " if p.get("field") else ""
                click.echo(f"  {where}{p['message']}", err=True)


@dataclass
class Options:
    """The root options every command reads (``cloverctl [--controller URL] [-o json] ...``)."""

    controller: str | None = None
    token: str | None = None
    output: str = "text"
    config: str | None = None
    verbose: bool = False


def options() -> Options:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Options):
        root.obj = Options()
    return root.obj


def json_output() -> bool:
    try:
        return options().output == "json"
    except RuntimeError:
        return False


def output_option(fn: Any) -> Any:
    """``-o text|json`` on a command (the same as the root's ``-o``)."""

    def set_output(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value:
            options().output = value

    return click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json"]),
        default=None,
        expose_value=False,
        callback=set_output,
        help="text (for people, the default) or json (for scripts).",
    )(fn)


def _config_files(explicit: str | None) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    files = [Path.home() / CONFIG_NAME]
    executable = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    if executable is not None:
        files.append(executable / CONFIG_NAME)
    return files


def read_settings(explicit: str | None) -> tuple[dict[str, Any], Path | None]:
    """The first cloverctl.yaml found (``--config`` must exist), as a mapping."""
    for path in _config_files(explicit):
        if not path.exists():
            if explicit:
                raise UsageProblem(f"--config {explicit}: no such file")
            continue
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageProblem(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageProblem(f"{path}: expected a mapping such as 'ControllerIP: 10.0.0.5'")
        return data, path
    return {}, None


def controller_url(value: str, port: Any = None) -> str:
    """``10.0.0.5`` -> ``http://10.0.0.5:8000``; ``host:9000`` and URLs are kept."""
    text = str(value).strip().rstrip("/")
    if not text:
        raise UsageProblem("the controller address is empty")
    if "://" in text:
        return text
    host, sep, given = text.rpartition(":")
    if sep and given.isdigit() and host and not host.endswith(":"):
        return f"http://{text}"
    if port is not None and not str(port).isdigit():
        raise UsageProblem(f"ControllerPort {port!r} is not a port number")
    return f"http://{text}:{port or DEFAULT_PORT}"


def resolve(opts: Options, env: dict[str, str] | None = None) -> tuple[str, str]:
    """(controller URL, where it came from)."""
    env = dict(os.environ) if env is None else env
    if opts.controller:
        return controller_url(opts.controller), "--controller"
    if env.get("CLOVER_CONTROLLER_URL"):
        return controller_url(env["CLOVER_CONTROLLER_URL"]), "CLOVER_CONTROLLER_URL"
    settings, path = read_settings(opts.config)
    if settings.get("ControllerIP"):
        host, port = str(settings["ControllerIP"]).strip(), settings.get("ControllerPort")
        if port is None and "://" not in host and ":" not in host:
            found = controller_from_service(host, env)
            if found:
                return found, f"{path} ControllerIP and the Service {CONTROLLER_SERVICE}"
        return controller_url(host, port), f"{path} ControllerIP"
    return Config().controller_url, "the default"


def kubeconfig(env: dict[str, str]) -> Path:
    return Path((env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")).split(os.pathsep)[0])


def kube_core(env: dict[str, str]) -> Any:
    """A Kubernetes core API client from the kubeconfig."""
    from cloverctl.system import cluster_apis

    return cluster_apis(str(kubeconfig(env)), None)["core"]


def controller_from_service(host: str, env: dict[str, str], core: Any | None = None) -> str | None:
    """As the original: with a kubeconfig, the Service clover-controller gives the address —
    its load balancer's, else ``host`` with the Service's NodePort. None without either."""
    if core is None and not kubeconfig(env).exists():
        return None
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        core = core or kube_core(env)
        services = core.list_service_for_all_namespaces(
            field_selector=f"metadata.name={CONTROLLER_SERVICE}", _request_timeout=3
        ).items
    except (ApiException, click.ClickException, HTTPError, OSError):
        return None
    for service in services:
        balancer = service.status.load_balancer if service.status else None
        for ingress in (balancer.ingress if balancer else None) or []:
            if ingress.ip or ingress.hostname:
                return f"http://{ingress.ip or ingress.hostname}"
    for service in services:
        for port in service.spec.ports or []:
            if port.node_port:
                return controller_url(host, port.node_port)
    return None


def token_and_source(
    opts: Options, env: dict[str, str] | None = None, controller: str | None = None
) -> tuple[str | None, str]:
    """(the API token or None, where it came from). The local stack's token is only sent to a
    controller on a loopback address (``controller``; None: assume the local one)."""
    env = dict(os.environ) if env is None else env
    if opts.token:
        return opts.token, "--token"
    if env.get("CLOVER_API_TOKEN"):
        return env["CLOVER_API_TOKEN"], "CLOVER_API_TOKEN"
    settings, path = read_settings(opts.config)
    if settings.get("Token"):
        return str(settings["Token"]), f"{path} Token"
    if controller is not None and not is_loopback_host(urlsplit(controller).hostname or ""):
        return None, "nowhere (the local stack's token is only sent to a loopback address)"
    file = secret_file(state_dir_of(env), API_TOKEN_FILE)
    try:
        value = read_secret(file)
    except ConfigError as exc:
        return None, f"nowhere ({exc})"
    return (value, str(file)) if value else (None, f"nowhere (no {file})")


def token(opts: Options, env: dict[str, str] | None = None, controller: str | None = None) -> str | None:
    return token_and_source(opts, env, controller)[0]


def load_yaml(path: str) -> Any:
    """A yaml file, looked up as given, else in cloverctl's yaml directory (like the original)."""
    file = Path(path)
    if not file.exists() and not file.is_absolute() and (YAML_DIR / path).exists():
        file = YAML_DIR / path
    try:
        data = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise UsageProblem(f"{path}: no such file (nor in {YAML_DIR})") from None
    except (OSError, yaml.YAMLError) as exc:
        raise UsageProblem(f"cannot read {path}: {exc}") from None
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        raise UsageProblem(f"{path}: holds values that JSON cannot carry (dates, binary)") from None
    return data


def call(
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, Any] | None = None,
    accept_json: bool = False,
    timeout: float = TIMEOUT,
) -> requests.Response:
    """One request to the controller; an error reply raises Refused, no answer Unreachable."""
    opts = options()
    base, source = resolve(opts)
    if opts.verbose:
        click.echo(f"clover-controller address: {base} (from {source})", err=True)
    headers = {"Accept": "application/json" if accept_json else "text/plain, application/json;q=0.9"}
    secret, origin = token_and_source(opts, controller=base)
    if opts.verbose:
        click.echo(f"API token: from {origin}", err=True)
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    try:
        reply = requests.request(method, base + path, json=body, params=params, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.ConnectionError):
            reason = "connection refused or host unreachable"
        raise Unreachable(
            f"cannot reach the clover-controller at {base} (address from {source}): {reason}. "
            "Set --controller, CLOVER_CONTROLLER_URL or ControllerIP in ~/.cloverctl.yaml."
        ) from None
    if reply.status_code >= 400:
        try:
            error = reply.json()
        except ValueError:
            error = {"error": reply.text.strip() or f"HTTP {reply.status_code}", "status": reply.status_code}
        if not isinstance(error, dict):
            error = {"error": str(error), "status": reply.status_code}
        raise Refused(str(error.get("error") or f"HTTP {reply.status_code}"), error)
    return reply


def text(method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> None:
    """Call a route that answers a text (a relay's reply) and print it, or its JSON with -o json."""
    reply = call(method, path, body, params, accept_json=json_output())
    if json_output():
        click.echo(json_dumps(reply.json()))
    else:
        out = reply.text
        click.echo(out, nl=not out.endswith("\n"))


def data(method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
    """Call a route that answers JSON and return it."""
    return call(method, path, body, params, accept_json=True).json()


def json_dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def echo_json(value: Any) -> None:
    click.echo(json_dumps(value))
