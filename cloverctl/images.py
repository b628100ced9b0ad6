"""``cloverctl build images``: the OCI images of every part (``stack/images``, as ``make images``);
``--load`` imports them into the running local cluster (``cloverctl local up cluster``)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import click

from clover.config import Config
from stack.images import build, catalogue


def load_into_local_cluster(references: dict[str, str], state_dir: str | None) -> None:
    """Import the archives (reference -> archive) into the local cluster's containerd."""
    from stack.cluster import containers
    from stack.cluster.layout import ClusterPaths
    from stack.cluster.probes import unix_socket
    from stack.probes import ProbeFailed

    cfg = Config.from_env()
    if state_dir:
        cfg = replace(cfg, state_dir=Path(state_dir).resolve())
    paths = ClusterPaths.of(cfg)
    try:
        unix_socket(paths.containerd_socket)
    except ProbeFailed:
        raise click.ClickException(f"the local cluster in {cfg.state_dir} is not running: "
                                   "start it with cloverctl local up cluster") from None  # fmt: skip
    started = time.monotonic()
    for reference, archive in references.items():
        one = time.monotonic()
        try:
            containers.import_images(paths, [Path(archive)])
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"loaded {reference} into the local cluster ({time.monotonic() - one:.1f}s)")
    containers.remember_loaded(paths, references)  # imported again at every `local up cluster`
    click.echo(f"{len(references)} images loaded in {time.monotonic() - started:.1f}s")


@click.command("images")
@click.option("-r", "--repo", default=catalogue.DEFAULT_REPO, show_default=True, help="Repository of the images.")
@click.option("-t", "--tag", default=catalogue.DEFAULT_TAG, show_default=True, help="Tag of the images.")
@click.option("--only", multiple=True, metavar="NAME", help="Build only this image (repeatable, or NAME,NAME).")
@click.option("--list", "list_", is_flag=True, help="List the images and exit.")
@click.option("--load", is_flag=True, help="Then import them into the running local cluster.")
@click.option("--state-dir", default=None, help="The local cluster's state directory (default .clover/), for --load.")
def build_images(repo: str, tag: str, only: tuple[str, ...], list_: bool, load: bool, state_dir: str | None) -> None:
    """Build the OCI images of every part without a container engine (needs root; cached, so a
    second run only checks). Archives: stack/cache/images/<name>-<tag>.oci.tar."""
    if list_:
        click.echo("\n".join(build.listing()))
        return
    names = [n for item in only for n in item.split(",") if n] or None
    code = build.run(repo, tag, names, click.echo, lambda line: click.echo(line, err=True))
    if code:
        raise SystemExit(code)
    if load:
        listed = json.loads((build.store_of(Config.from_env()) / f"images-{tag}.json").read_text())
        load_into_local_cluster(dict(listed), state_dir)
