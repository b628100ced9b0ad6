"""Validation commands: ``create testplan -f``, ``start testplan [-s N]``, ``stop testplan``,
``get testresult [log|detail|summary]`` and ``get teststatus``.

They talk to the validation service over gRPC (``CLOVER_VALIDATION_GRPC``) through the same
client functions the controller relays with.
"""

from __future__ import annotations

import sys
import time

import click

from clover.config import Config, ConfigError
from validation import client
from validation.plan import PlanError, load_plan_file


def _target() -> str:
    try:
        return Config.from_env().validation_grpc
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _refused(exc: client.ValidationError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.command("testplan")
@click.option("-f", "--file", "file_", required=True, type=click.Path(dir_okay=False), help="Test-plan yaml.")
@click.option("-n", "--name", default=None, help="Name of the plan on the master (default test.jmx).")
def create_testplan(file_: str, name: str | None) -> None:
    """Check a test-plan yaml and generate its JMeter plan on the master."""
    try:
        plan = load_plan_file(file_, name)
    except PlanError as exc:
        lines = "\n".join(f"  {field}: {message}" if field else f"  {message}" for field, message in exc.problems)
        raise click.ClickException(f"{file_} was refused (nothing was sent):\n{lines}") from None
    try:
        click.echo(client.gen_test(_target(), plan))
    except client.ValidationError as exc:
        raise _refused(exc) from None


def _progress_line(status: client.RunStatus) -> str:
    took = (status.finished_at or time.time()) - status.started_at if status.started_at else 0.0
    return f"{status.state}: {status.samples} samples, {status.errors} errors, {took:.0f}s"


@click.command("testplan")
@click.option("-s", "--slaves", default=0, show_default=True, type=click.IntRange(min=0), help="JMeter servers to use.")
@click.option("-n", "--name", default="", help="Plan to run (default test.jmx).")
@click.option("--slave-ips", default="", help="Comma-separated host[:port] of JMeter servers already running.")
@click.option("-w", "--wait", is_flag=True, help="Follow the run until it ends, then print the summary.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
def start_testplan(slaves: int, name: str, slave_ips: str, wait: bool, timeout: float | None) -> None:
    """Start the plan on the master (-s N: on N JMeter servers; local ones are started on loopback)."""
    target = _target()
    ips = [ip.strip() for ip in slave_ips.split(",") if ip.strip()]
    try:
        started = client.start_test(target, num_slaves=slaves, test_plan=name, slave_ips=ips)
    except client.ValidationError as exc:
        raise _refused(exc) from None
    click.echo(started.message)
    if not wait:
        return
    tty = sys.stdout.isatty()
    last_print = 0.0

    def progress(status: client.RunStatus) -> None:
        nonlocal last_print
        if tty:
            click.echo("\r  " + _progress_line(status).ljust(60), nl=False)
        elif time.monotonic() - last_print >= 5 or status.done:
            click.echo("  " + _progress_line(status))
            last_print = time.monotonic()

    try:
        status = client.wait_for_run(target, started.run_id, timeout=timeout, progress=progress)
        if tty:
            click.echo()
        summary = client.get_results(target, "summary")
    except (client.ValidationError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary.content, nl=False)
    if status.state != "finished":
        raise click.ClickException(f"run {status.run_id} {status.state}: {status.detail or 'see get testresult log'}")


@click.command("testplan")
@click.option("--now", is_flag=True, help="Abort requests in flight instead of letting them finish.")
def stop_testplan(now: bool) -> None:
    """Stop the running test."""
    try:
        click.echo(client.stop_test(_target(), now=now))
    except client.ValidationError as exc:
        raise _refused(exc) from None


@click.command("testresult")
@click.argument("kind", required=False, default="log", type=click.Choice(["log", "detail", "summary"]))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json", "text"]), help="detail csv|json; summary text|csv|json"
)
def get_testresult(kind: str, fmt: str | None) -> None:
    """The last run's summary log (default), per-request results (detail) or per-label summary."""
    try:
        results = client.get_results(_target(), "results" if kind == "detail" else kind, fmt or "")
    except client.ValidationError as exc:
        raise _refused(exc) from None
    click.echo(results.message, nl=not results.message.endswith("\n"))


@click.command("teststatus")
def get_teststatus() -> None:
    """The state of the current or last run."""
    try:
        status = client.get_status(_target())
    except client.ValidationError as exc:
        raise _refused(exc) from None
    if status.state == "idle":
        click.echo("no test has been run yet")
        return
    click.echo(f"run {status.run_id} ({status.test_plan}, pid {status.pid}) " + _progress_line(status))
    if status.slave_hosts:
        click.echo(f"  JMeter servers: {', '.join(status.slave_hosts)}")
    if status.detail:
        click.echo(f"  {status.detail}")
