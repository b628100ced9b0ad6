"""Build the images: ``python -m stack.images.build [-r REPO] [-t TAG] [--only NAME ...]``
(``make images``, ``cloverctl build images``).

Two rounds of cached steps (``stack/cluster/steps.py``: a stamp with the hash of each step's
inputs; a second run only checks). First the layers the chosen images need, each once; then
one OCI archive per image, ``<stack cache>/images/<name>-<tag>.oci.tar``, named
``<repo>/<name>:<tag>`` for ``ctr -n k8s.io images import``. Needs root (debootstrap, chroot)
and the virtualenv and stack cache of ``make setup``. Heavy work runs at ``nice -n 19``.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clover.config import Config
from stack.cluster.steps import BuildError, Step, command, digest, run_steps
from stack.hostsetup import Progress
from stack.images import catalogue, debian, layers, oci, python
from stack.images.catalogue import DebianLayer, FilesLayer, Image, LayerSpec, ProjectLayer, PythonLayer

CHECKOUT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# The code each kind of layer is made with: a change to it makes the layer again.
PYTHON_CODE = (HERE / "layers.py", HERE / "python.py")
WORK_DIR = ".work"  # the Debian trees and staging directories, kept between builds
HOST_TOOLS = {"debootstrap": "/usr/sbin/debootstrap", "unshare": "/usr/bin/unshare"}


def store_of(cfg: Config) -> Path:
    """Where the images, their layers and the build's work trees live."""
    return cfg.stack_cache / "images"


def archive_path(store: Path, image: Image, tag: str) -> Path:
    return store / f"{image.name}-{tag}.oci.tar"


def archives(cfg: Config, tag: str = catalogue.DEFAULT_TAG, names: list[str] | None = None) -> list[Path]:
    """The archives of the named images (all by default), for ``ctr images import``."""
    chosen = [i for i in catalogue.images() if names is None or i.name in names]
    return [archive_path(store_of(cfg), image, tag) for image in chosen]


@dataclass(frozen=True)
class Built:
    """An image written: its reference, archive and manifest digest, and its layers."""

    reference: str
    archive: Path
    layers: list[layers.Layer]


