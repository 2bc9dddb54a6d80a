"""Files in and out of a workspace: raw files and tar archives over the API, `vmhost ws cp` like
`docker cp`, and the rules that keep paths and archive members where they belong. Copies run on one engine
and on a three-node Swarm (`on_engine`), where they go through the workspace's node."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from conftest import Daemon, OnEngine, create_ws


def read(docker_client: docker.DockerClient, workspace: dict, script: str) -> str:
    container = docker_client.containers.get(workspace["connection"]["container_id"])
    return container.exec_run(["sh", "-c", script]).output.decode()


class HardLink(str):
    """A hard link's target in `make_tar` (a plain str is a symlink's)."""


def make_tar(*members: tuple[str, bytes | None, bytes | str]) -> bytes:
    """(name, content or None, kind or link target): kind b"file"/b"dir", or a str link target (symlink)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, kind in members:
            info = tarfile.TarInfo(name)
            if isinstance(kind, HardLink):
                info.type, info.linkname = tarfile.LNKTYPE, kind
            elif isinstance(kind, str):
                info.type, info.linkname = tarfile.SYMTYPE, kind
            elif kind == b"dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


@pytest.fixture
def workspace(api: httpx.Client, name: str) -> dict:
    return create_ws(api, name)["workspace"]


@pytest.fixture
def engine_workspace(engine_api: httpx.Client, name: str) -> dict:
    return create_ws(engine_api, name)["workspace"]


def test_upload_and_download_raw_files_larger_than_the_json_limit(
        on_engine: OnEngine, engine_api: httpx.Client, engine_workspace: dict) -> None:
    workspace = engine_workspace
    files = f"/api/v1/workspaces/{workspace['name']}/files"
    content = os.urandom(3 * 1024 * 1024)  # more than max_body_bytes (1 MiB)
    response = engine_api.put(files, params={"path": "sub/dir/blob.bin"}, content=content)
    assert response.status_code == 200, response.text
    assert response.json() == {"path": "/workspace/sub/dir/blob.bin", "entries": 1}
    assert on_engine.sh(workspace, "wc -c < /workspace/sub/dir/blob.bin").strip() == str(len(content))

    downloaded = engine_api.get(files, params={"path": "/workspace/sub/dir/blob.bin"})
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == "application/octet-stream"
    assert downloaded.content == content

    # a relative path starts in /workspace; '..' may climb, but never above /
    assert engine_api.get(files, params={"path": "../etc/passwd"}).content.startswith(b"root:")
    escape = engine_api.get(files, params={"path": "/../../etc/passwd"})
    assert escape.status_code == 422 and "outside" in escape.json()["detail"]
    assert engine_api.get(files, params={"path": "a\x00b"}).status_code == 422
    missing = engine_api.get(files, params={"path": "nope.txt"})
    assert missing.status_code == 404 and "/workspace/nope.txt" in missing.json()["detail"]
    onto_directory = engine_api.put(files, params={"path": "sub"}, content=b"x")
    assert onto_directory.status_code == 409 and "is a directory" in onto_directory.json()["detail"]


def test_tar_upload_is_extracted_at_the_path_and_a_directory_downloads_as_tar(
        on_engine: OnEngine, engine_api: httpx.Client, engine_workspace: dict) -> None:
    workspace = engine_workspace
    files = f"/api/v1/workspaces/{workspace['name']}/files"
    archive = make_tar(("pkg", None, b"dir"), ("pkg/a.txt", b"alpha\n", b"file"), ("pkg/link", None, "a.txt"),
                       ("top.txt", b"top\n", b"file"))
    response = engine_api.put(files, params={"path": "/opt/unpacked"}, content=archive,
                       headers={"Content-Type": "application/x-tar"})
    assert response.status_code == 200, response.text
    assert response.json() == {"path": "/opt/unpacked", "entries": 4}
    assert on_engine.sh(workspace, "cat /opt/unpacked/top.txt /opt/unpacked/pkg/link") == "top\nalpha\n"

    downloaded = engine_api.get(files, params={"path": "/opt/unpacked"})
    assert downloaded.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(downloaded.content)) as tar:
        names = set(tar.getnames())
        assert {"unpacked", "unpacked/top.txt", "unpacked/pkg/a.txt", "unpacked/pkg/link"} <= names
        assert tar.getmember("unpacked/pkg/link").issym()

    stat = engine_api.get(f"{files}/stat", params={"path": "/opt/unpacked/pkg/link"}).json()
    assert stat["kind"] == "symlink" and stat["link_target"] == "/opt/unpacked/pkg/a.txt"


