"""SSH keys in the core: checked when added, one owner per key, seen and removed by their owner (or an
admin), and a user may hold only so many."""

from __future__ import annotations

import asyncssh
import pytest

from vmhost.core.models import Caller
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.sshkeys import MAX_KEYS_PER_USER
from vmhost.errors import Forbidden, InvalidInput, QuotaExceeded, SshKeyNotFound, SshKeyTaken

ALICE = Caller(user="alice")
BOB = Caller(user="bob")
ADMIN = Caller(user="root", admin=True)


def public_key(comment: str = "alice@laptop") -> str:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    return key.export_public_key("openssh").decode()


def test_a_key_is_stored_in_openssh_form_with_its_fingerprint(orchestrator: Orchestrator) -> None:
    text = public_key()
    key = orchestrator.ssh_keys.add(ALICE, text)
    assert key.user == "alice" and key.comment == "alice@laptop" and not key.admin
    assert key.public_key == " ".join(text.split()[:2])
    assert key.fingerprint == asyncssh.import_public_key(text).get_fingerprint("sha256")
    assert orchestrator.ssh_keys.find(key.public_key).id == key.id  # type: ignore[union-attr]
    assert [k.id for k in orchestrator.ssh_keys.list(ALICE)] == [key.id]


@pytest.mark.parametrize("text", ["", "hello", "ssh-ed25519 AAAAnotbase64", "-----BEGIN OPENSSH PRIVATE KEY-----\nx"])
def test_garbage_is_refused_with_a_clear_detail(orchestrator: Orchestrator, text: str) -> None:
    with pytest.raises(InvalidInput) as error:
        orchestrator.ssh_keys.add(ALICE, text)
    assert "public key" in error.value.detail or "private key" in error.value.detail


def test_a_key_belongs_to_one_user(orchestrator: Orchestrator) -> None:
    text = public_key()
    orchestrator.ssh_keys.add(ALICE, text)
    with pytest.raises(SshKeyTaken):
        orchestrator.ssh_keys.add(BOB, text)


def test_others_keys_are_not_found_and_admins_manage_everyone(orchestrator: Orchestrator) -> None:
    key = orchestrator.ssh_keys.add(ALICE, public_key())
    assert orchestrator.ssh_keys.list(BOB) == []
    with pytest.raises(Forbidden):
        orchestrator.ssh_keys.list(BOB, user="alice")
    with pytest.raises(SshKeyNotFound):
        orchestrator.ssh_keys.remove(BOB, key.id)
    with pytest.raises(Forbidden):
        orchestrator.ssh_keys.add(BOB, public_key(), user="alice")
    with pytest.raises(Forbidden):
        orchestrator.ssh_keys.add(BOB, public_key(), admin=True)
    assert [k.id for k in orchestrator.ssh_keys.list(ADMIN, user="alice")] == [key.id]
    orchestrator.ssh_keys.remove(ADMIN, key.id)
    assert orchestrator.ssh_keys.find(key.public_key) is None


def test_a_user_holds_a_limited_number_of_keys(orchestrator: Orchestrator) -> None:
    for _ in range(MAX_KEYS_PER_USER):
        orchestrator.ssh_keys.add(ALICE, public_key())
    with pytest.raises(QuotaExceeded):
        orchestrator.ssh_keys.add(ALICE, public_key())
    orchestrator.ssh_keys.add(BOB, public_key())
