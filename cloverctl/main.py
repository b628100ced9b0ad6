"""The ``cloverctl`` entry point: the root command group and its verbs."""

from __future__ import annotations

import click

from cloverctl import clovisor, sdc, validation, visibility
from cloverctl.local import local


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Control Clover: the local stack, visibility, the sample services and validation."""


cli.add_command(local)


def verb(name: str, summary: str) -> click.Group:
    """A verb of ``cloverctl <verb> <noun>``; alone it says the command is incomplete."""

    @click.pass_context
    def incomplete(ctx: click.Context) -> None:
        if ctx.invoked_subcommand is None:
            click.echo("Incomplete command")
            click.echo(ctx.get_help())
            ctx.exit(1)

    incomplete.__doc__ = summary
    group = click.Group(name, callback=incomplete, invoke_without_command=True, help=summary)
    cli.add_command(group)
    return group


init = verb("init", "Initialise resources (visibility).")
create = verb("create", "Create resources (testplan, ...).")
start = verb("start", "Start services or tests (testplan, ...).")
stop = verb("stop", "Stop services or tests (testplan, ...).")
get = verb("get", "Show results and state (testresult, teststatus, ...).")
set_ = verb("set", "Change the configuration of running services (lb, server, proxy).")
delete = verb("delete", "Delete resources (idsrules).")

init.add_command(visibility.init_visibility)
start.add_command(visibility.start_visibility)
stop.add_command(visibility.stop_visibility)
create.add_command(validation.create_testplan)
start.add_command(validation.start_testplan)
stop.add_command(validation.stop_testplan)
get.add_command(validation.get_testresult)
get.add_command(validation.get_teststatus)
sdc.register({"set": set_, "create": create, "start": start, "stop": stop, "get": get, "delete": delete})
clovisor.register({"create": create, "delete": delete})


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
