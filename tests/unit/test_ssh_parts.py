"""The SSH server's and ssh-proxy's small rules: login names, the client environment passed on, host
aliases, the ssh config block, the host key's fingerprint."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import anyio
import asyncssh
import pytest

from unit.conftest import ALICE, MakeOrchestrator, create_running, finish
from vmhost.cli.sshproxy import BEGIN, END, ssh_block, without_block, workspace_of
from vmhost.config import Settings
from vmhost.core.audit import AuditLog
from vmhost.core.models import Caller
from vmhost.core.sshhost import ensure_host_key, host_key_fingerprint
from vmhost.daemon.sessions import session_gate
from vmhost.daemon.ssh import SshServer, allowed_env, parse_login
from vmhost.errors import InvalidInput, InvalidState, TooManyRequests


def test_a_login_names_a_workspace_or_a_user_and_a_workspace() -> None:
    assert parse_login("web") == (None, "web")
    assert parse_login("alice/web") == ("alice", "web")


def test_only_lang_lc_and_term_are_passed_on() -> None:
    sent = {"LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "xterm", "LD_PRELOAD": "/x.so", "PATH": "/evil"}
    assert allowed_env(sent) == {"LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "xterm"}


def test_a_host_alias_names_its_workspace() -> None:
    assert workspace_of("web.vmhost") == "web"
    assert workspace_of("web") == "web"
    with pytest.raises(InvalidInput):
        workspace_of(".vmhost")


def test_the_block_is_replaced_in_place_and_the_rest_kept() -> None:
    text = "Host a\n    User x\n" + ssh_block() + "Host b\n    User y\n"
    rest, at = without_block(text)
    assert rest == "Host a\n    User x\nHost b\n    User y\n" and at == len("Host a\n    User x\n")
    assert without_block("Host a\n") == ("Host a\n", len("Host a\n"))
    with pytest.raises(InvalidInput):
        without_block(f"{BEGIN}\nHost *\n")
    assert ssh_block().startswith(BEGIN) and ssh_block().rstrip().endswith(END)


def test_the_host_key_is_made_once_private_with_the_fingerprint_ssh_shows(tmp_path: Path) -> None:
    key = tmp_path / "ssh_host_ed25519_key"
    assert host_key_fingerprint(key) is None
    ensure_host_key(key)
    first = key.read_bytes()
    ensure_host_key(key)
    assert key.read_bytes() == first and key.stat().st_mode & 0o777 == 0o600
    shown = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(key)], capture_output=True, text=True,
                           check=True).stdout.split()[1]
    assert host_key_fingerprint(key) == shown


def ssh_server(make_orchestrator: MakeOrchestrator, **settings: Any) -> SshServer:
    orchestrator = make_orchestrator(**settings)
    server_settings = Settings.defaults(db_path=orchestrator.store.path, **settings)
    return SshServer(orchestrator, server_settings, session_gate(server_settings), AuditLog(orchestrator.store),
                     anyio.CapacityLimiter(2))


def test_a_login_holds_a_connection_and_counts_as_activity(make_orchestrator: MakeOrchestrator) -> None:
    server = ssh_server(make_orchestrator, user_max_ssh_sessions=1)
    orchestrator = server.orchestrator
    workspace = create_running(orchestrator)
    key = asyncssh.generate_private_key("ssh-ed25519")
    orchestrator.ssh_keys.add(ALICE, key.export_public_key("openssh").decode())
    first = server.login_with_key("box", key, "127.0.0.1")
    assert first is not None and first.workspace_id == workspace.id and first.caller.user == "alice"
    server.hold(first)
    assert first.refused is None and orchestrator.activity.open_sessions(workspace.id) == 1
    second = server.login_with_key("box", key, "127.0.0.1")
    assert second is not None
    server.hold(second)
    assert isinstance(second.refused, TooManyRequests)
    first.release()
    assert orchestrator.activity.open_sessions(workspace.id) == 0


def test_only_an_admin_key_opens_another_users_workspace(make_orchestrator: MakeOrchestrator) -> None:
    server = ssh_server(make_orchestrator)
    orchestrator = server.orchestrator
    create_running(orchestrator)
    bob, admin = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    orchestrator.ssh_keys.add(Caller(user="bob"), bob.export_public_key("openssh").decode())
    orchestrator.ssh_keys.add(Caller(user="root", admin=True), admin.export_public_key("openssh").decode(),
                              admin=True)
    assert server.login_with_key("box", bob, None) is None
    assert server.login_with_key("alice/box", bob, None) is None
    assert server.login_with_key("box", admin, None) is None  # root has no box
    login = server.login_with_key("alice/box", admin, None)
    assert login is not None and login.caller.admin and login.workspace_name == "box"


def test_a_stopped_workspace_is_refused_with_how_to_start_it(make_orchestrator: MakeOrchestrator) -> None:
    server = ssh_server(make_orchestrator)
    orchestrator = server.orchestrator
    workspace = create_running(orchestrator)
    key = asyncssh.generate_private_key("ssh-ed25519")
    orchestrator.ssh_keys.add(ALICE, key.export_public_key("openssh").decode())
    login = server.login_with_key("box", key, None)
    assert login is not None
    finish(orchestrator, orchestrator.stop(ALICE, workspace.id))
    with pytest.raises(InvalidState, match="vmhost ws start box"):
        server.running(login)
