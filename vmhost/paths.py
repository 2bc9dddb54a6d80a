"""Where vmhost keeps things. The only user of platformdirs.

Root (a system service) uses the system locations; anyone else the user's own.
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_DB = Path("/var/lib/vmhost/vmhost.db")
SYSTEM_SOCKET = Path("/run/vmhost/vmhost.sock")
SYSTEM_CONFIG = Path("/etc/vmhost/config.toml")
SYSTEM_TEMPLATES = Path("/etc/vmhost/templates")


def is_root() -> bool:
    return os.geteuid() == 0


def default_db_path() -> Path:
    if is_root():
        return SYSTEM_DB
    import platformdirs

    return Path(platformdirs.user_data_dir("vmhost")) / "vmhost.db"


def default_socket_path() -> Path:
    """The daemon's own default socket."""
    if is_root():
        return SYSTEM_SOCKET
    import platformdirs

    return Path(platformdirs.user_runtime_dir("vmhost")) / "vmhost.sock"


def client_socket_path(given: str | Path | None = None) -> Path:
    """The socket a client should try: the one given (a flag), else `VMHOST_SOCKET`, else the system
    daemon's when it exists, else the user's default."""
    if given or os.environ.get("VMHOST_SOCKET"):
        return Path(given or os.environ["VMHOST_SOCKET"])
    if SYSTEM_SOCKET.exists():
        return SYSTEM_SOCKET
    return default_socket_path()


def default_config_path() -> Path:
    if is_root():
        return SYSTEM_CONFIG
    import platformdirs

    return Path(platformdirs.user_config_dir("vmhost")) / "config.toml"


def default_templates_dir() -> Path:
    if is_root():
        return SYSTEM_TEMPLATES
    import platformdirs

    return Path(platformdirs.user_config_dir("vmhost")) / "templates"


def make_private_dir(directory: Path) -> bool:
    """Create `directory` and its missing parents, each mode 0700 whatever the umask. Returns whether
    it was missing; an existing directory keeps the mode its owner gave it."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by someone else: theirs to set
            continue
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask, which may also take the owner's bits
    return bool(missing)


def private_file(path: Path, create: bool = True) -> None:
    """Make the file `path` readable and writable by its owner only (0600), creating it empty when missing
    and `create`. A file of another user is left alone."""
    flags = os.O_RDONLY | (os.O_CREAT if create else 0)
    try:
        handle = os.open(path, flags, 0o600)
    except FileNotFoundError:
        if create:
            raise
        return
    try:
        if os.fstat(handle).st_uid == os.geteuid():
            os.fchmod(handle, 0o600)
    finally:
        os.close(handle)
