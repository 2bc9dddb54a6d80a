"""The files of the fake engine's containers, volumes and images, in memory: each a table of entries by
path, copied in and out as tar archives, and stat'ed the way Docker reports a path."""

from __future__ import annotations

import io
import posixpath
import tarfile
import time
from collections.abc import Generator
from dataclasses import dataclass

from vmhost.core.engines.base import PathStat

MOUNT = "/workspace"  # where a container's volume is mounted (ContainerSpec.volume)
# Go's os.FileMode bits, as Docker reports them in a path's stat (see PathStat.kind)
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27


@dataclass(frozen=True)
class Entry:
    """A file, directory or link in a container's filesystem or a volume."""

    type: bytes  # a tarfile type: REGTYPE, DIRTYPE, SYMTYPE, ...
    mode: int
    data: bytes = b""
    linkname: str = ""
    mtime: float = 0.0


Files = dict[str, Entry]  # absolute path (inside a volume: relative to its mount) -> entry


def visible(own: Files, mounted: Files) -> Files:
    """Everything a container sees, by absolute path: its `own` files, its volume's over /workspace."""
    kept = {path: entry for path, entry in own.items() if path != MOUNT and not path.startswith(MOUNT + "/")}
    return {**kept, MOUNT: Entry(tarfile.DIRTYPE, 0o755), **{MOUNT + path: entry for path, entry in mounted.items()}}


def stat_of(files: Files, path: str) -> PathStat | None:
    """The stat of `path` among what a container sees (see `visible`), or None when nothing is there."""
    entry = files.get(path)
    if entry is None and (path == "/" or any(p.startswith(path + "/") for p in files)):
        entry = Entry(tarfile.DIRTYPE, 0o755)  # a directory only implied by what is under it
    if entry is None:
        return None
    kind = {tarfile.DIRTYPE: GO_MODE_DIR, tarfile.SYMTYPE: GO_MODE_SYMLINK}.get(entry.type, 0)
    return PathStat(name=posixpath.basename(path) or "/", size=len(entry.data), mode=entry.mode | kind,
                    mtime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.mtime)), link_target=entry.linkname)


def unpack(archive: bytes, target: str, own: Files, mounted: Files) -> None:
    """Unpack a tar into the directory `target` of a container: what lands under /workspace goes to
    its volume's files (`mounted`), the rest to its `own`. tarfile.TarError when it is not a tar."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar:
            content = tar.extractfile(member) if member.isfile() else None
            files, key = _place(own, mounted, posixpath.normpath(posixpath.join(target, member.name)))
            if key != "/":
                files[key] = Entry(member.type, member.mode, content.read() if content else b"", member.linkname,
                                   member.mtime)


def tar_of(files: Files, top: str) -> bytes:
    """A tar of `top` and what is under it among `files`, named from top's base name (as Docker does)."""
    base = posixpath.basename(top) or "."
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if top not in files:
            tar.addfile(_tar_info(base, Entry(tarfile.DIRTYPE, 0o755)))
        prefix = top.rstrip("/") + "/"
        for path in sorted(files):
            if path == top or path.startswith(prefix):
                entry = files[path]
                info = _tar_info(posixpath.join(base, path[len(prefix):]) if path != top else base, entry)
                tar.addfile(info, io.BytesIO(entry.data) if entry.type in (tarfile.REGTYPE, tarfile.AREGTYPE)
                            else None)
    return buffer.getvalue()


def chunks(data: bytes, size: int = 64 * 1024) -> Generator[bytes, None, None]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _place(own: Files, mounted: Files, path: str) -> tuple[Files, str]:
    """The file table `path` lives in (the volume's under /workspace, else the container's own) and its
    key there ("/" for the root of either)."""
    if path == MOUNT or path.startswith(MOUNT + "/"):
        return mounted, "/" + path[len(MOUNT):].lstrip("/")
    return own, path


def _tar_info(name: str, entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = entry.type, entry.mode, entry.linkname, entry.mtime
    info.size = len(entry.data) if entry.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    return info
