"""The SSH server's host key: made once (ed25519), kept next to the database (the private key 0600, the
public one beside it as .pub), and its SHA256 fingerprint for `vmhost config show` and `vmhost doctor`.
Only the standard library here, but for making a key: the CLI reads the fingerprint."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from vmhost.paths import private_file

HOST_KEY_NAME = "ssh_host_ed25519_key"


def host_key_path(db_path: Path) -> Path:
    return db_path.with_name(HOST_KEY_NAME)


def ensure_host_key(path: Path) -> None:
    """Make the host key pair at `path` (and `path`.pub) unless it is there."""
    if path.exists():
        return
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment="vmhost")
    path.parent.mkdir(parents=True, exist_ok=True)
    private_file(path)
    path.write_bytes(key.export_private_key("openssh"))
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))


def host_key_fingerprint(path: Path) -> str | None:
    """The SHA256 fingerprint ("SHA256:...", as ssh shows it) of the host key at `path`; None when there is
    none (yet) or it cannot be read."""
    try:
        blob = base64.b64decode(path.with_name(path.name + ".pub").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
