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
