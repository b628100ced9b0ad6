"""One image as an OCI archive: a tar of an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/...``) holding its config, its manifest and its layers.

The index names the image twice: ``io.containerd.image.name`` (the full reference, which
``ctr images import`` uses) and ``org.opencontainers.image.ref.name`` (the tag, which skopeo's
``oci-archive:`` transport uses). Short names get Docker's defaults (``opnfv/x:1`` is
``docker.io/opnfv/x:1``), which is how the kubelet looks an image up.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stack.images.layers import EPOCH, MEDIA_TYPE, Layer

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class RunConfig:
    """How the image runs (the ``config`` object of an OCI image config)."""

    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    ports: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        config: dict[str, object] = {
            "Entrypoint": list(self.entrypoint) or None,
            "Cmd": list(self.cmd) or None,
            "Env": [f"{k}={v}" for k, v in self.env.items()],
            "WorkingDir": self.workdir,
            "Labels": dict(self.labels),
        }
        if self.user:
            config["User"] = self.user
        if self.ports:
            config["ExposedPorts"] = {p if "/" in p else f"{p}/tcp": {} for p in self.ports}
        return {k: v for k, v in config.items() if v is not None}


def normalized(reference: str) -> str:
    """The full reference, as containerd's CRI plugin (and Docker) spell it."""
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        name, tag = reference, "latest"
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob_info(path: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = size, 0o644, EPOCH
    return info


def image_documents(layers: Sequence[Layer], run: RunConfig) -> tuple[bytes, bytes]:
    """The image's config and manifest, as written (canonical JSON)."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": run.as_json(),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"clover layer {layer.name}"} for layer in layers],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": _digest(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_TYPE, "digest": layer.digest, "size": layer.size} for layer in layers],
    }
    return config_bytes, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def write_archive(target: Path, reference: str, layers: Sequence[Layer], store: Path, run: RunConfig) -> str:
    """Write the image ``reference`` to the archive ``target`` (atomically); returns the
    manifest digest."""
    full = normalized(reference)
    config_bytes, manifest_bytes = image_documents(layers, run)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": _digest(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": full,
                                "org.opencontainers.image.ref.name": full.rpartition(":")[2]},
            }
        ],
    }  # fmt: skip
    small = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps(index, sort_keys=True, separators=(",", ":")).encode(),
        f"blobs/sha256/{_digest(config_bytes)[7:]}": config_bytes,
        f"blobs/sha256/{_digest(manifest_bytes)[7:]}": manifest_bytes,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    draft = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        with tarfile.open(draft, "w", format=tarfile.PAX_FORMAT) as tar:
            for directory in ("blobs", "blobs/sha256"):
                info = _blob_info(directory, 0)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for path, data in small.items():
                tar.addfile(_blob_info(path, len(data)), io.BytesIO(data))
            written = set()
            for layer in layers:
                if layer.digest in written:
                    continue
                written.add(layer.digest)
                with open(layer.blob(store), "rb") as blob:
                    tar.addfile(_blob_info(f"blobs/sha256/{layer.digest[7:]}", layer.size), blob)
        draft.replace(target)
    finally:
        draft.unlink(missing_ok=True)
    return _digest(manifest_bytes)
