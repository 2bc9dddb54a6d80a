"""The SSH server (asyncssh), in the daemon's event loop: `ssh -p 2222 WORKSPACE@host` reaches the key
owner's workspace, `USER/WORKSPACE@host` any user's with an admin key.

Keys are looked up in the database at every login (a removed key fails at once), and only public keys
are accepted. A connection that `vmhost ssh-proxy` carries over a WebSocket (vmhost.daemon.routes.ssh) is
already authenticated by the daemon (socket peer or API token): it logs in with no key, to the workspace
the WebSocket named, whatever user name the client sends. Each session runs through the engine like the
WebSocket shell: a terminal (`open_terminal`) when the client asks for a PTY, else a process with stdin,
stdout and stderr apart (`open_process`). `direct-tcpip` reaches the workspace's ports through
`ports.target` like the port tunnels. A stopped workspace is refused, with the command that starts it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import asyncssh

from vmhost.config import Settings
from vmhost.core.activity import ActivitySession
from vmhost.core.audit import AuditEntry, AuditLog
from vmhost.core.models import Caller, Door, Workspace
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.sessions import Session, SessionGate, SessionKind
from vmhost.core.sshhost import ensure_host_key, host_key_path
from vmhost.core.terminal import DEFAULT_SHELL, attach_shell
from vmhost.daemon.port_connections import connect_socket
from vmhost.errors import InvalidState, VmhostError, WorkspaceNotFound

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/lib/sftp-server", "/usr/libexec/sftp-server")
ALLOWED_ENV = ("LANG", "TERM")  # and every LC_*
KEEPALIVE = 60.0  # seconds between keepalives to a client that sends nothing
WATCH_INTERVAL = 5.0  # seconds between checks for an idle connection
CLOSE_GRACE = 5.0  # seconds a client whose sessions were ended for being idle has to hang up


def allowed_env(sent: dict[str, str]) -> dict[str, str]:
    """The client's environment variables a session gets: LANG, TERM and LC_* only."""
    return {name: value for name, value in sent.items()
            if (name in ALLOWED_ENV or name.startswith("LC_")) and "\0" not in value and len(value) < 256}


def parse_login(username: str) -> tuple[str | None, str]:
    """(owner or None, workspace) from `WORKSPACE` or `USER/WORKSPACE`."""
    owner, _, name = username.rpartition("/")
    return owner or None, name


@dataclass
class Login:
    """Who logged in, with which key (None: through ssh-proxy, by the daemon's own authentication), to
    which workspace."""

    caller: Caller
    workspace_id: str
    workspace_name: str
    fingerprint: str | None
    refused: VmhostError | None = None  # why its sessions are refused (past its user's connection limit)
    session: Session | None = None
    activity: ActivitySession | None = None
    last_traffic: float = field(default_factory=time.monotonic)

    def moved(self) -> None:
        self.last_traffic = time.monotonic()

    def release(self) -> None:
        for held in (self.session, self.activity):
            if held is not None:
                held.release()


