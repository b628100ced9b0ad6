"""The original's Spinnaker commands, ``cloverctl create|delete|get provider docker-registry|kubernetes``
(docs/compatibility.md §5c, §7): they exist so that a script written for the original gets a
clear answer, but Spinnaker is not part of this project (README, "What of the original is not
here, and why"). Each prints why and exits 1.
"""

from __future__ import annotations

from collections.abc import Mapping

import click

from cloverctl import rest

KINDS = ("docker-registry", "kubernetes")
EXPLANATION = (
    "Spinnaker is not part of this Clover: no Halyard or Spinnaker artifacts are obtainable from the "
    "registries this project builds from (PyPI, Maven Central, the Go module proxy, npm, Debian), so there "
    "is no Halyard to add {kind} provider accounts to. Deploy with `cloverctl create system ...` instead "
    '(README: "What of the original is not here, and why").'
)
_LENIENT = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


def _refuse(verb: str, kind: str) -> None:
    message = EXPLANATION.format(kind=kind)
    if rest.json_output():
        click.echo(rest.json_dumps({"error": message, "command": f"{verb} provider {kind}"}), err=True)
    else:
        click.echo(f"Error: {verb} provider {kind}: {message}", err=True)
    raise SystemExit(rest.EXIT_FAILED)


def _group(verb: str) -> click.Group:
    @click.group("provider", invoke_without_command=True, context_settings=_LENIENT)
    @click.pass_context
    def group(ctx: click.Context) -> None:
        """Spinnaker provider accounts (the original's; not available here: exits 1 and says why)."""
        if ctx.invoked_subcommand is None:
            _refuse(verb, "docker-registry|kubernetes")

    for kind in KINDS:

        def command(kind: str = kind) -> None:
            _refuse(verb, kind)

        group.add_command(
            click.Command(
                kind,
                callback=command,
                context_settings=_LENIENT,
                help=f"The original's `{verb} provider {kind}` (Spinnaker): not available here; exits 1 and says why.",
            )
        )
    return group


def register(verbs: Mapping[str, click.Group]) -> None:
    for verb in ("create", "delete", "get"):
        verbs[verb].add_command(_group(verb))
