"""A repository's devcontainer.json, served by `git daemon` on loopback (the real git:// protocol), applied
to a workspace by a real daemon on the real Docker engine: an image with JSONC, environment, commands
and ports; a Dockerfile built and cached; what vmhost does not do refused before anything is made; a
rebuild that reads the changed file."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from conftest import Daemon, create_ws, wait_op
from test_shell import Shell, open_shell

from vmhost.testing import free_port


@dataclass
class GitServer:
    base: Path
    port: int

    def repo(self, name: str, files: dict[str, str]) -> str:
        """A repository of these files, committed; its git:// URL."""
        path = self.base / f"{name}.git"
        path.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
        self.commit(name, files)
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def commit(self, name: str, files: dict[str, str]) -> None:
        path = self.base / f"{name}.git"
        for relative, text in files.items():
            (path / relative).parent.mkdir(parents=True, exist_ok=True)
            (path / relative).write_text(text)
        git = ["git", "-C", str(path), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "change"], check=True)


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    base = tmp_path_factory.mktemp("git")
    port = free_port()
    process = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base}",
                                f"--port={port}", "--listen=127.0.0.1", str(base)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("git daemon did not start") from None
                time.sleep(0.1)
        yield GitServer(base, port)
    finally:
        process.terminate()
        process.wait(timeout=10)


def objects_of(client: docker.DockerClient, workspace_id: str) -> list[str]:
    """Every container, volume and image Docker holds for the workspace."""
    label = f"vmhost.workspace={workspace_id}"
    return ([c.name for c in client.containers.list(all=True, filters={"label": label})]
            + [v.name for v in client.volumes.list(filters={"label": label})]
            + [i.id for i in client.images.list(filters={"label": label})])