class SshServer:
    """The daemon's SSH server: `start()` listens on `ssh_bind` (when set), `serve(sock, caller, ref)`
    serves a connection ssh-proxy brought in, `close()` ends everything."""

    def __init__(self, orchestrator: Orchestrator, settings: Settings, sessions: SessionGate, audit: AuditLog,
                 limiter: anyio.CapacityLimiter) -> None:
        self.orchestrator = orchestrator
        self.settings = settings
        self.sessions = sessions
        self.audit = audit
        self.limiter = limiter
        self.host_key = host_key_path(settings.db_path)
        self._listener: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()

    @property
    def enabled(self) -> bool:
        return self.settings.ssh_address is not None

    def _options(self) -> dict[str, Any]:
        return dict(server_host_keys=[str(self.host_key)], encoding=None,
                    login_timeout=self.settings.ssh_login_timeout, keepalive_interval=KEEPALIVE,
                    allow_scp=False, agent_forwarding=False, x11_forwarding=False, allow_pty=True,
                    server_version="vmhost")

    async def start(self) -> None:
        address = self.settings.ssh_address
        if address is None:
            return
        await anyio.to_thread.run_sync(ensure_host_key, self.host_key)
        host, port = address
        try:
            self._listener = await asyncssh.create_server(lambda: _Connection(self, None), host, port,
                                                          reuse_address=True, **self._options())
        except OSError as exc:
            raise SystemExit(f"cannot listen for SSH on {host}:{port}: {exc.strerror}") from exc
        log.info("SSH server listening on %s:%s", host, port)

    async def serve(self, sock: socket.socket, login: Login) -> asyncssh.SSHServerConnection:
        """Serve one connection on `sock` whose caller and workspace are known already (ssh-proxy)."""
        return await asyncssh.run_server(sock, server_factory=lambda: _Connection(self, login), **self._options())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
        for conn in list(self._connections):
            conn.close()

    # -- logins ---------------------------------------------------------------------------------

    def login_with_key(self, username: str, key: asyncssh.SSHKey, address: str | None) -> Login | None:
        """The login a key opens for `username`, or None (an unknown key, a workspace that is not there,
        another user's without an admin key: all refused alike)."""
        algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
        registered = self.orchestrator.ssh_keys.find(f"{algorithm} {blob}")
        if registered is None:
            return None
        owner, name = parse_login(username)
        if owner is not None and not registered.admin:
            return None
        caller = Caller(user=registered.user, admin=registered.admin, door=Door.SSH, address=address)
        found = self.orchestrator.store.find_workspace(owner or registered.user, name)
        if found is None:
            return None
        try:
            workspace = self.orchestrator.get(caller, found.id)
        except WorkspaceNotFound:
            return None
        return Login(caller, workspace.id, workspace.name, registered.fingerprint)

    def hold(self, login: Login) -> None:
        """Count the connection against its user's limit and as activity. Past the limit the login is
        let in but each of its sessions refused with why: a client shows a session's stderr, not always
        an authentication banner."""
        try:
            login.session = self.sessions.open(SessionKind.SSH, login.caller.user)
        except VmhostError as exc:
            login.refused = exc
            return
        login.activity = self.orchestrator.activity.session(login.workspace_id)

    def record(self, login: Login, action: str, what: str, ended: str, status: int) -> None:
        """One SSH session's audit entry: who, with which key, where, what, and how it ended."""
        key = login.fingerprint or "ssh-proxy"
        entry = AuditEntry(door="ssh", method="SSH", path=f"{what} [key {key}]"[:500], status=status,
                           user=login.caller.user, address=login.caller.address, action=action,
                           workspace_id=login.workspace_id, workspace_name=login.workspace_name, code=ended[:200])
        try:
            self.audit.record(entry)
        except VmhostError as exc:
            log.warning("could not audit an SSH session: %s", exc.detail)

    def running(self, login: Login) -> tuple[Workspace, str]:
        """The workspace and its container, if it runs; else InvalidState saying how to start it (or, on a
        node that is down, why it cannot)."""
        workspace = self.orchestrator.get(login.caller, login.workspace_id)
        return workspace, workspace.running_container("log in again once it runs")

    # -- sessions -------------------------------------------------------------------------------

    async def _run_process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        owner = process.get_extra_info("connection").get_owner()
        assert isinstance(owner, _Connection) and owner.login is not None
        login = owner.login
        subsystem, command = process.subsystem, process.command
        action, what = (("ssh.sftp", f"subsystem {subsystem}") if subsystem else
                        ("ssh.exec", f"exec {command}") if command is not None else ("ssh.shell", "shell"))
        exit_code, ended = 255, "ended"
        task = asyncio.current_task()
        assert task is not None
        owner.running.add(task)
        try:
            if login.refused is not None:
                raise login.refused
            workspace, container = await anyio.to_thread.run_sync(self.running, login)
            exit_code = await self._session(process, login, workspace, container)
            ended = f"exit {exit_code}"
        except VmhostError as exc:
            process.stderr.write(f"vmhost: {exc.detail}\r\n".encode())
            exit_code, ended = 1, f"refused: {exc.detail}"
        except (asyncssh.BreakReceived, asyncssh.SignalReceived, ConnectionError, asyncssh.Error) as exc:
            ended = f"disconnected: {type(exc).__name__}"
        except asyncio.CancelledError:
            if owner.idle_reason is None:
                raise  # the daemon is stopping
            process.stderr.write(f"\r\nvmhost: {owner.idle_reason}; the connection is closed\r\n".encode())
            ended = f"closed: {owner.idle_reason}"
        finally:
            owner.running.discard(task)
            await anyio.to_thread.run_sync(self.record, login, action, what, ended, exit_code)
        process.exit(exit_code)

    async def _session(self, process: asyncssh.SSHServerProcess[bytes], login: Login, workspace: Workspace,
                       container: str) -> int:
        engine = self.orchestrator.engine
        env = allowed_env(dict(process.env))
        shell = workspace.shell or DEFAULT_SHELL
        term = process.get_terminal_type()
        if process.subsystem is not None:
            if process.subsystem != "sftp":
                raise InvalidState(f"the subsystem {process.subsystem!r} is not served; only sftp is")
            server = await anyio.to_thread.run_sync(self._sftp_server, container)
            argv = [server]
        else:
            argv = [shell, "-c", process.command] if process.command is not None else \
                attach_shell(workspace) if term is not None else [shell]
        if term is not None and process.subsystem is None:
            terminal = await anyio.to_thread.run_sync(
                lambda: engine.open_terminal(container, argv, env={**env, "TERM": term}, workdir=workspace.start_dir))
            try:
                cols, rows = process.term_size[:2]
                if cols and rows:
                    await anyio.to_thread.run_sync(terminal.resize, cols, rows)
                await _pump(process, login, lambda: _as_stdout(terminal.read()), terminal.write, None,
                            terminal.resize, self.limiter)
                code = await anyio.to_thread.run_sync(terminal.exit_code)
            finally:
                await anyio.to_thread.run_sync(terminal.close)
        else:
            running = await anyio.to_thread.run_sync(
                lambda: engine.open_process(container, argv, env=env, workdir=workspace.start_dir))
            try:
                await _pump(process, login, running.read, running.write, running.close_stdin, None, self.limiter)
                code = await anyio.to_thread.run_sync(running.exit_code)
            finally:
                await anyio.to_thread.run_sync(running.close)
        return 255 if code is None else code

    def _sftp_server(self, container: str) -> str:
        for path in SFTP_SERVERS:
            if self.orchestrator.engine.stat_path(container, path) is not None:
                return path
        raise InvalidState("this workspace's image has no sftp-server (install openssh-sftp-server in it, "
                           "or copy files with `vmhost ws cp`)")

    # -- port forwarding ------------------------------------------------------------------------

    async def forward(self, login: Login, port: int) -> asyncssh.SSHTCPSession[bytes]:
        """A direct-tcpip channel to `port` of the workspace, by the port tunnels' rules."""
        try:
            if login.refused is not None:
                raise login.refused
            target = await anyio.to_thread.run_sync(self.orchestrator.ports.tunnel_target, login.caller,
                                                    login.workspace_id, port)
            reader, writer = await asyncio.open_connection(sock=await connect_socket(target, 10))
        except VmhostError as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, exc.detail) from None
        except OSError:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            f"nothing answers on port {port} in workspace {login.workspace_name!r}")
        what = f"direct-tcpip port {port}"
        await anyio.to_thread.run_sync(self.record, login, "ssh.forward", what, "opened", 0)
        return _Forward(reader, writer, lambda: self._traffic(login),
                        lambda: self.record(login, "ssh.forward", what, "closed", 0))

    def _traffic(self, login: Login) -> None:
        login.moved()
        self.orchestrator.activity.touch(login.workspace_id)


