"""Copying files into and out of a workspace's container, like `docker cp`.

Paths are container paths: absolute, or relative to /workspace; they may not climb above `/`.
Uploaded archives are checked member by member and written again with every member under the
target directory, so nothing in them can land outside it: no absolute names, no `..`, no links
that point outside (also through chains of the archive's own links), no device files; and no more
unpacked bytes than the upload limit, however well they compress.
"""

from __future__ import annotations

import bz2
import copy
import gzip
import io
import lzma
import posixpath
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from vmhost.core.activity import Activity
from vmhost.core.engines import Engine, PathStat
from vmhost.core.models import Caller, Workspace, WorkspaceStatus
from vmhost.errors import InvalidInput, InvalidState, NotFound, PayloadTooLarge, ProviderError

WORKSPACE_DIR = "/workspace"
MAX_PATH = 4096
MAX_NAME = 255
CHUNK = 1024 * 1024
MAX_LINK_HOPS = 40  # as Linux allows


def container_path(path: str) -> str:
    """`path` made absolute (relative paths start in /workspace) and normalised; never above `/`."""
    if not path:
        raise InvalidInput("path is required")
    if "\x00" in path:
        raise InvalidInput("path must not contain NUL bytes")
    if len(path) > MAX_PATH:
        raise InvalidInput(f"path is longer than {MAX_PATH} characters")
    full = path if path.startswith("/") else f"{WORKSPACE_DIR}/{path}"
    depth = 0
    for part in full.split("/"):
        if part in ("", "."):
            continue
        if len(part.encode()) > MAX_NAME:
            raise InvalidInput(f"a name in path {path[:60]!r} is longer than {MAX_NAME} bytes")
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise InvalidInput(f"path {path!r} leads outside the container's filesystem")
    return "/" + posixpath.normpath(full).lstrip("/")


def _member_name(name: str) -> str:
    """A member's name relative to the extraction directory ('' for the directory itself)."""
    if "\x00" in name or name.startswith("/"):
        raise InvalidInput(f"archive member {name!r} has an absolute name; use names relative to the target")
    if ".." in name.split("/"):
        raise InvalidInput(f"archive member {name!r} climbs out of the target with '..'")
    normal = posixpath.normpath(name)
    return "" if normal == "." else normal


class _Extracted:
    """The symlinks an archive has made so far under the target directory, to resolve each later path
    the way the kernel will while extracting: through chains of links (`t -> .`, `u -> t/..`), where a
    lexical check sees nothing wrong. Paths are relative to the target; None means it leads outside."""

    def __init__(self) -> None:
        self.links: dict[str, str] = {}  # a symlink's resolved location -> its target as written

    def resolve(self, path: str, follow_last: bool) -> str | None:
        done: list[str] = []
        pending = path.split("/")[::-1]  # a stack: the next component is last
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    return None
                done.pop()
                continue
            target = self.links.get("/".join([*done, part]))
            if target is None or (not pending and not follow_last):
                done.append(part)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise InvalidInput(f"{path!r} in the archive goes through more than {MAX_LINK_HOPS} links")
            pending.extend(target.split("/")[::-1])
        return "/".join(done)

    def link_leaves(self, location: str, target: str) -> bool:
        return target.startswith("/") or \
            self.resolve(posixpath.join(posixpath.dirname(location), target), follow_last=True) is None

    def placed(self, member: tarfile.TarInfo, name: str, prefix: str) -> tarfile.TarInfo:
        """`member` (named `name`) as written under `prefix`: at the place the links before it lead to,
        a hard link to that of its target. Records the symlinks it makes."""
        where = self.resolve(name, follow_last=False)
        if where is None:
            raise InvalidInput(f"archive member {member.name!r} would be written outside the target "
                               "through a link earlier in the archive")
        placed = copy.copy(member)
        placed.name = posixpath.join(prefix, where)
        link = member.linkname if member.issym() else None
        if member.islnk():
            target = self.resolve(_member_name(member.linkname), follow_last=False)
            if not target:
                raise InvalidInput(f"archive member {member.name!r} links outside the target ({member.linkname!r})")
            placed.linkname = posixpath.join(prefix, target)
            link = self.links.get(target)  # a hard link to a symlink is that symlink again, here
        self.links.pop(where, None)  # a member replaces whatever was at its place
        if link is not None:
            if self.link_leaves(where, link):
                raise InvalidInput(f"archive member {member.name!r} links outside the target ({link!r})")
            self.links[where] = link
        return placed

    def check_links(self) -> None:
        """Every symlink as the archive leaves it: a later member may have changed where an earlier one leads."""
        for location, target in self.links.items():
            if self.link_leaves(location, target):
                raise InvalidInput(f"archive link {location!r} ({target!r}) leads outside the target "
                                   "through links later in the archive")


