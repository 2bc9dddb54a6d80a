"""Run the daemon: one uvicorn server, one app, listening on the Unix socket and on TCP at once.

We bind the sockets ourselves (uvicorn's own `uds=` leaves the socket world-writable) or take the
ones systemd passes (LISTEN_FDS), and hand them all to a single `uvicorn.Server`, so the app's
lifespan, and with it the background workers, runs exactly once.
"""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
from pathlib import Path

from vmhost.config import Settings

log = logging.getLogger("vmhost")

SD_LISTEN_FDS_START = 3
MAX_UNIX_PATH = 107


def systemd_sockets(env: dict[str, str] | None = None) -> list[socket.socket]:
    """Sockets passed by systemd socket activation, if they are meant for this process."""
    env = dict(os.environ) if env is None else env
    if env.get("LISTEN_PID") not in (None, str(os.getpid())):
        return []
    count = int(env.get("LISTEN_FDS", "0") or 0)
    sockets = [socket.socket(fileno=SD_LISTEN_FDS_START + i) for i in range(count)]
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return sockets


def bind_unix(path: Path, group: str | None = None) -> socket.socket:
    if len(str(path).encode()) > MAX_UNIX_PATH:
        raise SystemExit(f"socket path {path} is longer than {MAX_UNIX_PATH} bytes; choose a shorter VMHOST_SOCKET")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SystemExit(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody listens
        else:
            raise SystemExit(f"another daemon already listens on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    if group:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    os.chmod(path, 0o660)
    sock.listen(512)
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(512)
    sock.setblocking(False)
    return sock


def listening_sockets(settings: Settings) -> list[socket.socket]:
    inherited = systemd_sockets()
    if inherited:
        log.info("using %d socket(s) from systemd", len(inherited))
        return inherited
    sockets = [bind_unix(settings.socket, settings.socket_group)]
    if settings.tcp_address is not None:
        sockets.append(bind_tcp(*settings.tcp_address))
    return sockets


def build_app(settings: Settings):  # -> FastAPI, imported lazily
    from vmhost.core.orchestrator import Orchestrator
    from vmhost.core.provider import DockerProvider
    from vmhost.core.store import Store
    from vmhost.core.templates import TemplateCatalog
    from vmhost.core.workers import standard_workers
    from vmhost.daemon.app import create_app

    store = Store(settings.db_path)
    if store.backup_written:
        log.info("database backed up to %s before migrating", store.backup_written)
    orchestrator = Orchestrator(store, DockerProvider(settings.docker_host), TemplateCatalog(settings.templates_dir),
                                instance=settings.instance, publish_address=settings.publish_address,
                                workers=settings.workers)
    workers = standard_workers(orchestrator, settings.janitor_interval, settings.provisioner_interval)
    return create_app(orchestrator, settings, workers)


def run(settings: Settings) -> None:
    import uvicorn

    from vmhost.daemon.peercred import PeerH11Protocol, PeerWebSocketProtocol

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sockets = listening_sockets(settings)
    app = build_app(settings)
    config = uvicorn.Config(app, http=PeerH11Protocol, ws=PeerWebSocketProtocol, log_level=settings.log_level,
                            lifespan="on", timeout_graceful_shutdown=20, access_log=False)
    server = uvicorn.Server(config)
    for sock in sockets:
        if sock.family == socket.AF_UNIX:
            log.info("listening on unix:%s", sock.getsockname())
        else:
            log.info("listening on http://%s:%s", *sock.getsockname()[:2])
    server.run(sockets=sockets)
