"""SSH into workspaces through the daemon, with Debian's OpenSSH client and keys made by ssh-keygen."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Daemon


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
