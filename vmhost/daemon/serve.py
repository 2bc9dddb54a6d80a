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
from typing import TYPE_CHECKING

from vmhost.config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("vmhost")

SD_LISTEN_FDS_START = 3
MAX_UNIX_PATH = 107


def systemd_sockets(env: dict[str, str] | None = None) -> list[socket.socket]:
    """Sockets passed by systemd socket activation (fds 3.., `LISTEN_FDS`), as sd_listen_fds(3) takes
    them: only when `LISTEN_PID` names this very process, so a child that inherited the variables
    does not grab descriptors that are not its own. They are made non-blocking and close-on-exec."""
    env = dict(os.environ) if env is None else env
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0") or 0)
    except ValueError:
        raise SystemExit(f"LISTEN_FDS={env['LISTEN_FDS']!r} is not a number") from None
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise SystemExit(f"descriptor {fd} passed by systemd is not a socket: {exc.strerror}") from exc
        sock.set_inheritable(False)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def make_socket_dir(directory: Path, group: str | None) -> None:
    """A directory vmhost creates for its socket is 0750, owned by the socket group: others cannot even
    reach the socket. An existing directory is left as its owner set it."""
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    directory.mkdir(mode=0o750)
    os.chmod(directory, 0o750)  # mkdir's mode is filtered by the umask
    if group:
        os.chown(directory, -1, _group_id(group))


def _group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SystemExit(f"socket group {group!r} does not exist; create it or change VMHOST_SOCKET_GROUP") from None


def bind_unix(path: Path, group: str | None = None) -> socket.socket:
    if len(str(path).encode()) > MAX_UNIX_PATH:
        raise SystemExit(f"socket path {path} is longer than {MAX_UNIX_PATH} bytes; choose a shorter VMHOST_SOCKET")
    make_socket_dir(path.parent, group)
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
        os.chown(path, -1, _group_id(group))
    os.chmod(path, 0o660)
    sock.listen(512)
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it an answer's head and body wait out the client's delayed ACK (40 ms a request)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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


def build_app(settings: Settings) -> FastAPI:
    from vmhost.core.build import build
    from vmhost.daemon.app import create_app

    parts = build(settings)
    return create_app(parts.orchestrator, settings, parts.workers)


def run(settings: Settings) -> None:
    import uvicorn

    from vmhost.daemon import logs
    from vmhost.daemon.connections import (
        ConnectionTable,
        connection_limit,
        guarded_protocols,
        quiet_repeats,
        raise_descriptor_limit,
    )
    from vmhost.daemon.exposure import Server, check_exposure, tls_context

    logs.configure(settings.log_level, settings.log_format)
    quiet_repeats("uvicorn.error", "asyncio", "vmhost.daemon.connections")
    descriptors = raise_descriptor_limit()
    limit = connection_limit(settings.max_connections, descriptors)
    if limit < settings.max_connections:
        log.warning("the process may open %d descriptors: holding at most %d connections, not %d "
                    "(raise LimitNOFILE / ulimit -n)", descriptors, limit, settings.max_connections)
    table = ConnectionTable(limit, settings.socket_reserve, settings.header_timeout, settings.body_timeout)
    http, websocket = guarded_protocols(table)
    tls = tls_context(settings)
    if settings.tcp_address is not None:
        check_exposure(settings, [settings.tcp_address[0]])  # before anything listens
    sockets = listening_sockets(settings)
    check_exposure(settings, [s.getsockname()[0] for s in sockets if s.family != socket.AF_UNIX])  # systemd's
    app = build_app(settings)
    # proxy_headers off: uvicorn would otherwise take X-Forwarded-For from any loopback peer as the client's
    # address, and the trust in a proxy (daemon/auth.py) must be decided on the connection's real peer.
    # Idle connections are kept longer than clients keep theirs (httpx 5 s, Firefox 115 s, Chrome 300 s),
    # so a client never sends a request on a connection the daemon is closing at that very moment.
    config = uvicorn.Config(app, http=http, ws=websocket, log_level=settings.log_level, lifespan="on",
                            timeout_graceful_shutdown=20, timeout_keep_alive=settings.keepalive_timeout,
                            access_log=False, log_config=None, proxy_headers=False)
    server = Server(config, tls)
    for sock in sockets:
        if sock.family == socket.AF_UNIX:
            log.info("listening on unix:%s", sock.getsockname())
        else:
            log.info("listening on %s://%s:%s", "https" if tls else "http", *sock.getsockname()[:2])
    server.run(sockets=sockets)
