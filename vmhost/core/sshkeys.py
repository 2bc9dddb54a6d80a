"""SSH public keys: registered by their users (admins: anyone's), and looked up at every SSH login, so a
removed key stops working at once. A key is kept in OpenSSH form ("ssh-ed25519 AAAA...") with its
SHA256 fingerprint, which is unique: one key belongs to one user."""

from __future__ import annotations

from dataclasses import dataclass

import asyncssh

from vmhost.core import validation
from vmhost.core.models import Caller, SshKey, new_id, utcnow
from vmhost.core.store import Store
from vmhost.errors import InvalidInput, QuotaExceeded, SshKeyNotFound

MAX_KEYS_PER_USER = 50
MAX_KEY_TEXT = 16 * 1024  # an RSA key of 16384 bits is about 2,800 characters
MAX_COMMENT = 256


@dataclass(frozen=True)
class ParsedKey:
    public_key: str
    fingerprint: str
    comment: str


def parse_public_key(text: str) -> ParsedKey:
    """A public key in OpenSSH (`ssh-ed25519 AAAA... comment`) or RFC 4716 form; InvalidInput otherwise
    (a private key too: it is refused, never echoed)."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_KEY_TEXT:
        raise InvalidInput(f"public_key must be one SSH public key of at most {MAX_KEY_TEXT} characters, "
                           "like the contents of ~/.ssh/id_ed25519.pub")
    if "PRIVATE KEY" in text:
        raise InvalidInput("this is a private key: register the public one (the .pub file), and keep the "
                           "private key to yourself")
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise InvalidInput("public_key is not an SSH public key; give one line like "
                           "'ssh-ed25519 AAAA... you@host' (the contents of ~/.ssh/id_ed25519.pub)") from None
    comment = key.get_comment() or ""
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    return ParsedKey(f"{algorithm} {blob}", key.get_fingerprint("sha256"), comment[:MAX_COMMENT])


class SshKeys:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, caller: Caller, public_key: str, user: str | None = None, admin: bool = False) -> SshKey:
        """Register a key for `user` (default: the caller; others' and admin keys: admins only)."""
        caller.require_write("add SSH keys")
        user = user or caller.user
        if user != caller.user or admin:
            caller.require_admin("add SSH keys for other users or admin keys")
        validation.check_user(user)
        parsed = parse_public_key(public_key)
        key = SshKey(id=new_id("key"), user=user, public_key=parsed.public_key, fingerprint=parsed.fingerprint,
                     comment=parsed.comment, admin=admin, created_at=utcnow())
        if not self.store.insert_ssh_key(key, MAX_KEYS_PER_USER):
            raise QuotaExceeded(f"{user} already has {MAX_KEYS_PER_USER} SSH keys, the most one user may "
                                "have; remove one with `vmhost keys rm ID`")
        return key

    def list(self, caller: Caller, user: str | None = None) -> list[SshKey]:
        """The caller's keys; an admin's `user`'s, or everyone's with user '*'."""
        if user is not None and user != caller.user:
            caller.require_admin("list other users' SSH keys")
        wanted = caller.user if user is None else user
        return self.store.ssh_keys(None if wanted == "*" else wanted)

    def remove(self, caller: Caller, key_id: str) -> SshKey:
        caller.require_write("remove SSH keys")
        key = self.store.get_ssh_key(key_id)
        if key is None or not caller.can_see(key.user):
            raise SshKeyNotFound(f"no SSH key {key_id!r}; `vmhost keys ls` lists yours")
        self.store.delete_ssh_key(key_id)
        return key

    def find(self, public_key: str) -> SshKey | None:
        """The registered key with this OpenSSH form (the login check: read from the database each time)."""
        return self.store.find_ssh_key(public_key)
