"""SSH into workspaces through the daemon, with Debian's OpenSSH client and keys made by ssh-keygen."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, create_ws, wait_op

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


def test_doctor_and_config_show_give_the_host_key_fingerprint(ssh_setup: SshSetup) -> None:
    scanned = subprocess.run(["ssh-keyscan", "-p", str(ssh_setup.port), "-t", "ed25519", "127.0.0.1"],
                             capture_output=True, text=True, timeout=30).stdout
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], input=scanned, capture_output=True,
                                 text=True, check=True).stdout.split()[1]
    with ssh_setup.daemon.client() as admin:
        checks = {c["name"]: c for c in admin.get("/api/v1/doctor").json()}
    assert checks["ssh"]["ok"] and fingerprint in checks["ssh"]["detail"]
    shown = ssh_setup.daemon.cli("config", "show", env={"VMHOST_DB_PATH": str(ssh_setup.daemon.db_path),
                                                        "VMHOST_SSH_BIND": f"127.0.0.1:{ssh_setup.port}"})
    assert f"ssh host key: {fingerprint}" in shown.stdout, shown.stderr


def test_sessions_are_audited_with_the_key_and_how_they_ended(ssh_setup: SshSetup) -> None:
    assert ssh_setup.ssh("exit 7").returncode == 7
    with ssh_setup.daemon.client() as admin:
        entries = admin.get("/api/v1/audit", params={"user": "alice", "workspace": "web"}).json()["items"]
    ended = next(e for e in entries if e["action"] == "ssh.exec" and e["path"].startswith("exec exit 7"))
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(ssh_setup.alice_key)],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    assert fingerprint in ended["path"] and ended["code"] == "exit 7" and ended["door"] == "ssh"


def test_an_interactive_shell_follows_window_changes(ssh_setup: SshSetup, tmp_path: Path) -> None:
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    command = " ".join(["env", f"HOME={ssh_setup.home}", "ssh", "-tt", *SSH_OPTIONS, "-i", str(ssh_setup.alice_key),
                        "-p", str(ssh_setup.port), "web@127.0.0.1"])
    subprocess.run([*tmux, "new-session", "-d", "-s", "ssh", "-x", "80", "-y", "24", command], check=True)
    try:
        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "ssh"], capture_output=True, text=True).stdout

        def wait_for(text: str) -> None:
            deadline = time.monotonic() + 20
            while text not in screen():
                assert time.monotonic() < deadline, f"{text!r} never appeared on:\n{screen()}"
                time.sleep(0.1)

        wait_for("/workspace #")
        subprocess.run([*tmux, "send-keys", "-t", "ssh", "stty size", "Enter"], check=True)
        wait_for("24 80")
        subprocess.run([*tmux, "resize-window", "-t", "ssh", "-x", "100", "-y", "30"], check=True)
        subprocess.run([*tmux, "send-keys", "-t", "ssh", "clear; stty size", "Enter"], check=True)
        wait_for("30 100")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_a_local_forward_reaches_a_server_in_the_workspace(ssh_setup: SshSetup) -> None:
    started = ssh_setup.ssh("mkdir -p /tmp/www && echo hello from httpd > /tmp/www/index.html && "
                            "httpd -p 8080 -h /tmp/www")
    assert started.returncode == 0, started.stderr
    local = free_port()
    forward = subprocess.Popen(["ssh", *SSH_OPTIONS, "-N", "-i", str(ssh_setup.alice_key), "-p", str(ssh_setup.port),
                                "-L", f"127.0.0.1:{local}:localhost:8080", "web@127.0.0.1"],
                               env={**os.environ, "HOME": str(ssh_setup.home)})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{local}/index.html", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and forward.poll() is None, "the forward never answered"
                time.sleep(0.2)
        assert answer.status_code == 200 and answer.text == "hello from httpd\n"
    finally:
        forward.terminate()
        forward.wait(10)
    with ssh_setup.daemon.client() as admin:
        deadline = time.monotonic() + 10
        while "closed" not in (ends := {e["code"] for e in admin.get("/api/v1/audit", params={"user": "alice"}).json()[
                "items"] if e["action"] == "ssh.forward"}):
            assert time.monotonic() < deadline, ends
            time.sleep(0.2)
        assert "opened" in ends


def test_another_users_key_is_refused(ssh_setup: SshSetup) -> None:
    bob = keygen(ssh_setup.home, "bob")
    with ssh_setup.daemon.tcp(ssh_setup.daemon.token("bob")) as client:
        assert client.post("/api/v1/ssh-keys", json={"public_key": bob.with_suffix(".pub").read_text()}
                           ).status_code == 201
    for user in ("web", "alice/web"):
        refused = ssh_setup.ssh("true", key=bob, user=user)
        assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_a_removed_key_is_refused_at_once(ssh_setup: SshSetup) -> None:
    second = keygen(ssh_setup.home, "alice-second")
    with ssh_setup.daemon.tcp(ssh_setup.alice_token) as client:
        added = client.post("/api/v1/ssh-keys", json={"public_key": second.with_suffix(".pub").read_text()}).json()
        assert ssh_setup.ssh("true", key=second).returncode == 0
        assert client.delete(f"/api/v1/ssh-keys/{added['id']}").status_code == 200
    refused = ssh_setup.ssh("true", key=second)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_a_stopped_workspace_is_refused_with_how_to_start_it(ssh_setup: SshSetup) -> None:
    with ssh_setup.daemon.tcp(ssh_setup.alice_token) as client:
        workspace = create_ws(client, "parked")["workspace"]
        stopping = client.post(f"/api/v1/workspaces/{workspace['id']}/actions/stop")
        assert wait_op(client, stopping.json()["id"])["status"] == "succeeded"
    refused = ssh_setup.ssh("true", user="parked")
    assert refused.returncode == 1 and "vmhost ws start parked" in refused.stderr


def test_ssh_through_config_ssh_over_the_socket_and_over_tcp(ssh_setup: SshSetup, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host other\n    User me\n")
    daemon = ssh_setup.daemon
    written = daemon.cli("config-ssh", "--file", str(config))
    assert written.returncode == 0, written.stderr
    again = daemon.cli("config-ssh", "--file", str(config))  # updated in place, not added twice
    assert again.returncode == 0 and config.read_text().count("vmhost: begin") == 1
    assert config.read_text().startswith("Host other\n    User me\n")

    def ssh(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", "-F", str(config), "-o", "StrictHostKeyChecking=no", "-o",
                               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "web.vmhost",
                               "echo on $(hostname); exit 4"],
                              capture_output=True, text=True, timeout=60,
                              env={**daemon.cli_env(env), "HOME": str(tmp_path)})

    over_socket = ssh({})
    assert over_socket.returncode == 4 and over_socket.stdout.startswith("on "), over_socket.stderr
    over_tcp = ssh({"VMHOST_SOCKET": str(tmp_path / "nothing.sock"), "VMHOST_URL": daemon.url,
                    "VMHOST_TOKEN": ssh_setup.alice_token})
    assert over_tcp.returncode == 4 and over_tcp.stdout == over_socket.stdout, over_tcp.stderr

    removed = daemon.cli("config-ssh", "--remove", "--file", str(config))
    assert removed.returncode == 0 and config.read_text() == "Host other\n    User me\n"


def test_ssh_proxy_says_when_the_ssh_server_is_off(daemon: Daemon) -> None:
    refused = daemon.cli("ssh-proxy", "web.vmhost", input="")
    assert refused.returncode == 4 and "SSH server is off" in refused.stderr


def test_a_user_holds_a_limited_number_of_connections_and_an_idle_one_is_closed(
        templates_dir: Path, docker_engine: Engine, tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(templates_dir, {"VMHOST_SSH_BIND": f"127.0.0.1:{port}", "VMHOST_USER_MAX_SSH_SESSIONS": "1",
                                    "VMHOST_SSH_IDLE_TIMEOUT": "2"}).start()
    try:
        key = keygen(tmp_path, "carol")
        with daemon.tcp(daemon.token("carol")) as client:
            assert client.post("/api/v1/ssh-keys", json={"public_key": key.with_suffix(".pub").read_text()}
                               ).status_code == 201
            workspace = create_ws(client, "box")["workspace"]
        setup = SshSetup(daemon, port, tmp_path, key, "", workspace)
        holder = subprocess.Popen(["ssh", *SSH_OPTIONS, "-i", str(key), "-p", str(port), "box@127.0.0.1",
                                   "while :; do echo .; sleep 0.5; done"], stdout=subprocess.PIPE,
                                  env={**os.environ, "HOME": str(tmp_path)})
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b".\n"
            refused = setup.ssh("true")
            assert refused.returncode == 1 and "too many SSH connections" in refused.stderr, refused.stderr
        finally:
            holder.terminate()
            holder.wait(10)
        deadline = time.monotonic() + 20
        while (idle := setup.ssh("sleep 60")).returncode == 1 and "too many" in idle.stderr:
            assert time.monotonic() < deadline, "the first connection's place was never given back"
        assert idle.returncode == 255 and "vmhost: no traffic for 2 s" in idle.stderr, idle.stderr
    finally:
        daemon.cleanup()
        remove_instance_objects(docker_engine, daemon.instance)


def test_only_lang_lc_and_term_reach_the_session(ssh_setup: SshSetup) -> None:
    done = subprocess.run(
        ["ssh", *SSH_OPTIONS, "-o", "SetEnv=LC_TEST=yes FOO=no LANG=C.UTF-8", "-i", str(ssh_setup.alice_key), "-p",
         str(ssh_setup.port), "web@127.0.0.1", "echo $LC_TEST/$FOO/$LANG"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(ssh_setup.home)})
    assert done.returncode == 0 and done.stdout == "yes//C.UTF-8\n", done.stderr


def test_an_admin_key_opens_another_users_workspace(ssh_setup: SshSetup) -> None:
    key = keygen(ssh_setup.home, "root-admin")
    added = ssh_setup.daemon.cli("keys", "add", "--admin", str(key.with_suffix(".pub")))
    assert added.returncode == 0, added.stderr
    done = ssh_setup.ssh("echo in $PWD", key=key, user="alice/web")
    assert done.returncode == 0 and done.stdout == "in /workspace\n", done.stderr


def test_sftp_without_an_sftp_server_in_the_image_is_refused_clearly(ssh_setup: SshSetup) -> None:
    done = subprocess.run(["sftp", *SSH_OPTIONS, "-i", str(ssh_setup.alice_key), "-P", str(ssh_setup.port), "-b", "-",
                           "web@127.0.0.1"], input="ls\n", capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(ssh_setup.home)})
    assert done.returncode != 0 and "has no sftp-server" in done.stderr, done.stderr


def test_the_daemon_stops_cleanly_with_an_ssh_session_open(templates_dir: Path, docker_engine: Engine,
                                                           tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(templates_dir, {"VMHOST_SSH_BIND": f"127.0.0.1:{port}"}).start()
    try:
        key = keygen(tmp_path, "erin")
        with daemon.tcp(daemon.token("erin")) as client:
            assert client.post("/api/v1/ssh-keys", json={"public_key": key.with_suffix(".pub").read_text()}
                               ).status_code == 201
            create_ws(client, "box")
        session = subprocess.Popen(["ssh", *SSH_OPTIONS, "-i", str(key), "-p", str(port), "box@127.0.0.1",
                                    "echo ready; sleep 600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env={**os.environ, "HOME": str(tmp_path)})
        try:
            assert session.stdout is not None and session.stdout.readline() == b"ready\n"
            assert daemon.stop(signal.SIGTERM) == 0 or daemon.process.returncode in (0, -signal.SIGTERM)  # type: ignore[union-attr]
            assert session.wait(30) == 255  # the client saw its connection end
        finally:
            session.kill()
            session.wait()
    finally:
        daemon.cleanup()
        remove_instance_objects(docker_engine, daemon.instance)