class ImageBuild:
    """The steps that make the chosen images, in one store."""

    def __init__(self, cfg: Config, repo: str, tag: str, chosen: list[Image]):
        self.cfg, self.repo, self.tag, self.chosen = cfg, repo, tag, chosen
        self.store = store_of(cfg)
        # A dotted name: setuptools' package discovery (``stack*`` in pyproject.toml, run by
        # ``make setup``) walks every other directory under stack/, following links, and fails
        # on a root file system's ``dev/fd`` link.
        self.rootfs = self.store / WORK_DIR / "rootfs"
        self.stage = self.store / WORK_DIR / "stage"
        self.sources = debian.host_sources()

    # -- layers --------------------------------------------------------------------------------

    def layer_steps(self) -> list[Step]:
        tools = Step("host tools", digest(*HOST_TOOLS), tuple(Path(p) for p in HOST_TOOLS.values()), host_tools)
        steps = [tools]
        for name in catalogue.layers_of(self.chosen):
            steps += self._steps(catalogue.LAYERS[name])
        return steps

    def _rootfs_inputs(self, spec: DebianLayer) -> str:
        """What a Debian tree is made from: the mirrors, the packages, the base tree's inputs."""
        if spec.base:
            sources = "".join(s.deb822() for s in self.sources)
            user = f"{catalogue.USER} {catalogue.UID} {catalogue.STATE_DIR}"
            return digest(sources, *spec.packages, user, HERE / "debian.py")
        base = next(s for s in catalogue.LAYERS.values() if isinstance(s, DebianLayer) and s.base)
        return digest(self._rootfs_inputs(base), *spec.packages, "drop", *spec.drop)

    def _steps(self, spec: LayerSpec) -> list[Step]:
        """The steps that make one layer: for Debian, the tree (kept: the next layers are told
        from it) and then its packing."""
        record = layers.record_path(self.store, spec.name)
        if isinstance(spec, DebianLayer):
            tree = self.rootfs / spec.name
            made = self._rootfs_inputs(spec)
            packed = digest(made, HERE / "layers.py")
            return [
                Step(f"rootfs {spec.name}", made, (tree,), lambda: self.debian_tree(spec)),
                Step(f"layer {spec.name}", packed, (record,), lambda: self.debian_layer(spec)),
            ]
        if isinstance(spec, PythonLayer):
            dists, fetched = self.distributions(spec)
            names = [f"{d.metadata['Name']}=={d.version}" for d in dists] + [f"{n}=={v}" for n, v in fetched.items()]
            return [Step(f"layer {spec.name}", digest(*names, sys.version, python.IMAGE_PYTHON, *PYTHON_CODE),
                         (record,), lambda: self.python_layer(spec))]  # fmt: skip
        if isinstance(spec, ProjectLayer):
            files = python.project_files(CHECKOUT)
            tools = [sys.version, importlib.metadata.version("grpcio-tools"), str(catalogue.UID), catalogue.STATE_DIR]
            extra = [CHECKOUT / "pyproject.toml", CHECKOUT / "setup.py", *PYTHON_CODE]
            inputs = digest(*files, *(CHECKOUT / f for f in files), *tools, *extra)
            return [Step(f"layer {spec.name}", inputs, (record,), lambda: self.project_layer(spec))]
        listing = [f"{p} {p.stat().st_size} {p.stat().st_mtime_ns}" for src, _ in spec.copies
                   for p in self._cache_files(src)]  # fmt: skip
        targets = [f"{src} {dst}" for src, dst in spec.copies]
        inputs = digest(*listing, *targets, *spec.owned, HERE / "layers.py", HERE / "build.py")
        return [Step(f"layer {spec.name}", inputs, (record,), lambda: self.files_layer(spec))]

    def _cache_files(self, relative: str) -> list[Path]:
        source = self.cfg.stack_cache / relative
        if not source.exists():
            raise BuildError(f"{relative}: not in the stack cache ({source}); run make setup")
        return [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())

    def distributions(self, spec: PythonLayer) -> tuple[list[importlib.metadata.Distribution], dict[str, str]]:
        """The virtualenv's distributions the layer carries, and the pinned ones it fetches."""
        pins = python.requirements(CHECKOUT / "requirements.txt")
        roots = list(spec.roots) or [n for n in pins if n not in catalogue.NOT_IN_IMAGES]
        beside: set[str] = set()
        for other in spec.beside:
            layer = catalogue.LAYERS[other]
            assert isinstance(layer, PythonLayer)
            dists, fetched = self.distributions(layer)
            beside |= {d.metadata["Name"] for d in dists} | set(fetched)
        dists, fetched = python.closure(roots, pins, catalogue.EXTRA_PINS)
        kept = [d for d in dists if d.metadata["Name"] not in beside]
        return kept, {n: v for n, v in fetched.items() if n not in beside}

    def debian_tree(self, spec: DebianLayer) -> str:
        """The base system (debootstrap, upgraded, the base packages, the image's user), or a
        copy of it with ``spec.packages`` installed."""
        tree = self.rootfs / spec.name
        draft = tree.with_name(f"{spec.name}.draft")
        for path in (tree, draft):
            shutil.rmtree(path, ignore_errors=True)
        draft.parent.mkdir(parents=True, exist_ok=True)
        step = f"rootfs {spec.name}"
        if spec.base:
            debian.bootstrap(draft, self.sources, step)
            installed = debian.install(draft, spec.packages, step, upgrade=True)
            version = debian.chroot(draft, "python3 -c 'import platform; print(platform.python_version())'", step)
            if version.strip() != python.IMAGE_PYTHON:
                raise BuildError(f"{step}: the image's Python is {version.strip()}, not {python.IMAGE_PYTHON} "
                                 "(stack/images/python.py)")  # fmt: skip
            debian.add_user(draft, catalogue.USER, catalogue.UID, catalogue.STATE_DIR)
        else:
            command(step, ["cp", "-a", "--reflink=auto", str(self.rootfs / "debian"), str(draft)])
            installed = debian.install(draft, spec.packages, step)
            for dropped in spec.drop:
                shutil.rmtree(draft / dropped)
        draft.rename(tree)
        return ", ".join(f"{k} {v}" for k, v in installed.items())

    def debian_layer(self, spec: DebianLayer) -> str:
        tree = self.rootfs / spec.name
        members = layers.tree(tree) if spec.base else layers.diff(self.rootfs / "debian", tree)
        return _describe(layers.write(self.store, spec.name, members))

    def python_layer(self, spec: PythonLayer) -> str:
        with self._staging(spec.name) as stage:
            dists, fetched = self.distributions(spec)
            count = python.stage_distributions(dists, stage)
            python.stage_fetched(fetched, stage, self.store / "wheels")
            python.compile_tree(stage, python.SITE)
            layer = layers.write(self.store, spec.name, layers.tree(stage))
        extra = ", ".join(f"{n} {v}" for n, v in fetched.items())
        extra = f" + {extra} for Python {python.IMAGE_PYTHON}" if extra else ""
        return f"{_describe(layer)}; {len(dists)} distributions from the virtualenv ({count} files){extra}"

    def project_layer(self, spec: ProjectLayer) -> str:
        with self._staging(spec.name) as stage:
            python.stage_project(CHECKOUT, stage)
            python.compile_tree(stage, python.PROJECT)
            owned = {catalogue.STATE_DIR.strip("/"): (catalogue.UID, catalogue.UID)}
            members = layers.with_parents(layers.tree(stage), owned)
            layer = layers.write(self.store, spec.name, members)
        return _describe(layer)

    def files_layer(self, spec: FilesLayer) -> str:
        """Copies of stack cache directories; a symlink out of the copied directory (the JMeter
        home links its jars) becomes a copy of what it names."""
        members: list[layers.Member] = []
        for relative, target in spec.copies:
            source = self.cfg.stack_cache / relative
            found = [layers.Member(target.strip("/"), source)]
            if source.is_dir():
                found += layers.tree(source, target.strip("/"))
            for member in found:
                assert member.source is not None
                if member.source.is_symlink() and not member.source.resolve().is_relative_to(source.resolve()):
                    member = layers.Member(member.path, member.source.resolve())
                members.append(member)
        owned = {p.strip("/"): (catalogue.UID, catalogue.UID) for p in spec.owned}
        layer = layers.write(self.store, spec.name, layers.with_parents(members, owned))
        return _describe(layer)

    @contextmanager
    def _staging(self, name: str) -> Iterator[Path]:
        stage = self.stage / name
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    # -- images --------------------------------------------------------------------------------

    def image_steps(self) -> list[Step]:
        steps = []
        for image in self.chosen:
            found = [layers.load(self.store, n) for n in image.layers]
            reference = image.reference(self.repo, self.tag)
            config, manifest = oci.image_documents(found, image.run)
            target = archive_path(self.store, image, self.tag)
            inputs = digest(oci.normalized(reference), config.decode(), manifest.decode(), Path(oci.__file__))
            steps.append(Step(f"image {image.name}", inputs, (target,), self._writer(image, found, reference, target)))
        return steps

    def _writer(self, image: Image, found: list[layers.Layer], reference: str, target: Path) -> Callable[[], str]:
        return lambda: self.write_image(image, found, reference, target)

    def write_image(self, image: Image, found: list[layers.Layer], reference: str, target: Path) -> str:
        digest_ = oci.write_archive(target, reference, found, self.store, image.run)
        return f"{oci.normalized(reference)} {digest_[:19]} ({_mib(target.stat().st_size)})"

    def built(self) -> list[Built]:
        return [
            Built(oci.normalized(i.reference(self.repo, self.tag)), archive_path(self.store, i, self.tag),
                  [layers.load(self.store, n) for n in i.layers])
            for i in self.chosen
        ]  # fmt: skip


