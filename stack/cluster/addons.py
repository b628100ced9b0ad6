"""Keeps the cluster's add-on manifests applied (the cluster-dns part), as kube-addon-manager did,
and provisions persistent volumes (``stack/cluster/storage.py``).

``python -m stack.cluster.addons --kubectl K --kubeconfig C [--volumes V] DIR`` applies every
``*.yaml`` in DIR now and every ``--every`` seconds, so an add-on deleted by hand comes back;
with ``--volumes`` it also gives pending claims of the class ``clover-local`` a directory under V
(every ``--provision-every`` seconds). SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def apply(kubectl: str, kubeconfig: str, directory: Path) -> bool:
    # --force: an add-on whose immutable fields changed (a StorageClass's binding mode) is replaced.
    done = subprocess.run([kubectl, "--kubeconfig", kubeconfig, "apply", "--force", "-f", str(directory)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    changed = [line for line in done.stdout.splitlines() if not line.endswith(" unchanged")]
    stamp = time.strftime("%H:%M:%S")
    for line in changed + done.stderr.splitlines():
        print(f"{stamp} {line}", flush=True)
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--every", type=float, default=30.0)
    parser.add_argument("--volumes", type=Path, default=None)
    parser.add_argument("--provision-every", type=float, default=2.0)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ok = False
    provisioner = None
    next_apply = 0.0
    while not stop.is_set():
        if time.monotonic() >= next_apply:
            try:
                ok = apply(args.kubectl, args.kubeconfig, args.directory)
            except subprocess.TimeoutExpired:
                ok = False
            # Until the first apply works (the API server may still be starting) try every 2 s.
            next_apply = time.monotonic() + (args.every if ok else 2.0)
        if args.volumes is not None:
            provisioner = provision(provisioner, args.kubeconfig, args.volumes)
        stop.wait(min(args.provision_every, max(0.1, next_apply - time.monotonic())))
    return 0


def provision(provisioner: Any, kubeconfig: str, volumes: Path) -> Any:
    """One pass of the volume provisioner (made, and orphans collected, on the first pass)."""
    from stack.cluster import storage

    try:
        if provisioner is None:
            made = storage.provisioner(kubeconfig, volumes)
            made.collect_orphans()
            provisioner = made
        provisioner.run_once()
    except Exception as exc:  # the API server restarting must not end the loop
        print(f"{time.strftime('%H:%M:%S')} storage: {type(exc).__name__}: {exc}"[:500], flush=True)
    return provisioner


if __name__ == "__main__":
    sys.exit(main())