def exec_out(daemon: Daemon, name: str, *argv: str) -> str:
    done = daemon.cli("ws", "exec", name, "--", *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_image_with_env_commands_and_ports(daemon: Daemon, api: httpx.Client, git_server: GitServer,
                                           test_image: str, name: str) -> None:
    config = f"""// a development container, as VS Code writes it
    {{
      "name": "Shop",  /* the shop's app */
      "image": "{test_image}",
      "containerEnv": {{"GREETING": "hello", "WHO": "file",}},
      "remoteEnv": {{"EDITOR": "vi"}},
      "postCreateCommand": "pwd > /tmp/created-in && echo created",
      "postStartCommand": ["sh", "-c", "echo start >> /tmp/starts"],
      "postAttachCommand": "echo attached",
      "forwardPorts": [3000,],
      "portsAttributes": {{"3000": {{"label": "App"}}}},
    }}
    """
    repo = git_server.repo(f"shop-{name}", {".devcontainer/devcontainer.json": config, "app.txt": "the app\n"})
    accepted = create_ws(api, name, wait=False, repo_url=repo, devcontainer=True, env={"WHO": "request"})
    operation = wait_op(api, accepted["operation"]["id"])
    assert operation["status"] == "succeeded", operation["error"]
    assert "reading .devcontainer/devcontainer.json" in operation["output"] and "created" in operation["output"]
    workspace = api.get(f"/api/v1/workspaces/{name}").json()
    folder = f"/workspace/shop-{name}"
    assert (workspace["image"], workspace["workdir"], workspace["display_name"]) == (test_image, folder, "Shop")
    assert workspace["env"] | {"GREETING": "hello", "WHO": "request", "EDITOR": "vi"} == workspace["env"]
    assert workspace["sources"]["image"] == "devcontainer"
    assert (workspace["sources"]["env.GREETING"], workspace["sources"]["env.WHO"]) == ("devcontainer", "request")
    assert "3000/tcp" in workspace["connection"]["ports"] and workspace["port_labels"] == {"3000": "App"}
    assert workspace["post_attach"] == ["echo attached"]
    with open_shell(api, name) as ws:  # a terminal runs postAttachCommand, then the shell, in the folder
        shell = Shell(ws)
        shell.read_until(b"attached")
        shell.type("pwd; exit 7")
        assert folder.encode() in shell.read_until(folder.encode()) and shell.wait_exit() == 7

    assert exec_out(daemon, name, "cat", "/tmp/created-in", "app.txt") == f"{folder}\nthe app\n"
    assert exec_out(daemon, name, "sh", "-c", "echo $GREETING $WHO $EDITOR") == "hello request vi\n"
    assert exec_out(daemon, name, "cat", "/tmp/starts") == "start\n"
    assert wait_op(api, api.post(f"/api/v1/workspaces/{name}/restart").json()["id"])["status"] == "succeeded"
    assert exec_out(daemon, name, "cat", "/tmp/starts") == "start\nstart\n"

    shown = daemon.cli("ws", "show", name)
    assert shown.returncode == 0, shown.stderr
    assert "devcontainer: env.EDITOR, env.GREETING" in shown.stdout and "request: env.WHO" in shown.stdout
    assert "(App)" in shown.stdout
    ports = api.get(f"/api/v1/workspaces/{name}/ports").json()
    assert {"port": 3000, "in_template": True, "label": "App"}.items() <= next(
        p for p in ports["items"] if p["port"] == 3000).items()
    wait_op(api, api.delete(f"/api/v1/workspaces/{name}").json()["id"])


def test_dockerfile_is_built_once_for_the_same_context(daemon: Daemon, api: httpx.Client, git_server: GitServer,
                                                       test_image: str, docker_client: docker.DockerClient,
                                                       name: str) -> None:
    files = {".devcontainer/devcontainer.json": '{"build": {"dockerfile": "Dockerfile", "context": "..", '
                                                '"args": {"WHAT": "built"}}}',
             ".devcontainer/Dockerfile": f"FROM {test_image}\nARG WHAT\nRUN echo $WHAT > /built\n"}
    repo = git_server.repo(f"built-{name}", files)
    first = wait_op(api, create_ws(api, name, wait=False, repo_url=repo, devcontainer=True)["operation"]["id"])
    assert first["status"] == "succeeded", first["error"]
    assert "$ docker build" in first["output"]
    workspace = api.get(f"/api/v1/workspaces/{name}").json()
    assert workspace["image"].startswith("vmhost-devcontainer:")
    assert exec_out(daemon, name, "cat", "/built") == "built\n"

    second = wait_op(api, create_ws(api, f"{name}-2", wait=False, repo_url=repo,
                                    devcontainer=True)["operation"]["id"])
    assert second["status"] == "succeeded", second["error"]
    assert "built before from the same build context" in second["output"]
    assert api.get(f"/api/v1/workspaces/{name}-2").json()["image"] == workspace["image"]
    for each in (name, f"{name}-2"):
        wait_op(api, api.delete(f"/api/v1/workspaces/{each}").json()["id"])
    assert not docker_client.images.list(name=workspace["image"])  # gone with the last workspace using it


def test_what_vmhost_does_not_do_is_refused_before_anything_is_made(
        api: httpx.Client, git_server: GitServer, test_image: str, docker_client: docker.DockerClient,
        name: str) -> None:
    config = json.dumps({"image": test_image, "mounts": ["source=/,target=/host,type=bind"],
                         "runArgs": ["--privileged"], "privileged": True,
                         "features": {"ghcr.io/devcontainers/features/node:1": {}}})
    repo = git_server.repo(f"bad-{name}", {".devcontainer.json": config})
    accepted = create_ws(api, name, wait=False, repo_url=repo, devcontainer=True)
    operation = wait_op(api, accepted["operation"]["id"])
    assert operation["status"] == "failed"
    for reason in ("mounts", "'--privileged'", "privileged (workspaces never run privileged)",
                   "features are not supported yet (asked for: ghcr.io/devcontainers/features/node:1)"):
        assert reason in operation["error"]
    assert api.get(f"/api/v1/workspaces/{name}").json()["status"] == "error"
    assert objects_of(docker_client, accepted["workspace"]["id"]) == []
    wait_op(api, api.delete(f"/api/v1/workspaces/{name}").json()["id"])

    no_repo = api.post("/api/v1/workspaces", json={"name": f"{name}-n", "devcontainer": True})
    assert no_repo.status_code == 422 and "needs a repository" in no_repo.json()["detail"]


def test_rebuild_reads_the_changed_file(daemon: Daemon, api: httpx.Client, git_server: GitServer, test_image: str,
                                        name: str) -> None:
    repo_name = f"change-{name}"
    repo = git_server.repo(repo_name, {".devcontainer.json": f'{{"image": "{test_image}", '
                                                             '"containerEnv": {"STAGE": "one"}}'})
    created = daemon.cli("ws", "create", name, "--repo", repo, "--devcontainer")
    assert created.returncode == 0, created.stderr
    exec_out(daemon, name, "sh", "-c", "echo kept > mine.txt")
    git_server.commit(repo_name, {".devcontainer.json": f'{{"image": "{test_image}", "containerEnv": '
                                                        '{"STAGE": "two"}, "postCreateCommand": "echo again"}'})
    done = daemon.cli("ws", "rebuild", name)
    assert done.returncode == 0, done.stderr
    assert exec_out(daemon, name, "sh", "-c", "echo $STAGE; cat mine.txt") == "two\nkept\n"
    rebuilt = api.get("/api/v1/operations", params={"workspace": name, "type": "rebuild"}).json()["items"][0]
    assert "again" in rebuilt["output"]
    wait_op(api, api.delete(f"/api/v1/workspaces/{name}").json()["id"])
