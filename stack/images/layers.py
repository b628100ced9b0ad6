"""Image layers: gzip'd tars of a tree, of the difference between two trees, or of chosen files.

Every member gets the same modification time and numeric owners only, and members are written
in path order, so the same files always make the same layer digest. Layers live in a
content-addressed store (``blobs/sha256/<digest>``) beside a small JSON record per layer name.
"""

from __future__ import annotations

import filecmp
import gzip
import hashlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Protocol, cast

MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# 2024-01-01T00:00:00Z: the modification time of every member (not 0: zip refuses pre-1980 dates).
EPOCH = 1704067200
# Mount points the runtime fills: the directory is kept, never its contents.
RUNTIME_MOUNTS = ("dev", "proc", "sys")
WHITEOUT = ".wh."


@dataclass(frozen=True)
class Member:
    """One path of a layer: a copy of ``source`` (file, directory or symlink; lstat'ed), a
    directory of its own when ``source`` is None, or a whiteout hiding the path below."""

    path: str
    source: Path | None = None
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    whiteout: bool = False


@dataclass(frozen=True)
class Layer:
    """A layer in the store: the digest of its gzip'd tar, the digest of the tar (``diff_id``)."""

    name: str
    digest: str
    diff_id: str
    size: int
    unpacked: int
    members: int

    def blob(self, store: Path) -> Path:
        return store / "blobs" / "sha256" / self.digest.removeprefix("sha256:")


def record_path(store: Path, name: str) -> Path:
    return store / "layers" / f"{name}.json"


def load(store: Path, name: str) -> Layer:
    return Layer(**json.loads(record_path(store, name).read_text()))


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def tree(root: Path, prefix: str = "") -> Iterator[Member]:
    """Every path below ``root`` (placed under ``prefix`` in the image), the runtime's mount
    points left empty."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = _relative(root, here)
        if rel in RUNTIME_MOUNTS:
            dirnames.clear()
            filenames = []
        for name in sorted(dirnames) + sorted(filenames):
            path = here / name
            target = f"{prefix}/{_relative(root, path)}".strip("/")
            yield Member(target, path)


def _same(lower: Path, upper: Path, a: os.stat_result, b: os.stat_result) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return False
    if (a.st_mode & 0o7777, a.st_uid, a.st_gid) != (b.st_mode & 0o7777, b.st_uid, b.st_gid):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(lower) == os.readlink(upper)
    if stat.S_ISREG(a.st_mode):
        if a.st_size != b.st_size:
            return False
        return a.st_mtime_ns == b.st_mtime_ns or filecmp.cmp(lower, upper, shallow=False)
    return True


def _paths(root: Path) -> dict[str, os.stat_result]:
    return {m.path: os.lstat(m.source) for m in tree(root) if m.source is not None}


def diff(lower: Path, upper: Path) -> list[Member]:
    """What turns the tree ``lower`` into ``upper``: new and changed paths (with the directories
    above them), and a whiteout for each topmost path that is gone."""
    below, above = _paths(lower), _paths(upper)
    changed = {p for p, st in above.items() if p not in below or not _same(lower / p, upper / p, below[p], st)}
    gone = {p for p in below if p not in above}
    gone = {p for p in gone if os.path.dirname(p) not in gone}
    wanted = set(changed)
    for path in changed | gone:
        parent = os.path.dirname(path)
        while parent and parent not in wanted:
            wanted.add(parent)
            parent = os.path.dirname(parent)
    members = [Member(p, upper / p) for p in wanted]
    members += [Member(os.path.join(os.path.dirname(p), WHITEOUT + os.path.basename(p)), whiteout=True) for p in gone]
    return members


def with_parents(members: Iterable[Member], owned: Mapping[str, tuple[int, int]] | None = None) -> list[Member]:
    """``members`` and a root-owned directory for each missing directory above them (``owned``:
    a path's owner instead of root)."""
    found = {m.path: m for m in members}
    for path in list(found):
        parent = os.path.dirname(path)
        while parent and parent not in found:
            found[parent] = Member(parent)
            parent = os.path.dirname(parent)
    for path, (uid, gid) in (owned or {}).items():
        member = found.get(path, Member(path))
        found[path] = Member(member.path, member.source, uid, gid, member.mode, member.whiteout)
    return list(found.values())


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _Digesting:
    """A write-only stream that hashes and counts what goes through it."""

    def __init__(self, out: _Writable) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.count += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def _info(member: Member, links: dict[tuple[int, int], str]) -> tuple[tarfile.TarInfo, Path | None]:
    info = tarfile.TarInfo(member.path)
    info.mtime, info.uname, info.gname = EPOCH, "", ""
    if member.whiteout:
        info.type, info.mode, info.uid, info.gid = tarfile.REGTYPE, 0o644, 0, 0
        return info, None
    if member.source is None:
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, 0, 0
    else:
        st = os.lstat(member.source)
        info.mode, info.uid, info.gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(member.source)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                info.type, info.linkname = tarfile.LNKTYPE, links[key]
            else:
                links[key] = member.path
                info.type, info.size = tarfile.REGTYPE, st.st_size
        else:
            raise ValueError(f"{member.source}: not a file, directory or symlink")
    info.uid = info.uid if member.uid is None else member.uid
    info.gid = info.gid if member.gid is None else member.gid
    info.mode = info.mode if member.mode is None else member.mode
    content = member.source if info.type == tarfile.REGTYPE and member.source is not None else None
    return info, content


def _skippable(member: Member) -> bool:
    """Sockets, fifos and device nodes: nothing an image carries."""
    if member.source is None or member.whiteout:
        return False
    mode = os.lstat(member.source).st_mode
    return not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode))


def write(store: Path, name: str, members: Iterable[Member], level: int = 6) -> Layer:
    """Pack ``members`` into a layer in ``store`` under ``name``; returns its record."""
    blobs = store / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    chosen = sorted((m for m in members if not _skippable(m)), key=lambda m: m.path)
    links: dict[tuple[int, int], str] = {}
    unpacked = 0
    with tempfile.NamedTemporaryFile(dir=blobs, prefix=".layer-", delete=False) as raw:
        draft = Path(raw.name)
        try:
            packed = _Digesting(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=level, mtime=0) as gz:
                plain = _Digesting(gz)
                with tarfile.open(fileobj=cast(IO[bytes], plain), mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for member in chosen:
                        info, content = _info(member, links)
                        unpacked += info.size
                        if content is None:
                            tar.addfile(info)
                        else:
                            with open(content, "rb") as f:
                                tar.addfile(info, f)
        except BaseException:
            draft.unlink(missing_ok=True)
            raise
    layer = Layer(name, f"sha256:{packed.sha.hexdigest()}", f"sha256:{plain.sha.hexdigest()}", packed.count,
                  unpacked, len(chosen))  # fmt: skip
    draft.replace(layer.blob(store))
    record = record_path(store, name)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(asdict(layer), indent=1) + "\n")
    return layer


def prune(store: Path, keep: Iterable[str]) -> int:
    """Remove the blobs of ``store`` no layer record and no digest in ``keep`` names; returns how many."""
    wanted = {d.removeprefix("sha256:") for d in keep}
    records = store / "layers"
    if records.exists():
        wanted |= {json.loads(p.read_text())["digest"].removeprefix("sha256:") for p in records.glob("*.json")}
    removed = 0
    for blob in (store / "blobs" / "sha256").glob("*"):
        if blob.name not in wanted:
            blob.unlink()
            removed += 1
    return removed
