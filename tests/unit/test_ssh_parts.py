"""The SSH server's and ssh-proxy's small rules: login names, the client environment passed on, host
aliases, the ssh config block, the host key's fingerprint."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vmhost.cli.sshproxy import BEGIN, END, ssh_block, without_block, workspace_of
from vmhost.core.sshhost import ensure_host_key, host_key_fingerprint
from vmhost.daemon.ssh import allowed_env, parse_login
from vmhost.errors import InvalidInput


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
