"""The ``cloverctl`` entry point: the root command group and its verbs."""

from __future__ import annotations

import click

from cloverctl.local import local


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Control Clover: the local stack, visibility, the sample services and validation."""


cli.add_command(local)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