class _Limited(io.RawIOBase):
    """A reader that fails once more than `limit` bytes were read: an archive's unpacked size."""

    def __init__(self, source: IO[bytes] | io.BufferedIOBase, limit: int) -> None:
        self._source = source
        self._left = limit
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._source.read(min(len(buffer), self._left + 1))
        if len(data) > self._left:
            raise PayloadTooLarge(f"the archive unpacks to more than the upload limit of {self._limit} bytes "
                                  "(max_upload_bytes)")
        self._left -= len(data)
        buffer[:len(data)] = data
        return len(data)


def _decompressed(source: IO[bytes]) -> IO[bytes] | io.BufferedIOBase:
    """`source` (seekable) decompressed when it is gzip, bzip2 or xz; as it is otherwise."""
    magic = source.read(6)
    source.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=source, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(source)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(source)
    return source


def repack(source: IO[bytes], target: IO[bytes], directory: str, max_unpacked: int) -> int:
    """Check the tar (plain or compressed) in `source` and write it to `target` as a plain tar whose
    members all sit under `directory` (a normalised absolute path), each at the place the links
    before it lead to. Returns how many members. The tar, decompressed, may be `max_unpacked` bytes."""
    prefix = directory.lstrip("/")
    extracted = _Extracted()
    count = 0
    try:
        unpacked = io.BufferedReader(_Limited(_decompressed(source), max_unpacked), CHUNK)
        with tarfile.open(fileobj=unpacked, mode="r|") as archive, \
                tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT) as out:
            for member in archive:
                name = _member_name(member.name)
                if member.ischr() or member.isblk():
                    raise InvalidInput(f"archive member {member.name!r} is a device file; those are not copied")
                if not name:
                    continue  # the target directory itself
                out.addfile(extracted.placed(member, name, prefix),
                            archive.extractfile(member) if member.isfile() else None)
                count += 1
        extracted.check_links()
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
        raise InvalidInput(f"the body is not a readable tar archive: {exc}") from exc
    target.seek(0)
    return count


def single_file(source: IO[bytes], size: int, path: str, target: IO[bytes]) -> None:
    """A tar holding just `source` at `path` (absolute), mode 0644."""
    info = tarfile.TarInfo(path.lstrip("/"))
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    with tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT) as out:
        out.addfile(info, source)
    target.seek(0)


class _ChunkReader(io.RawIOBase):
    """A file-like view of an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._buffer))
        buffer[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def file_content(archive_chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The content of the one regular file in a streamed tar."""
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(archive_chunks), CHUNK), mode="r|") as archive:
        member = archive.next()
        handle = archive.extractfile(member) if member is not None else None
        if handle is None:
            return
        while chunk := handle.read(CHUNK):
            yield chunk


@dataclass(frozen=True)
class Download:
    path: str
    stat: PathStat
    chunks: Iterator[bytes]

    @property
    def is_file(self) -> bool:
        """A regular file comes as its content; anything else (a directory, a link) as a tar."""
        return self.stat.kind == "file"