@pytest.mark.parametrize("members, complaint", [
    ((("/etc/evil", b"x", b"file"),), "absolute"),
    ((("../evil", b"x", b"file"),), "'..'"),
    ((("ok/../../evil", b"x", b"file"),), "'..'"),
    ((("link", None, "/etc/passwd"),), "links outside"),
    ((("deep/link", None, "../../etc"),), "links outside"),
    # each link lexically inside, but u is t/.. with t -> . : the target's parent
    ((("t", None, "."), ("u", None, "t/.."), ("u/evil", b"x", b"file")), "links outside"),
    # a's target stays inside while b leads deeper, not once b is replaced
    ((("b", None, "x/y"), ("a", None, "b/c/../.."), ("b", None, ".")), "leads outside"),
    # a hard link to sub/up is the symlink '..' again, now one level higher
    ((("sub/up", None, ".."), ("h", None, HardLink("sub/up")), ("h/evil", b"x", b"file")), "links outside"),
])
def test_tar_members_that_would_land_outside_the_target_are_refused(
        api: httpx.Client, docker_client: docker.DockerClient, workspace: dict, members: tuple,
        complaint: str) -> None:
    response = api.put(f"/api/v1/workspaces/{workspace['name']}/files", params={"path": "/workspace/in"},
                       content=make_tar(*members), headers={"Content-Type": "application/x-tar"})
    assert response.status_code == 422
    assert complaint in response.json()["detail"]
    assert read(docker_client, workspace, "ls /workspace /etc/evil /workspace/in 2>&1").count("evil") == 1


def test_an_archive_that_unpacks_past_the_upload_limit_is_413_and_leaves_nothing(
        make_daemon, docker_client: docker.DockerClient, name: str, tmp_path: Path) -> None:
    limit = 1024 * 1024
    scratch = tmp_path / "daemon-tmp"
    scratch.mkdir()
    limited = make_daemon({"VMHOST_MAX_UPLOAD_BYTES": str(limit), "TMPDIR": str(scratch)})
    zeros = make_tar(("zeros", bytes(50 * 1024 * 1024), b"file"))
    with limited.client() as client:
        workspace = create_ws(client, name)["workspace"]
        files = f"/api/v1/workspaces/{name}/files"
        for compress in (bz2.compress, gzip.compress):
            bomb = compress(zeros)
            assert len(bomb) < limit
            response = client.put(files, params={"path": "/workspace/bomb"}, content=bomb,
                                  headers={"Content-Type": "application/x-tar"})
            assert response.status_code == 413, response.text
            assert response.json()["detail"] == (f"the archive unpacks to more than the upload limit of {limit} "
                                                 "bytes (max_upload_bytes)")
        small = client.put(files, params={"path": "/workspace/small"}, content=gzip.compress(make_tar(
            ("a.txt", b"a" * 100_000, b"file"))), headers={"Content-Type": "application/x-tar"})
        assert small.status_code == 200, small.text
    assert read(docker_client, workspace, "ls /workspace; find / -xdev -name zeros").split() == ["small"]
    assert sum(f.stat().st_size for f in scratch.rglob("*") if f.is_file()) == 0


def test_garbage_instead_of_a_tar_is_bad_input(api: httpx.Client, workspace: dict) -> None:
    response = api.put(f"/api/v1/workspaces/{workspace['name']}/files", params={"path": "x"},
                       content=b"not a tar at all" * 100, headers={"Content-Type": "application/x-tar"})
    assert response.status_code == 422 and "tar" in response.json()["detail"]


def test_uploads_have_their_own_limit_and_json_keeps_the_general_one(make_daemon, name: str) -> None:
    limited = make_daemon({"VMHOST_MAX_UPLOAD_BYTES": "200000", "VMHOST_MAX_BODY_BYTES": "4096"})
    with limited.client() as client:
        create_ws(client, name)
        files = f"/api/v1/workspaces/{name}/files"
        assert client.put(files, params={"path": "ok.bin"}, content=b"x" * 100_000).status_code == 200
        too_big = client.put(files, params={"path": "big.bin"}, content=b"x" * 300_000)
        assert too_big.status_code == 413 and "200000" in too_big.json()["detail"]
        chunked = client.put(files, params={"path": "big.bin"}, content=iter([b"x" * 100_000] * 3))
        assert chunked.status_code == 413
        big_json = client.post("/api/v1/workspaces", json={"name": name, "labels": {"k": "v" * 5000}})
        assert big_json.status_code == 413


def test_read_only_tokens_may_download_but_not_upload(daemon: Daemon, workspace: dict) -> None:
    with daemon.tcp(daemon.token("root", scope="read")) as reader:
        files = f"/api/v1/workspaces/{workspace['id']}/files"
        assert reader.get(files, params={"path": "/etc/passwd"}).status_code == 200
        assert reader.put(files, params={"path": "x"}, content=b"x").status_code == 403


