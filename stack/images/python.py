"""The Python side of the images, staged as trees to pack: the pinned dependencies, copied from
the virtualenv ``make setup`` installed (the very files the local stack runs), and the project.

Dependencies go to Debian's ``/usr/local/lib/python3.11/dist-packages`` (on the path of the
image's ``python3``); the project goes to ``/opt/clover`` with a ``.pth`` file naming it and a
wrapper per console script. Everything is compiled to ``__pycache__`` with unchecked-hash pycs,
which stay valid whatever the files' times and need no writable file system.
"""

from __future__ import annotations

import importlib.metadata as metadata
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from stack.cluster.steps import BuildError, command

PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"
SITE = f"usr/local/lib/{PYTHON}/dist-packages"
# Debian bookworm's python3.11 (Debian keeps the upstream version for a release's whole life;
# the build checks it in the image). Environment markers are evaluated for it, not for the
# virtualenv's Python: redis needs async-timeout below 3.11.3.
IMAGE_PYTHON = "3.11.2"
PROJECT = "opt/clover"
# Where the requirements that run in the images end (what follows is for development and tests).
RUNTIME_END = "# Development"


def requirements(path: Path) -> dict[str, str]:
    """The pinned runtime requirements of ``requirements.txt``: name -> version."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() == RUNTIME_END:
            return pins
        if line.strip() and not line.lstrip().startswith("#"):
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    raise BuildError(f"python: {path} has no '{RUNTIME_END}' line ending the runtime requirements")


def _installed() -> dict[str, metadata.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}


def _marker_environment(extra: str) -> dict[str, str]:
    major, minor, _ = IMAGE_PYTHON.split(".")
    return {"python_full_version": IMAGE_PYTHON, "python_version": f"{major}.{minor}", "extra": extra}


def closure(roots: Iterable[str], pins: dict[str, str],
            extra_pins: dict[str, str]) -> tuple[list[metadata.Distribution], dict[str, str]]:  # fmt: skip
    """What ``roots`` need on the image's Python, with their dependencies (extras and
    environment markers honoured): the distributions installed in the virtualenv, and the pins
    (from ``extra_pins``) of those the virtualenv's Python does not need. A root installed at
    another version than its pin, or a need without a pin, is an error."""
    installed = _installed()
    wanted: dict[str, set[str]] = {}
    fetched: dict[str, str] = {}
    todo = [(canonicalize_name(r), "", "requirements.txt") for r in roots]
    while todo:
        name, extra, needer = todo.pop()
        if extra in wanted.get(name, set()) or name in fetched:
            continue
        dist = installed.get(name)
        if dist is None:
            if name not in extra_pins:
                raise BuildError(f"python: {needer} needs {name} on Python {IMAGE_PYTHON}; the virtualenv has none "
                                 "(pin it in stack/images/catalogue.py EXTRA_PINS, or run make setup)")  # fmt: skip
            fetched[name] = extra_pins[name]
            continue
        if name in pins and dist.version != pins[name]:
            raise BuildError(f"python: {name} {dist.version} is installed, requirements.txt pins {pins[name]}; "
                             "run make setup")  # fmt: skip
        wanted.setdefault(name, set()).add(extra)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(_marker_environment(extra)):
                todo += [(canonicalize_name(req.name), e, name) for e in ("", *req.extras)]
    return [installed[name] for name in sorted(wanted)], dict(sorted(fetched.items()))


def stage_fetched(pins: dict[str, str], stage: Path, wheels: Path) -> None:
    """Install the pinned wheels the virtualenv lacks into the site directory (downloaded once
    into ``wheels``, for the image's Python and platform)."""
    if not pins:
        return
    wanted = [f"{name}=={version}" for name, version in pins.items()]
    major, minor, _ = IMAGE_PYTHON.split(".")
    command("python: pip download", [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                      "--only-binary=:all:", f"--python-version={major}{minor}",
                                      f"--dest={wheels}", *wanted])  # fmt: skip
    command("python: pip install", [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                                     "--no-index", f"--find-links={wheels}", f"--target={stage / SITE}",
                                     *wanted])  # fmt: skip
    shutil.rmtree(stage / SITE / "bin", ignore_errors=True)


def stage_distributions(dists: Iterable[metadata.Distribution], stage: Path) -> int:
    """Copy the files each distribution installed into the site directory (not its scripts,
    whose first line names the virtualenv, nor its bytecode); returns how many files."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    target = stage / SITE
    copied = 0
    for dist in dists:
        for file in dist.files or []:
            source = Path(str(file.locate())).resolve() if file.locate() else None
            if source is None or not source.is_relative_to(site) or "__pycache__" in source.parts:
                continue
            if source.suffix == ".pyc" or not source.is_file():
                continue
            dest = target / source.relative_to(site)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
            copied += 1
    return copied


def project_files(checkout: Path) -> list[str]:
    """The project's packages (pyproject.toml's list) and k8s/ manifests: the files git tracks or
    would track there (the working tree's, uncommitted changes included)."""
    config = tomllib.loads((checkout / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]]
    listed = command("python: project files", ["git", "-C", str(checkout), "ls-files", "-z", "--cached", "--others",
                                               "--exclude-standard", "--", *packages, "k8s"])  # fmt: skip
    return sorted(p for p in set(listed.split("\0")) if p and (checkout / p).is_file())


def stage_project(checkout: Path, stage: Path) -> int:
    """The project in ``stage/opt/clover``: its files, the protobuf modules generated from
    ``protos/``, the C extension built, a ``.pth`` file and the console scripts; returns how many
    files."""
    target = stage / PROJECT
    files = project_files(checkout)
    for relative in files:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout / relative, target / relative)
    protos = sorted(p for p in files if p.startswith("protos/") and p.endswith(".proto"))
    command("python: protoc", [sys.executable, "-m", "grpc_tools.protoc", f"-I{checkout}", f"--python_out={target}",
                               f"--grpc_python_out={target}", f"--descriptor_set_out={target}/protos/clover.desc",
                               "--include_imports", *protos], cwd=checkout)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="clover-build-ext-") as temp:
        command("python: C extension", [sys.executable, str(checkout / "setup.py"), "-q", "build_ext",
                                        f"--build-lib={target}", f"--build-temp={temp}"], cwd=checkout)  # fmt: skip
    if not list((target / "clovisor").glob("_spanwire.*.so")):
        raise BuildError("python: the C extension clovisor/_spanwire was not built")
    site = stage / SITE
    site.mkdir(parents=True, exist_ok=True)
    (site / "clover.pth").write_text(f"/{PROJECT}\n")
    scripts = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]["scripts"]
    bin_dir = stage / "usr/local/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, entry in scripts.items():
        module, _, function = entry.partition(":")
        wrapper = bin_dir / name
        wrapper.write_text(f"#!/usr/bin/python3\nimport sys\n\nfrom {module} import {function}\n\n"
                           f"sys.exit({function}())\n")  # fmt: skip
        wrapper.chmod(0o755)
    return sum(1 for p in stage.rglob("*") if p.is_file())


def compile_tree(stage: Path, relative: str) -> None:
    """Compile every module below ``stage/relative`` as the image will see it (``/relative``)."""
    root = stage / relative
    done = subprocess.run(["nice", "-n", "19", sys.executable, "-m", "compileall", "-q", "-j", "0",
                           "--invalidation-mode", "unchecked-hash", "-d", f"/{relative}", str(root)],
                          capture_output=True, text=True)  # fmt: skip
    # A few distributions ship files that are not meant to compile (templates, Python 2 examples):
    # compileall reports them and goes on; only a tree with no bytecode at all is a failure.
    if done.returncode != 0 and not any(root.rglob("*.pyc")):
        raise BuildError(f"python: compileall {relative} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
