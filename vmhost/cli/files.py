"""vmhost ws cp: copy files between this machine and a workspace, like `docker cp`."""

import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from vmhost.cli.base import fail, run, workspaces_app
from vmhost.errors import InvalidInput, NotFound, VmhostError, WorkspaceNotFound

if TYPE_CHECKING:
    import tarfile

    from vmhost.cli.client import VmhostClient

TAR = "application/x-tar"
RAW = "application/octet-stream"
CHUNK = 1024 * 1024


def split_remote(argument: str) -> tuple[str | None, str]:
    """'NAME:PATH' -> (NAME, PATH); a local path (anything else, or starting with '/' or '.') -> (None, path)."""
    name, sep, path = argument.partition(":")
    if not sep or not name or argument.startswith(("/", ".")):
        return None, argument
    return name, path or "/workspace"


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def _remote_stat(client: "VmhostClient", name: str, path: str) -> dict[str, Any] | None:
    try:
        from vmhost.cli.client import API

        return client.request("GET", f"{API}/workspaces/{name}/files/stat", params={"path": path})
    except WorkspaceNotFound:
        raise
    except NotFound:
        return None


def upload(client: "VmhostClient", local: Path, name: str, remote: str) -> str:
    import tarfile
    import tempfile

    if not local.exists():
        raise InvalidInput(f"no such file or directory: {local}")
    stat = _remote_stat(client, name, remote)
    existing_directory = stat["path"] if stat is not None and stat["kind"] == "directory" else None
    if local.is_dir():
        if stat is not None and existing_directory is None:
            raise InvalidInput(f"cannot copy directory {local} onto {name}:{remote}, which is not a directory")
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                if existing_directory is not None:  # like docker cp: DIR into an existing directory lands as DIR/
                    tar.add(local, arcname=local.name)
                else:
                    for child in sorted(local.iterdir()):
                        tar.add(child, arcname=child.name)
            archive.seek(0)
            done = client.put_content(f"/workspaces/{name}/files", _chunks(archive), TAR, {"path": remote})
        return f"{done['path']} ({done['entries']} entries)"
    if existing_directory is not None:
        remote = posixpath.join(existing_directory, local.name)
    elif remote.endswith("/"):
        raise InvalidInput(f"{name}:{remote} is not an existing directory")
    with open(local, "rb") as handle:
        done = client.put_content(f"/workspaces/{name}/files", _chunks(handle), RAW, {"path": remote})
    return done["path"]


def _renamed(archive: "tarfile.TarFile", top: str, new: str) -> "Iterator[tarfile.TarInfo]":
    """The archive's members with their first path component `top` renamed to `new`."""
    def rename(path: str) -> str:
        return new + path[len(top):] if path == top or path.startswith(top + "/") else path

    for member in archive:
        yield member.replace(name=rename(member.name),
                             linkname=rename(member.linkname) if member.islnk() else member.linkname, deep=False)


def download(client: "VmhostClient", name: str, remote: str, local: Path) -> str:
    import tarfile
    import tempfile

    with client.get_stream(f"/workspaces/{name}/files", {"path": remote}) as response:
        is_tar = response.headers.get("content-type", "").startswith(TAR)
        if not is_tar:
            target = local / posixpath.basename(remote.rstrip("/")) if local.is_dir() else local
            with open(target, "wb") as handle:
                handle.writelines(response.iter_bytes())
            return str(target)
        with tempfile.TemporaryFile() as spool:
            for chunk in response.iter_bytes():
                spool.write(chunk)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r:") as archive:
                if local.is_dir():  # like docker cp: lands inside as its own name
                    archive.extractall(local, filter="data")
                    return str(local / posixpath.basename(remote.rstrip("/")))
                first = archive.next()
                if first is None:
                    raise tarfile.ReadError("the daemon sent an empty archive")
                top = first.name.split("/")[0]
                archive.extractall(local.parent, members=_renamed(archive, top, local.name), filter="data")
    return str(local)


def _locally(copy: Callable[["VmhostClient"], str]) -> Callable[["VmhostClient"], str]:
    """`copy` with this machine's file errors as one readable error."""
    def guarded(client: "VmhostClient") -> str:
        import tarfile

        try:
            return copy(client)
        except (OSError, tarfile.TarError) as exc:
            raise VmhostError(f"cannot copy: {exc}") from exc

    return guarded


@workspaces_app.command("cp")
def ws_cp(
    source: Annotated[str, typer.Argument(help="LOCAL_PATH, or NAME:PATH in a workspace.")],
    target: Annotated[str, typer.Argument(help="NAME:PATH in a workspace, or LOCAL_PATH.")],
) -> None:
    """Copy a file or directory into or out of a workspace, like 'docker cp' (NAME:PATH on one side)."""
    source_ws, source_path = split_remote(source)
    target_ws, target_path = split_remote(target)
    if source_ws is None and target_ws is not None:
        copied = run(_locally(lambda c: upload(c, Path(source_path), target_ws, target_path)))
        message = f"copied {source} to {target_ws}:{copied}"
    elif source_ws is not None and target_ws is None:
        copied = run(_locally(lambda c: download(c, source_ws, source_path, Path(target_path))))
        message = f"copied {source} to {copied}"
    else:
        fail(InvalidInput("name a workspace on exactly one side, as NAME:PATH (e.g. vmhost ws cp notes.txt web:/tmp)"))
    from vmhost.cli import render

    render.out().print(message, markup=False)