def test_cp_copies_files_and_directories_both_ways_like_docker_cp(
        on_engine: OnEngine, engine_workspace: dict, tmp_path) -> None:
    daemon, workspace = on_engine.daemon, engine_workspace
    ws = workspace["name"]
    (tmp_path / "notes.txt").write_text("hello\n")
    tree = tmp_path / "tree"
    (tree / "inner").mkdir(parents=True)
    (tree / "inner" / "deep.txt").write_text("deep\n")

    assert daemon.cli("ws", "cp", str(tmp_path / "notes.txt"), f"{ws}:notes.txt").returncode == 0
    assert daemon.cli("ws", "cp", str(tmp_path / "notes.txt"), f"{ws}:/tmp").returncode == 0  # into a directory
    assert daemon.cli("ws", "cp", str(tree), f"{ws}:/workspace/copy").returncode == 0  # a new directory
    assert daemon.cli("ws", "cp", str(tree), f"{ws}:/workspace/copy").returncode == 0  # into it, as tree/
    assert on_engine.sh(workspace, "cat /workspace/notes.txt /tmp/notes.txt /workspace/copy/inner/deep.txt "
                                   "/workspace/copy/tree/inner/deep.txt") == "hello\n" * 2 + "deep\n" * 2

    out = tmp_path / "out"
    out.mkdir()
    assert daemon.cli("ws", "cp", f"{ws}:notes.txt", str(out / "back.txt")).returncode == 0
    assert daemon.cli("ws", "cp", f"{ws}:/workspace/copy", str(out)).returncode == 0  # into a directory
    assert daemon.cli("ws", "cp", f"{ws}:/workspace/copy", str(out / "renamed")).returncode == 0
    assert (out / "back.txt").read_text() == "hello\n"
    assert (out / "copy" / "inner" / "deep.txt").read_text() == "deep\n"
    assert (out / "renamed" / "tree" / "inner" / "deep.txt").read_text() == "deep\n"

    missing = daemon.cli("ws", "cp", f"{ws}:nope", str(out))
    assert missing.returncode == 3 and "no file or directory /workspace/nope" in missing.stderr
    neither = daemon.cli("ws", "cp", str(out), str(tmp_path / "x"))
    assert neither.returncode == 2 and "exactly one side" in neither.stderr
    escape = daemon.cli("ws", "cp", str(tmp_path / "notes.txt"), f"{ws}:/../../x")
    assert escape.returncode == 2 and "outside" in escape.stderr


def test_files_of_a_workspace_whose_container_is_gone_are_a_conflict(orchestrator: Any, name: str,
                                                                     docker_client: docker.DockerClient) -> None:
    """Between a container vanishing and the reconciler noticing (none runs here), the files API answers
    409 with the workspace's name, never a 502 about a container Docker cannot find."""
    from vmhost.core.orchestrator import Caller, WorkspaceRequest
    from vmhost.errors import InvalidState

    alice = Caller(user="alice")
    workspace, operation = orchestrator.create(alice, WorkspaceRequest(name=name))
    assert orchestrator.store.wait_operation(operation.id, 60).status.value == "succeeded"
    docker_client.containers.get(orchestrator.store.get_workspace(workspace.id).container_id).remove(force=True)
    files = orchestrator.files
    for attempt in (lambda: files.stat(alice, name, "x"), lambda: files.download(alice, name, "x"),
                    lambda: files.upload(alice, name, "x", io.BytesIO(b"x"), 1, False, io.BytesIO(), 1024)):
        with pytest.raises(InvalidState, match=name):
            attempt()


def test_a_container_that_goes_in_the_middle_of_an_upload_is_a_conflict(orchestrator: Any, name: str,
                                                                         docker_client: docker.DockerClient,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The container is there when the upload looks, and gone (a rebuild replacing it) when it writes."""
    from vmhost.core.orchestrator import Caller, WorkspaceRequest
    from vmhost.errors import InvalidState

    alice = Caller(user="alice")
    workspace, operation = orchestrator.create(alice, WorkspaceRequest(name=name))
    assert orchestrator.store.wait_operation(operation.id, 60).status.value == "succeeded"
    engine = orchestrator.engine
    write = engine.put_archive

    def removed_first(container_id: str, path: str, archive: Any) -> None:
        docker_client.containers.get(container_id).remove(force=True)
        write(container_id, path, archive)

    monkeypatch.setattr(engine, "put_archive", removed_first)
    with pytest.raises(InvalidState, match=name):
        orchestrator.files.upload(alice, name, "x", io.BytesIO(b"x"), 1, False, io.BytesIO(), 1024)
