"""OCI image archives made from a few files, without a container engine.

The archive is an OCI image layout in a tar (``oci-layout``, ``index.json``, ``blobs/``) with
one uncompressed layer; ``ctr images import`` takes it, and the ``io.containerd.image.name``
annotation names the image. Everything is written deterministically (no timestamps), so the
same files make the same image digest."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class Entry:
    """One path in the image: a copy of ``source``, a symlink to ``link``, or a directory."""

    path: str
    source: Path | None = None
    link: str | None = None
    mode: int = 0o755


def _info(path: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _write_layer(layer: IO[bytes], entries: Sequence[Entry]) -> None:
    wanted = {e.path.strip("/"): e for e in entries}
    parents = {str(p) for path in wanted for p in Path(path).parents if str(p) != "."}
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(parents | set(wanted)):
            entry = wanted.get(path)
            if entry is None or (entry.source is None and entry.link is None):
                tar.addfile(_info(path, tarfile.DIRTYPE, entry.mode if entry else 0o755))
            elif entry.link is not None:
                tar.addfile(_info(path, tarfile.SYMTYPE, 0o777, link=entry.link))
            else:
                assert entry.source is not None
                size = entry.source.stat().st_size
                with open(entry.source, "rb") as f:
                    tar.addfile(_info(path, tarfile.REGTYPE, entry.mode, size), f)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _add_bytes(tar: tarfile.TarFile, path: str, data: bytes) -> None:
    tar.addfile(_info(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))


DEFAULT_ENV = ("PATH=/bin:/usr/bin:/sbin:/usr/sbin",)


def write_archive(target: Path, name: str, entries: Iterable[Entry], entrypoint: Sequence[str],
                  cmd: Sequence[str] = (), env: Sequence[str] = DEFAULT_ENV) -> str:  # fmt: skip
    """Write the image ``name`` (``registry/repo:tag``) to ``target``; returns its manifest digest."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".layer", delete=False) as layer_file:
        layer_path = Path(layer_file.name)
        _write_layer(layer_file, list(entries))
    try:
        layer_digest, layer_size = _sha256_file(layer_path), layer_path.stat().st_size
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "Cmd": list(cmd), "Env": list(env), "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": _digest(config_bytes), "size": len(config_bytes)},
            "layers": [{"mediaType": LAYER, "digest": f"sha256:{layer_digest}", "size": layer_size}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": MANIFEST, "digest": _digest(manifest_bytes), "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
            }],
        }  # fmt: skip
        draft = target.with_suffix(".draft")
        with tarfile.open(draft, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())
            tar.addfile(_info("blobs", tarfile.DIRTYPE, 0o755))
            tar.addfile(_info("blobs/sha256", tarfile.DIRTYPE, 0o755))
            _add_bytes(tar, f"blobs/sha256/{_digest(config_bytes)[7:]}", config_bytes)
            _add_bytes(tar, f"blobs/sha256/{_digest(manifest_bytes)[7:]}", manifest_bytes)
            with open(layer_path, "rb") as f:
                tar.addfile(_info(f"blobs/sha256/{layer_digest}", tarfile.REGTYPE, 0o644, layer_size), f)
        os.replace(draft, target)
        return _digest(manifest_bytes)
    finally:
        layer_path.unlink(missing_ok=True)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
