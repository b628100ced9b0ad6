"""Debian root file systems: ``debootstrap --variant=minbase`` and ``apt-get`` in a chroot.

The mirrors are the ones apt uses on this machine (its bookworm, bookworm-updates and
bookworm-security sources), written into the image as its own apt sources. Packages install
without recommends and without documentation, manual pages or translations (a dpkg filter, as
Debian's slim images do), no service starts (policy-rc.d), and apt's lists and caches are
removed afterwards. Every chroot runs in a private mount namespace (``unshare --mount``), so the
``/proc`` it mounts disappears with it whatever happens.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stack.cluster.steps import BuildError, command

SUITE = "bookworm"
SUITES = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_SOURCES = Path("/etc/apt")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What dpkg leaves out of every package installed after the base system (licences stay).
DPKG_FILTER = """\
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
"""
# Removed after every installation (and from what debootstrap installed).
LEFTOVERS = (
    "var/lib/apt/lists", "var/cache/apt", "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "var/log",
    "var/cache/ldconfig/aux-cache", "tmp", "var/tmp", "usr/share/man", "usr/share/info", "usr/share/lintian",
    "usr/sbin/policy-rc.d", "root/.cache",
)  # fmt: skip
RECREATED = {"var/lib/apt/lists/partial": 0o700, "var/cache/apt/archives/partial": 0o700, "var/log": 0o755,
             "tmp": 0o1777, "var/tmp": 0o1777}  # fmt: skip


@dataclass(frozen=True)
class Source:
    """One apt source: a mirror and the suites taken from it."""

    uri: str
    suites: tuple[str, ...]

    def deb822(self) -> str:
        return (f"Types: deb\nURIs: {self.uri}\nSuites: {' '.join(self.suites)}\nComponents: main\n"
                f"Signed-By: {KEYRING}\n")  # fmt: skip


def _host_entries(apt_dir: Path) -> list[tuple[str, str]]:
    """(uri, suite) of every ``deb`` source apt reads on this machine."""
    found: list[tuple[str, str]] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                found.append((words[1], words[2]))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "#")):
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                found += [(uri, suite) for uri in fields.get("uris", "").split() for suite in fields["suites"].split()]
    return found


def host_sources(apt_dir: Path = APT_SOURCES) -> list[Source]:
    """The Debian mirrors apt uses here for bookworm, -updates and -security, grouped by mirror."""
    by_uri: dict[str, list[str]] = {}
    for uri, suite in _host_entries(apt_dir):
        taken = by_uri.setdefault(uri.rstrip("/"), [])
        if suite in SUITES and suite not in taken:
            taken.append(suite)
    suites = {s for found in by_uri.values() for s in found}
    if SUITE not in suites:
        raise BuildError(f"debian: apt has no '{SUITE}' source in {apt_dir}/sources.list(.d) to build images from")
    return [Source(uri, tuple(s)) for uri, s in by_uri.items() if s]


def main_mirror(sources: Sequence[Source]) -> str:
    return next(s.uri for s in sources if SUITE in s.suites)


def chroot(root: Path, script: str, step: str) -> str:
    """Run ``script`` (sh) inside ``root`` with /proc mounted, at the lowest priority."""
    inner = (f'mount -t proc proc "$0/proc" && exec chroot "$0" /usr/bin/env -i PATH={PATH} '
             'DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root sh -ec "$1"')  # fmt: skip
    return command(step, ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, str(root), script],
                   nice=True)  # fmt: skip


def bootstrap(target: Path, sources: Sequence[Source], step: str) -> None:
    """A minbase bookworm in ``target`` (which must not exist), set up for the installs to come."""
    argv = ["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase", SUITE, str(target),
            main_mirror(sources)]  # fmt: skip
    command(step, argv, nice=True)
    (target / "etc/apt/sources.list").unlink(missing_ok=True)
    (target / "etc/apt/sources.list.d/debian.sources").write_text("\n".join(s.deb822() for s in sources))
    (target / "etc/dpkg/dpkg.cfg.d/clover-slim").write_text(DPKG_FILTER)
    for directory in ("usr/share/doc", "usr/share/locale"):
        _prune_docs(target / directory)
    (target / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    (target / "etc/hostname").write_text("localhost\n")


def _prune_docs(directory: Path) -> None:
    """What the dpkg filter would have left out of ``usr/share/doc`` or ``usr/share/locale``."""
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_symlink() or not path.is_dir():
            if path.name not in ("copyright", "locale.alias"):
                path.unlink()
        elif not any(path.iterdir()):
            path.rmdir()


def install(root: Path, packages: Sequence[str], step: str, upgrade: bool = False) -> dict[str, str]:
    """``apt-get install`` ``packages`` into ``root`` (after ``upgrade`` when asked), then tidy
    up; returns the installed version of each package asked for."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf", follow_symlinks=True)
    (root / "usr/share/man/man1").mkdir(parents=True, exist_ok=True)  # some postinsts expect it
    script = ["apt-get -q update"]
    if upgrade:
        script.append("apt-get -q -y upgrade")
    script.append("apt-get -q -y install --no-install-recommends " + " ".join(packages))
    script.append("apt-get clean")
    chroot(root, " && ".join(script), step)
    tidy(root)
    return versions(root, packages)


def tidy(root: Path) -> None:
    """Remove apt's lists and caches, logs, temporary files and documentation."""
    for pattern in LEFTOVERS:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    for relative, mode in RECREATED.items():
        (root / relative).mkdir(parents=True, exist_ok=True)
        (root / relative).chmod(mode)
    (root / "etc/resolv.conf").write_text("")


def versions(root: Path, packages: Sequence[str]) -> dict[str, str]:
    """The installed version of each of ``packages`` in ``root`` (dpkg's database there)."""
    done = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${Version}\n",
                           *packages], capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"dpkg-query in {root}: {done.stderr.strip()}")
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if line)


def add_user(root: Path, name: str, uid: int, home: str) -> None:
    """A system user and its group, as useradd would add them (no password, no shell)."""
    for path, line in (("etc/passwd", f"{name}:x:{uid}:{uid}::{home}:/usr/sbin/nologin"),
                       ("etc/group", f"{name}:x:{uid}:"), ("etc/shadow", f"{name}:!:0::::::"),
                       ("etc/gshadow", f"{name}:!::")):  # fmt: skip
        file = root / path
        lines = file.read_text().splitlines() if file.exists() else []
        if not any(existing.split(":", 1)[0] == name for existing in lines):
            file.write_text("\n".join([*lines, line]) + "\n")
