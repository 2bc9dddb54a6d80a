"""SSH into workspaces through the daemon, with Debian's OpenSSH client and keys made by ssh-keygen."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, create_ws

from vmhost.core.engines import Engine
from vmhost.testing import free_port, remove_instance_objects


def keygen(directory: Path, name: str) -> Path:
    """A new ed25519 key pair made by ssh-keygen; the private key's path (the public one is beside it)."""
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


def test_keys_through_the_api_and_the_cli(daemon: Daemon, tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice")
    alice = daemon.token("alice-keys")
    with daemon.tcp(alice) as client:
        added = client.post("/api/v1/ssh-keys", json={"public_key": key.with_suffix(".pub").read_text()})
        assert added.status_code == 201, added.text
        assert added.json()["fingerprint"].startswith("SHA256:") and added.json()["comment"] == "alice@test"
        again = client.post("/api/v1/ssh-keys", json={"public_key": key.with_suffix(".pub").read_text()})
        assert again.status_code == 409 and "already registered" in again.json()["detail"]
        garbage = client.post("/api/v1/ssh-keys", json={"public_key": "ssh-rsa nonsense"})
        assert garbage.status_code == 422 and "not an SSH public key" in garbage.json()["detail"]
        assert [k["id"] for k in client.get("/api/v1/ssh-keys").json()["items"]] == [added.json()["id"]]
    with daemon.tcp(daemon.token("bob-keys")) as bob:
        assert bob.get("/api/v1/ssh-keys").json()["items"] == []
        assert bob.delete(f"/api/v1/ssh-keys/{added.json()['id']}").status_code == 404
        assert bob.get("/api/v1/ssh-keys", params={"user": "alice-keys"}).status_code == 403

    other = keygen(tmp_path, "root-key")
    shown = daemon.cli("keys", "add", str(other.with_suffix(".pub")))
    assert shown.returncode == 0 and "added for" in shown.stdout, shown.stderr
    listed = daemon.cli("keys", "ls", "--user", "alice-keys")
    assert added.json()["fingerprint"] in listed.stdout, listed.stderr
    removed = daemon.cli("keys", "rm", added.json()["id"])
    assert removed.returncode == 0 and "removed" in removed.stdout, removed.stderr
    assert daemon.cli("keys", "rm", added.json()["id"]).returncode == 3
    bad = daemon.cli("keys", "add", str(other))  # the private key
    assert bad.returncode == 2 and "private key" in bad.stderr


@dataclass
class SshSetup:
    daemon: Daemon
    port: int
    home: Path
    alice_key: Path
    alice_token: str
    workspace: dict[str, Any]

    def ssh(self, *args: str, key: Path | None = None, user: str | None = None, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", *SSH_OPTIONS, "-i", str(key or self.alice_key), "-p", str(self.port),
                               f"{user or self.workspace['name']}@127.0.0.1", *args],
                              capture_output=True, text=True, input=input, timeout=timeout,
                              env={**os.environ, "HOME": str(self.home)})


SSH_OPTIONS = ("-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR")


@pytest.fixture(scope="module")
def ssh_setup(templates_dir: Path, docker_engine: Engine, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[SshSetup]:
    """One daemon with its SSH server on a free loopback port, alice's key and running workspace."""
    port = free_port()
    daemon = Daemon(templates_dir, {"VMHOST_SSH_BIND": f"127.0.0.1:{port}"}).start()
    try:
        home = tmp_path_factory.mktemp("home")
        key = keygen(home, "alice")
        token = daemon.token("alice")
        with daemon.tcp(token) as client:
            assert client.post("/api/v1/ssh-keys", json={"public_key": key.with_suffix(".pub").read_text()}
                               ).status_code == 201
            workspace = create_ws(client, "web")["workspace"]
        yield SshSetup(daemon, port, home, key, token, workspace)
    finally:
        daemon.cleanup()
        remove_instance_objects(docker_engine, daemon.instance)


def test_a_command_runs_with_its_exit_code_and_stdout_and_stderr_apart(ssh_setup: SshSetup) -> None:
    done = ssh_setup.ssh("echo out; echo err >&2; cat; exit 3", input="from stdin\n")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "out\nfrom stdin\n"
    assert done.stderr == "err\n"
