"""The images the local cluster runs: pause (the pod sandbox), CoreDNS, and a busybox toolbox."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stack.cluster import oci, versions

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static


@dataclass(frozen=True)
class ImageSpec:
    entries: list[oci.Entry]
    entrypoint: list[str]
    cmd: list[str]


def _etc() -> list[oci.Entry]:
    return [oci.Entry("tmp", mode=0o1777), oci.Entry("root", mode=0o700)]


def pause(bin_dir: Path) -> ImageSpec:
    return ImageSpec([oci.Entry("pause", bin_dir / "pause")], ["/pause"], [])


def coredns(bin_dir: Path) -> ImageSpec:
    return ImageSpec([oci.Entry("coredns", bin_dir / "coredns"), *_etc()], ["/coredns"], [])


def busybox(_: Path) -> ImageSpec:
    """Debian's static busybox with a link per applet (``sh``, ``wget``, ``nslookup``, ``nc`` ...)."""
    listed = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True).stdout
    links = [oci.Entry(path, link="/bin/busybox") for path in listed.split() if path != "bin/busybox"]
    return ImageSpec([oci.Entry("bin/busybox", BUSYBOX), *links, *_etc()], [], ["sh"])


IMAGES: dict[str, Callable[[Path], ImageSpec]] = {
    versions.PAUSE_IMAGE: pause,
    versions.COREDNS_IMAGE: coredns,
    versions.BUSYBOX_IMAGE: busybox,
}


def write(target: Path, name: str, spec: ImageSpec) -> str:
    """Write ``name`` to the OCI archive ``target``; returns the manifest digest."""
    return oci.write_archive(target, name, spec.entries, spec.entrypoint, spec.cmd)


def import_all(archives: list[Path], ctr: list[str]) -> None:
    """Import the archives into containerd's ``k8s.io`` namespace (``ctr`` = the ctr command line)."""
    for archive in archives:
        subprocess.run([*ctr, "-n", "k8s.io", "images", "import", str(archive)], check=True, capture_output=True)