@dataclass(frozen=True)
class Upload:
    path: str
    entries: int


class WorkspaceFiles:
    """`find(caller, ref)` is the workspace `ref` names for `caller` (Orchestrator.get). Reading or writing
    a workspace's files counts as activity on it (`activity`)."""

    def __init__(self, engine: Engine, find: Callable[[Caller, str], Workspace],
                 activity: Activity | None = None) -> None:
        self.engine = engine
        self.find = find
        self.activity = activity

    def _container(self, caller: Caller, ref: str) -> tuple[Workspace, str]:
        workspace = self.find(caller, ref)
        if self.activity is not None:
            self.activity.touch(workspace.id)
        if not workspace.container_id:
            raise InvalidState(f"workspace {workspace.name!r} has no container yet (status {workspace.status})")
        if workspace.status in (WorkspaceStatus.ERROR, WorkspaceStatus.DELETING):  # its container is gone or going
            raise InvalidState(f"workspace {workspace.name!r} is in status {workspace.status}"
                               f"{': ' + workspace.status_reason if workspace.status_reason else ''}; "
                               "rebuild or delete it")
        return workspace, workspace.container_id

    @contextmanager
    def _container_there(self, workspace: Workspace) -> Iterator[None]:
        """Docker finding no container (or not `/` in it) means the container went away under the workspace,
        in a race with a delete, rebuild or restore: a 409 naming the workspace, not a 502."""
        try:
            yield
        except ProviderError as exc:
            if not exc.extra.get("missing"):
                raise
            raise InvalidState(f"workspace {workspace.name!r} has no container now (status {workspace.status}); "
                               "wait for its operation to end, or rebuild it") from exc

    def _stat_if_any(self, workspace: Workspace, container_id: str, path: str) -> PathStat | None:
        with self._container_there(workspace):
            return self.engine.stat_path(container_id, path)

    def _stat(self, workspace: Workspace, container_id: str, path: str) -> PathStat:
        stat = self._stat_if_any(workspace, container_id, path)
        if stat is None:
            raise NotFound(f"no file or directory {path} in workspace {workspace.name!r}")
        return stat

    def stat(self, caller: Caller, ref: str, path: str) -> tuple[str, PathStat]:
        workspace, container_id = self._container(caller, ref)
        path = container_path(path)
        return path, self._stat(workspace, container_id, path)

    def download(self, caller: Caller, ref: str, path: str) -> Download:
        workspace, container_id = self._container(caller, ref)
        path = container_path(path)
        self._stat(workspace, container_id, path)
        with self._container_there(workspace):
            chunks, stat = self.engine.get_archive(container_id, path)
        return Download(path, stat, file_content(chunks) if stat.kind == "file" else chunks)

    def upload(self, caller: Caller, ref: str, path: str, body: IO[bytes], size: int, is_tar: bool,
               spool: IO[bytes], max_unpacked: int) -> Upload:
        """Write a file at `path`, or (`is_tar`) extract an archive into the directory `path` (made when
        missing) if it unpacks to at most `max_unpacked` bytes. `spool` is a scratch file for the checked
        archive."""
        caller.require_write()
        workspace, container_id = self._container(caller, ref)
        path = container_path(path)
        existing = self._stat_if_any(workspace, container_id, path)
        if is_tar:
            if existing is not None and existing.kind != "directory":
                raise InvalidState(f"{path} in workspace {workspace.name!r} is not a directory; "
                                   "an archive is extracted into a directory")
            entries = repack(body, spool, path, max_unpacked)
        else:
            if path == "/" or (existing is not None and existing.kind == "directory"):
                raise InvalidState(f"{path} in workspace {workspace.name!r} is a directory; name the file to write")
            single_file(body, size, path, spool)
            entries = 1
        with self._container_there(workspace):
            self.engine.put_archive(container_id, "/", spool)
        return Upload(path, entries)
