"""Validation commands, through the controller's REST API (docs/compatibility.md §7): ``create testplan -f``,
``start testplan [-s N]``, ``stop testplan``, ``get testresult [log|detail|summary]`` and
``get teststatus``.

A test plan is checked here first, with the validation service's own rules, so a bad plan is
refused with every problem and its field before anything is sent.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from cloverctl import rest
from cloverctl.rest import output_option
from validation.plan import PlanError, parse_plan

FINAL_STATES = ("finished", "failed", "stopped")


@click.command("testplan", epilog=rest.EXIT_CODES_HELP)
@click.option("-f", "--file", "file_", required=True, help="Test-plan yaml (e.g. jmeter_testplan.yaml).")
@click.option("-n", "--name", default=None, help="Name of the plan on the master (default test.jmx).")
@output_option
def create_testplan(file_: str, name: str | None) -> None:
    """Check a test-plan yaml and generate its JMeter plan on the master (POST /jmeter/gen)."""
    data = rest.load_yaml(file_)
    try:
        parse_plan(data, name)
    except PlanError as exc:
        lines = "\n".join(f"  {field}: {message}" if field else f"  {message}" for field, message in exc.problems)
        raise click.ClickException(f"{file_} was refused (nothing was sent):\n{lines}") from None
    rest.text("POST", "/jmeter/gen", data, params={"name": name} if name else None)


def _progress_line(status: dict[str, Any]) -> str:
    started, finished = status.get("started_at") or 0, status.get("finished_at") or 0
    took = (finished or time.time()) - started if started else 0.0
    return f"{status['state']}: {status['samples']} samples, {status['errors']} errors, {took:.0f}s"


def wait_for_run(run_id: str, timeout: float | None, poll: float = 0.5) -> dict[str, Any]:
    """Follow run ``run_id`` (GET /jmeter/status) until it ends, printing its progress."""
    deadline = None if timeout is None else time.monotonic() + timeout
    tty = sys.stdout.isatty() and not rest.json_output()
    last_print = 0.0
    while True:
        status: dict[str, Any] = rest.data("GET", "/jmeter/status")
        if status.get("run_id") != run_id:
            raise click.ClickException(f"run {run_id} is not the validation service's current run")
        done = status.get("state") in FINAL_STATES
        if tty:
            click.echo("\r  " + _progress_line(status).ljust(60), nl=done)
        elif not rest.json_output() and (time.monotonic() - last_print >= 5 or done):
            click.echo("  " + _progress_line(status))
            last_print = time.monotonic()
        if done:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise click.ClickException(f"run {run_id} still {status['state']} after {timeout:.0f}s")
        time.sleep(poll)


@click.command("testplan", epilog=rest.EXIT_CODES_HELP)
@click.option("-s", "--slaves", default=0, show_default=True, type=click.IntRange(min=0), help="JMeter servers to use.")
@click.option("-n", "--name", default="", help="Plan to run (default test.jmx).")
@click.option("--slave-ips", default="", help="Comma-separated host[:port] of JMeter servers already running.")
@click.option("-w", "--wait", is_flag=True, help="Follow the run until it ends, then print the summary.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@output_option
def start_testplan(slaves: int, name: str, slave_ips: str, wait: bool, timeout: float | None) -> None:
    """Start the plan on the master (POST /jmeter/start); -s N: on N JMeter servers (local ones
    are started on loopback)."""
    body: dict[str, Any] = {"num_slaves": str(slaves), "slave_list": slave_ips}
    if name:
        body["test_plan"] = name
    started = rest.data("POST", "/jmeter/start", body)
    if not wait:
        if rest.json_output():
            rest.echo_json(started)
        else:
            click.echo(started["message"])
        return
    if not rest.json_output():
        click.echo(started["message"])
    status = wait_for_run(started["run_id"], timeout)
    summary = rest.data("GET", "/jmeter/results/summary")
    if rest.json_output():
        rest.echo_json({**started, "status": status, "summary": summary["summary"]})
    else:
        click.echo(summary["content"], nl=False)
    if status["state"] != "finished":
        raise click.ClickException(
            f"run {status['run_id']} {status['state']}: {status['detail'] or 'see get testresult log'}"
        )


@click.command("testplan", epilog=rest.EXIT_CODES_HELP)
@click.option("--now", is_flag=True, help="Abort requests in flight instead of letting them finish.")
@output_option
def stop_testplan(now: bool) -> None:
    """Stop the running test (GET /jmeter/stop)."""
    rest.text("GET", "/jmeter/stop", params={"now": "1"} if now else None)


@click.command("testresult", epilog=rest.EXIT_CODES_HELP)
@click.argument("kind", required=False, default="log", type=click.Choice(["log", "detail", "summary"]))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json", "text"]), help="detail csv|json; summary text|csv|json"
)
@output_option
def get_testresult(kind: str, fmt: str | None) -> None:
    """The last run's summary log (default), per-request results (detail) or per-label summary
    (GET /jmeter/results/<kind>)."""
    rest.text("GET", f"/jmeter/results/{kind}", params={"format": fmt} if fmt else None)


@click.command("teststatus", epilog=rest.EXIT_CODES_HELP)
@output_option
def get_teststatus() -> None:
    """The state of the current or last run (GET /jmeter/status)."""
    status = rest.data("GET", "/jmeter/status")
    if rest.json_output():
        rest.echo_json(status)
        return
    if status["state"] == "idle":
        click.echo("no test has been run yet")
        return
    click.echo(f"run {status['run_id']} ({status['test_plan']}, pid {status['pid']}) " + _progress_line(status))
    if status.get("slave_hosts"):
        click.echo(f"  JMeter servers: {', '.join(status['slave_hosts'])}")
    if status.get("detail"):
        click.echo(f"  {status['detail']}")
