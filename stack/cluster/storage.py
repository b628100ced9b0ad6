"""Persistent volumes for the local cluster: the StorageClass ``clover-local`` (the default) and
its provisioner, run by the add-on process (``stack.cluster.addons``).

A claim of that class that is pending, once the scheduler has chosen the node of a pod that uses
it (the class binds WaitForFirstConsumer), gets a directory ``<volumes>/pvc-<claim uid>`` on this
machine, owned by the images' user (uid/gid 10001, the class's ``uid``/``gid`` parameters) and
mode 0750, and a hostPath PersistentVolume bound to it. A volume whose claim is deleted
(``Released``) loses its directory and its PersistentVolume: the class's reclaim policy is
Delete. Directories no PersistentVolume names are removed when the provisioner starts (left by
``local up --fresh``, which empties etcd). For one node only, as the name says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

CLASS = "clover-local"
PROVISIONER = "clover.local/hostpath"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
SELECTED_NODE = "volume.kubernetes.io/selected-node"  # set by the scheduler on a claim to provision
DEFAULT_OWNER = 10001  # the user of every image stack/images builds


def say(line: str) -> None:
    print(f"storage: {line}", flush=True)


class Provisioner:
    """One pass at a time (``run_once``): provision pending claims, delete released volumes."""

    def __init__(self, core: Any, storage: Any, volumes: Path):
        self.core, self.storage, self.volumes = core, storage, volumes

    def _ours(self, pv: Any) -> bool:
        return (pv.metadata.annotations or {}).get(PROVISIONED_BY) == PROVISIONER

    def _owner(self) -> tuple[int, int]:
        from kubernetes.client.exceptions import ApiException

        try:
            params = self.storage.read_storage_class(CLASS).parameters or {}
        except ApiException:
            params = {}
        return int(params.get("uid", DEFAULT_OWNER)), int(params.get("gid", DEFAULT_OWNER))

    def collect_orphans(self) -> list[str]:
        """Remove volume directories that no PersistentVolume names (at start)."""
        if not self.volumes.is_dir():
            return []
        named = {pv.spec.host_path.path for pv in self.core.list_persistent_volume().items
                 if self._ours(pv) and pv.spec.host_path}  # fmt: skip
        removed = []
        for directory in self.volumes.iterdir():
            if str(directory) not in named:
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory.name)
        if removed:
            say(f"removed {len(removed)} orphaned volume directories: {', '.join(removed)}")
        return removed

    def run_once(self) -> None:
        from kubernetes.client.exceptions import ApiException

        for claim in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if claim.status.phase != "Pending" or claim.spec.volume_name or claim.spec.storage_class_name != CLASS:
                continue
            if SELECTED_NODE not in (claim.metadata.annotations or {}):
                continue  # WaitForFirstConsumer: not until the scheduler has placed a pod using it
            try:
                self.provision(claim)
            except (ApiException, OSError) as exc:
                say(f"cannot provision {claim.metadata.namespace}/{claim.metadata.name}: {exc}")
        for pv in self.core.list_persistent_volume().items:
            if self._ours(pv) and pv.status.phase in ("Released", "Failed"):
                try:
                    self.remove(pv)
                except (ApiException, OSError) as exc:
                    say(f"cannot delete {pv.metadata.name}: {exc}")

    def provision(self, claim: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        name = f"pvc-{claim.metadata.uid}"
        path = self.volumes / name
        uid, gid = self._owner()
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
        path.chmod(0o750)
        size = (claim.spec.resources.requests or {}).get("storage", "1Gi")
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": claim.spec.access_modes or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": CLASS,
                "volumeMode": "Filesystem",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": claim.metadata.namespace,
                    "name": claim.metadata.name,
                    "uid": claim.metadata.uid,
                },
            },
        }
        try:
            self.core.create_persistent_volume(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return
        say(f"{claim.metadata.namespace}/{claim.metadata.name}: {name} ({size}) at {path}")

    def remove(self, pv: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        path = Path(pv.spec.host_path.path) if pv.spec.host_path else None
        if path is not None and path.parent == self.volumes:
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(ApiException):
            self.core.delete_persistent_volume(pv.metadata.name)
        say(f"{pv.metadata.name} deleted (its claim is gone)")


def provisioner(kubeconfig: str, volumes: Path) -> Provisioner:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    return Provisioner(client.CoreV1Api(api), client.StorageV1Api(api), volumes)


if __name__ == "__main__":  # a single pass, by hand: python -m stack.cluster.storage KUBECONFIG DIR
    Provisioner.run_once(provisioner(sys.argv[1], Path(sys.argv[2])))
