"""``cloverctl local up|down|status|logs``: the stack on this machine."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from clover.config import API_TOKEN_FILE, Config, ConfigError, secret_file
from stack.catalogue import local_stack
from stack.cluster import parts as cluster
from stack.demo import main_loop
from stack.launcher import Launcher, PartStatus, StackError
from stack.secrets import local_config


def launcher(state_dir: str | None, starting: bool = False) -> Launcher:
    """The local stack in ``state_dir``; ``starting``: make its secrets first (stack/secrets.py)."""
    if state_dir:  # the parts read it from the environment too (Config.from_env)
        os.environ["CLOVER_STATE_DIR"] = str(Path(state_dir).resolve())
    try:
        cfg = local_config() if starting else Config.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return local_stack(cfg)


def say(message: str) -> None:
    click.echo(f"  {message}")
    sys.stdout.flush()


def format_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def status_table(rows: list[PartStatus]) -> str:
    width = max([11, *(len(r.name) for r in rows)])
    lines = [f"{'PART':<{width}} {'PORT':>6} {'PID':>8} {'RSS':>9}  HEALTH"]
    for r in rows:
        pid = str(r.pid) if r.pid else "-"
        health = r.health + (f" ({r.detail})" if r.detail else "")
        port = str(r.port) if r.port else "-"
        lines.append(f"{r.name:<{width}} {port:>6} {pid:>8} {format_bytes(r.rss_bytes):>9}  {health}")
    return "\n".join(lines)


state_option = click.option(
    "--state-dir", envvar="CLOVER_STATE_DIR", help="Where parts keep data and logs (default .clover/)."
)


@click.group()
def local() -> None:
    """Run Clover's backing services on this machine (loopback only)."""


@local.command()
@click.argument("parts", nargs=-1)
@click.option("--fresh", is_flag=True, help="Stop the parts and delete their data before starting.")
@state_option
def up(parts: tuple[str, ...], fresh: bool, state_dir: str | None) -> None:
    """Start PARTS (default: all) and wait until each answers its readiness check."""
    stack = launcher(state_dir, starting=True)
    started = time.monotonic()
    click.echo(f"Starting the local stack in {stack.cfg.state_dir}")
    try:
        stack.up(parts, fresh=fresh, progress=say)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"All parts healthy after {time.monotonic() - started:.1f}s\n")
    click.echo(status_table(stack.status(parts)))
    if any(p.name in stack.groups[cluster.GROUP] for p in stack.select(parts)):
        click.echo("\n" + cluster.usage(stack.cfg))


@local.command()
@click.argument("parts", nargs=-1)
@state_option
def down(parts: tuple[str, ...], state_dir: str | None) -> None:
    """Stop PARTS (default: all). Their data is kept."""
    stack = launcher(state_dir)
    try:
        stack.down(parts, progress=say)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("Stopped.")


@local.command()
@click.argument("parts", nargs=-1)
@state_option
def status(parts: tuple[str, ...], state_dir: str | None) -> None:
    """Show each part's port, pid, memory and health. Exits 1 unless all are healthy."""
    stack = launcher(state_dir)
    try:
        rows = stack.status(parts)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(status_table(rows))
    if any(r.health != "healthy" for r in rows):
        sys.exit(1)


@local.command()
@click.argument("part", required=False)
@click.option("-n", "--lines", default=40, show_default=True, help="How many lines of each log.")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new lines (one part).")
@state_option
def logs(part: str | None, lines: int, follow_: bool, state_dir: str | None) -> None:
    """Print the last lines of PART's log (default: every part's)."""
    stack = launcher(state_dir)
    try:
        names = [p.name for p in stack.select([part] if part else None)]
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    for name in names:
        if len(names) > 1:
            click.echo(f"==> {name} ({stack.dirs(name).log}) <==")
        click.echo(stack.tail(name, lines))
    if follow_:
        if len(names) != 1:
            raise click.UsageError("--follow needs one PART")
        log = stack.dirs(names[0]).log
        with open(log, errors="replace") as f:
            f.seek(0, 2)
            try:
                while True:
                    line = f.readline()
                    if line:
                        click.echo(line, nl=False)
                    else:
                        time.sleep(0.3)
            except KeyboardInterrupt:
                pass


@local.command()
@click.option("--rate", default=20.0, show_default=True, type=click.FloatRange(min=0.1), help="Load, requests/s.")
@state_option
def demo(rate: float, state_dir: str | None) -> None:
    """Run everything (stack, sample chain, pipeline, controller, load) until Ctrl-C."""
    os.environ["CLOVER_LOAD_RATE"] = str(rate)
    stack = launcher(state_dir, starting=True)
    try:
        main_loop(stack.cfg, say)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


@local.command()
@state_option
def token(state_dir: str | None) -> None:
    """Print the controller's API token (CLOVER_API_TOKEN, else the one `local up` made)."""
    stack = launcher(state_dir)
    if not stack.cfg.api_token:
        raise click.ClickException(
            f"no API token: CLOVER_API_TOKEN is unset and {secret_file(stack.cfg.state_dir, API_TOKEN_FILE)} "
            "does not exist yet (cloverctl local up makes it)"
        )
    click.echo(stack.cfg.api_token)