def _as_stdout(data: bytes) -> tuple[str, bytes] | None:
    return ("stdout", data) if data else None


async def _pump(process: asyncssh.SSHServerProcess[bytes], login: Login,
                read: Callable[[], tuple[str, bytes] | None], write: Callable[[bytes], None],
                close_input: Callable[[], None] | None, resize: Callable[[int, int], None] | None,
                limiter: anyio.CapacityLimiter) -> None:
    """The command's output to the client (stdout and stderr apart) and the client's input, window
    changes and end of input to the command, until the command's output ends."""
    async with anyio.create_task_group() as group:
        async def client_input() -> None:
            while True:
                try:
                    data = await process.stdin.read(CHUNK)
                except asyncssh.TerminalSizeChanged as change:
                    if resize is not None and change.width and change.height:
                        await anyio.to_thread.run_sync(resize, change.width, change.height)
                    continue
                except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                    continue
                if not data:
                    if close_input is not None:
                        await anyio.to_thread.run_sync(close_input)
                    return
                login.moved()
                try:
                    await anyio.to_thread.run_sync(write, data)
                except VmhostError:
                    return  # the command has just ended

        group.start_soon(client_input)
        while (chunk := await anyio.to_thread.run_sync(read, limiter=limiter, abandon_on_cancel=True)) is not None:
            stream, data = chunk
            login.moved()
            (process.stderr if stream == "stderr" else process.stdout).write(data)
            await (process.stderr if stream == "stderr" else process.stdout).drain()
        group.cancel_scope.cancel()