def host_tools() -> str:
    """debootstrap (Debian's) when it is missing."""
    missing = [name for name, path in HOST_TOOLS.items() if not Path(path).exists()]
    if not missing:
        return "present"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command("host tools", ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    return "installed " + " ".join(missing)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _describe(layer: layers.Layer) -> str:
    return f"{layer.digest[:19]} {_mib(layer.size)} packed, {_mib(layer.unpacked)} unpacked, {layer.members} entries"


@contextmanager
def _locked(store: Path) -> Iterator[None]:
    store.mkdir(parents=True, exist_ok=True)
    with open(store / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(f"another image build holds {store / '.lock'}") from None
        yield


def choose(names: list[str] | None) -> list[Image]:
    """The images named (all without names); an unknown name is an error naming the known ones."""
    known = catalogue.by_name()
    if not names:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BuildError(f"unknown image {', '.join(unknown)} (one of {', '.join(known)})")
    return [known[n] for n in dict.fromkeys(names)]


def build(cfg: Config, progress: Progress, repo: str = catalogue.DEFAULT_REPO, tag: str = catalogue.DEFAULT_TAG,
          names: list[str] | None = None) -> list[Built]:  # fmt: skip
    """Build whatever is missing or out of date for the chosen images; returns them."""
    if os.geteuid() != 0:
        raise BuildError("building images needs root (debootstrap and apt-get in a chroot)")
    if not tag or any(c in tag for c in "/: "):
        raise BuildError(f"tag {tag!r} is not a valid image tag")
    b = ImageBuild(cfg, repo, tag, choose(names))
    with _locked(b.store):
        run_steps(b.layer_steps(), b.store / "stamps" / "layers", lambda line: progress(f"layers {line}"))
        run_steps(b.image_steps(), b.store / "stamps" / f"images-{tag}", lambda line: progress(f"images {line}"))
        live = [layers.load(b.store, n).digest for n in catalogue.LAYERS if layers.record_path(b.store, n).exists()]
        layers.prune(b.store, live)
    return b.built()


def report(built: list[Built]) -> list[str]:
    """One line per image: reference, archive size, its layers' packed and unpacked sizes."""
    lines = [f"{'image':<44} {'archive':>10} {'packed':>10} {'unpacked':>10}  layers"]
    for b in built:
        packed = sum(layer.size for layer in b.layers)
        unpacked = sum(layer.unpacked for layer in b.layers)
        lines.append(f"{b.reference:<44} {_mib(b.archive.stat().st_size):>10} {_mib(packed):>10} "
                     f"{_mib(unpacked):>10}  {' '.join(layer.name for layer in b.layers)}")  # fmt: skip
    unique = {layer.digest: layer for b in built for layer in b.layers}
    lines.append(f"{len(unique)} distinct layers: {_mib(sum(x.size for x in unique.values()))} packed, "
                 f"{_mib(sum(x.unpacked for x in unique.values()))} unpacked")  # fmt: skip
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stack.images.build", description=__doc__.splitlines()[0])
    p.add_argument("-r", "--repo", default=catalogue.DEFAULT_REPO, help="repository of the images (default opnfv)")
    p.add_argument("-t", "--tag", default=catalogue.DEFAULT_TAG, help="their tag (default latest)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="build only these images (default: all)")
    p.add_argument("--list", action="store_true", help="list the images and exit")
    return p


def listing() -> list[str]:
    return [f"{image.name:<24} {' '.join(image.layers):<40} {image.about}" for image in catalogue.images()]


def run(repo: str, tag: str, names: list[str] | None, say: Callable[[str], None], fail: Callable[[str], None]) -> int:
    """Build with progress lines and the size report; 0 when built, 1 with the reason otherwise."""
    cfg = Config.from_env()
    started = time.monotonic()
    free = shutil.disk_usage(cfg.stack_cache if cfg.stack_cache.exists() else CHECKOUT).free
    say(f"Building images in {store_of(cfg)} ({free / 2**30:.0f} GiB free)")
    try:
        built = build(cfg, lambda line: say(f"  {line}"), repo, tag, names)
    except BuildError as exc:
        fail(f"FAILED: {exc}")
        return 1
    for line in report(built):
        say(f"  {line}")
    say(f"Built in {time.monotonic() - started:.1f}s")
    summary = {b.reference: str(b.archive) for b in built}
    (store_of(cfg) / f"images-{tag}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print("\n".join(listing()))
        return 0
    return run(args.repo, args.tag, args.only, lambda line: print(line, flush=True),
               lambda line: print(line, file=sys.stderr))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
