"""The ``cloverctl`` entry point: the root command group and its verbs."""

from __future__ import annotations

import click

from cloverctl import (
    clover_system,
    clovisor,
    gateway_system,
    graph,
    images,
    logging_system,
    logs,
    monitoring_system,
    provider,
    rest,
    sdc,
    sdc_system,
    validation,
    validation_system,
    visibility,
    waf,
)
from cloverctl.local import local
from cloverctl.stack_checks import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=rest.EXIT_CODES_HELP)
@click.option("--controller", metavar="URL", help="The clover-controller (default: CLOVER_CONTROLLER_URL, "
              "ControllerIP in ~/.cloverctl.yaml, else http://127.0.0.1:8000).")  # fmt: skip
@click.option("--token", metavar="TOKEN", help="API token (default: CLOVER_API_TOKEN, Token in ~/.cloverctl.yaml, "
              "else the local stack's, for a controller on loopback).")  # fmt: skip
@click.option("--config", "config_file", metavar="FILE", help="cloverctl settings file (default ~/.cloverctl.yaml).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", help="text or json output.")
@click.option("-v", "--verbose", is_flag=True, help="Say which controller address and token are used, and from where.")
@click.pass_context
def cli(
    ctx: click.Context, controller: str | None, token: str | None, config_file: str | None, output: str, verbose: bool
) -> None:
    """Control Clover: the local stack, visibility, the sample services and validation.

    Commands other than `local` go through the clover-controller's REST API."""
    ctx.obj = rest.Options(controller=controller, token=token, output=output, config=config_file, verbose=verbose)


cli.add_command(local)
cli.add_command(validate)


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
create = verb("create", "Create resources (testplan, idsrules, ...).")
start = verb("start", "Start services or tests (visibility, ids, testplan).")
stop = verb("stop", "Stop services or tests (visibility, ids, testplan).")
get = verb("get", "Show results and state (visibility, testresult, teststatus, ...).")
set_ = verb("set", "Change the configuration of running services (visibility, lb, server, proxy).")
delete = verb("delete", "Delete resources (idsrules).")

clear = verb("clear", "Clear data (visibility).")
check = verb("check", "Assert limits on results, for CI (visibility).")
build = verb("build", "Build artifacts on this machine (images).")

init.add_command(visibility.init_visibility)
start.add_command(visibility.start_visibility)
stop.add_command(visibility.stop_visibility)
clear.add_command(visibility.clear_visibility)
get.add_command(visibility.get_visibility)
set_.add_command(visibility.set_visibility)
check.add_command(visibility.check_visibility)
create.add_command(validation.create_testplan)
start.add_command(validation.start_testplan)
stop.add_command(validation.stop_testplan)
get.add_command(validation.get_testresult)
get.add_command(validation.get_teststatus)
sdc.register({"set": set_, "create": create, "start": start, "stop": stop, "get": get, "delete": delete})
clovisor.register({"create": create, "delete": delete})
validation_system.register({"create": create, "delete": delete})
sdc_system.register({"create": create, "delete": delete})
clover_system.register({"create": create, "delete": delete, "get": get})
monitoring_system.register({"create": create, "delete": delete})
gateway_system.register({"create": create, "delete": delete})
build.add_command(images.build_images)
provider.register({"create": create, "delete": delete, "get": get})
waf.register({"get": get})
get.add_command(logs.get_logs)
logging_system.register({"create": create, "delete": delete})
graph.register({"get": get})


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