class _Forward(asyncssh.SSHTCPSession[bytes]):
    """A direct-tcpip channel carried to a connection in the workspace, both ways."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, moved: Callable[[], None],
                 ended: Callable[[], None]) -> None:
        self.reader = reader
        self.writer = writer
        self.moved = moved
        self.ended = ended  # blocks (an audit entry): run in a thread
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        self._task = asyncio.get_running_loop().create_task(self._from_workspace())

    async def _from_workspace(self) -> None:
        try:
            while data := await self.reader.read(CHUNK):
                self.moved()
                self.chan.write(data)
            self.chan.write_eof()
        except (OSError, asyncssh.Error):
            self.chan.close()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.moved()
        self.writer.write(data)

    def eof_received(self) -> bool:
        if self.writer.can_write_eof():
            self.writer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()
        self.writer.close()
        asyncio.get_running_loop().run_in_executor(None, self.ended)


class _Session(asyncssh.SSHServerProcess[bytes]):
    """A session whose subsystem requests are all taken: the session itself says which it serves (sftp,
    by the image's own sftp-server) and refuses the others with a message. asyncssh would take sftp only
    to serve it itself, from the daemon's own files."""

    def __init__(self, run: Callable[[asyncssh.SSHServerProcess[bytes]], Any]) -> None:
        super().__init__(run, None, 0, False)

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    def session_started(self) -> None:
        """Every session, a subsystem's too, goes to the process factory."""
        chan = self.channel
        started = self._start_process(asyncssh.SSHReader(self, chan), asyncssh.SSHWriter(self, chan),
                                      asyncssh.SSHWriter(self, chan, asyncssh.EXTENDED_DATA_STDERR))
        if inspect.isawaitable(started):
            chan.get_connection().create_task(started)


class _Connection(asyncssh.SSHServer):
    """One client connection: its login (given already when ssh-proxy brought it), and its end."""

    def __init__(self, server: SshServer, login: Login | None) -> None:
        self.server = server
        self.login = login
        self.conn: asyncssh.SSHServerConnection | None = None
        self.running: set[asyncio.Task[Any]] = set()  # its sessions
        self.idle_reason: str | None = None  # set when it is closed for being idle
        self._watch: asyncio.Task[None] | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.server._connections.add(conn)
        peer = conn.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if self.login is not None:
            self.server.hold(self.login)
            self._watching()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.server._connections.discard(self.conn)
        if self._watch is not None:
            self._watch.cancel()
        if self.login is not None:
            self.login.release()

    def begin_auth(self, username: str) -> bool:
        return self.login is None  # a proxied connection is authenticated already

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self.login is not None:  # asked again for the same key, to check its signature
            return True
        login = await anyio.to_thread.run_sync(self.server.login_with_key, username, key, self.address)
        if login is None:
            return False
        self.server.hold(login)
        self.login = login
        self._watching()
        log.info("SSH login of %s to workspace %s (key %s)", login.caller.user, login.workspace_name,
                 login.fingerprint)
        return True

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return _Session(self.server._run_process)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Any:
        if self.login is None:
            return False
        return self.server.forward(self.login, dest_port)

    def _watching(self) -> None:
        """Disconnect the client after `ssh_idle_timeout` seconds with no byte either way."""
        self._watch = asyncio.get_running_loop().create_task(self._idle_watch())

    async def _idle_watch(self) -> None:
        assert self.login is not None and self.conn is not None
        timeout = self.server.settings.ssh_idle_timeout
        while (left := self.login.last_traffic + timeout - time.monotonic()) > 0:
            await asyncio.sleep(min(left, WATCH_INTERVAL))
        self.idle_reason = f"no traffic for {timeout:.0f} s"
        # the sessions end first, each saying why on its stderr: the client then hangs up by itself (a
        # disconnect's reason may be lost, as the connection is reset right after it)
        sessions = list(self.running)
        for task in sessions:
            task.cancel()
        if sessions:
            await asyncio.wait(sessions, timeout=CLOSE_GRACE)
            await asyncio.sleep(CLOSE_GRACE)  # cancelled when the client hangs up (see connection_lost)
        self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, self.idle_reason)
