"""Talking to the cluster's containerd with Debian's ``ctr``: images in, containers out."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from stack.cluster.layout import ClusterPaths

NAMESPACE = "k8s.io"  # the CRI plugin's


def ctr(paths: ClusterPaths) -> list[str]:
    """The ``ctr`` command line for this cluster's containerd, in the CRI namespace."""
    return [shutil.which("ctr") or "/usr/bin/ctr", "--address", str(paths.containerd_socket), "-n", NAMESPACE]


def import_images(paths: ClusterPaths, archives: list[Path]) -> None:
    """Import OCI archives (their ``io.containerd.image.name`` names them)."""
    for archive in archives:
        done = subprocess.run([*ctr(paths), "images", "import", str(archive)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"importing {archive.name} into containerd failed: {done.stderr.strip()[-300:]}")


def kill_all(paths: ClusterPaths) -> int:
    """Kill every running container and pod sandbox (before containerd stops: its shims would keep
    them running, and a pod's watch would keep the API server from stopping). Returns how many."""
    listed = subprocess.run([*ctr(paths), "tasks", "ls", "-q"], capture_output=True, text=True, timeout=20)
    tasks = listed.stdout.split() if listed.returncode == 0 else []
    for task in tasks:
        subprocess.run([*ctr(paths), "tasks", "kill", "-a", "-s", "SIGKILL", task], capture_output=True, timeout=20)
    for task in tasks:
        subprocess.run([*ctr(paths), "tasks", "delete", "-f", task], capture_output=True, timeout=20)
    return len(tasks)


def loaded_record(paths: ClusterPaths) -> Path:
    """The images loaded by hand (``cloverctl build images --load``): reference -> archive."""
    return paths.root / "loaded-images.json"


def remember_loaded(paths: ClusterPaths, references: dict[str, str]) -> None:
    record = loaded_record(paths)
    known = json.loads(record.read_text()) if record.exists() else {}
    record.write_text(json.dumps({**known, **references}, indent=1) + "\n")


def reload_loaded(paths: ClusterPaths) -> list[str]:
    """Import again what was loaded by hand before the last ``down`` (containerd's store does
    not survive it, etcd's objects do: their pods need the images). Archives gone are skipped."""
    record = loaded_record(paths)
    if not record.exists():
        return []
    references = {ref: Path(archive) for ref, archive in json.loads(record.read_text()).items()}
    present = {ref: archive for ref, archive in references.items() if archive.exists()}
    import_images(paths, list(present.values()))
    return list(present)
