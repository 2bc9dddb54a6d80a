"""Commands in the Docker engine's containers (docker exec): run to their end, their output handed on as it
comes, or in a terminal; either killed, with every process they started, when asked.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from docker.utils.socket import frames_iter

from vmhost.core.engines.base import CommandOutcome, OutputCallback
from vmhost.core.engines.docker_connection import DockerConnection
from vmhost.core.engines.hostprocess import in_container, kill_process_tree
from vmhost.errors import ProviderError, VmhostError

log = logging.getLogger(__name__)

KILL_GRACE = 3.0  # seconds a killed command has to let go of its output before its connection is closed
_START_FAILED = b"OCI runtime exec failed"


class DockerExec(DockerConnection):
    """The Docker engine's commands: `run_command` and `open_terminal` of the engine's interface."""

    def run_command(self, container_id: str, argv: list[str], *, on_output: OutputCallback,
                    env: dict[str, str] | None = None, workdir: str | None = None, stdin: bytes | None = None,
                    timeout: float | None = None, cancel: threading.Event | None = None) -> CommandOutcome:
        """Run `argv` in the container, handing each chunk of output to `on_output` as it arrives. After
        `timeout` seconds, or once `cancel` is set, the command is killed with all its processes."""
        api = self.client.api
        with self.errors(f"run {argv[0]}"):
            exec_id = api.exec_create(container_id, argv, environment=env or None, workdir=workdir,
                                      stdout=True, stderr=True, stdin=stdin is not None)["Id"]
            connection = api.exec_start(exec_id, socket=True)
        sock = _socket_of(connection, self.timeout)
        ended = threading.Event()
        stopped: list[str] = []
        threading.Thread(target=self._watch_command, args=(exec_id, sock, timeout, cancel, ended, stopped),
                         name="vmhost-exec-watch", daemon=True).start()
        if stdin is not None:
            threading.Thread(target=_feed, args=(sock, stdin), name="vmhost-exec-stdin", daemon=True).start()
        held = b""  # Docker reports a command it could not start as output on stdout
        seen_stdout = False
        try:
            for stream, data in frames_iter(connection, tty=False):
                name = "stderr" if stream == 2 else "stdout"
                if name == "stdout" and not seen_stdout:
                    seen_stdout = True
                    if data.startswith(_START_FAILED):
                        held = data
                        continue
                if held:
                    on_output("stdout", held)
                    held = b""
                on_output(name, data)
        except OSError:
            pass  # the watcher closed the connection
        finally:
            ended.set()
            _close_quietly(sock)
            _close_quietly(connection)
        info = self._finished_exec(exec_id)
        killed = stopped[0] if stopped else None
        if held and not info.get("Pid"):
            code, error = _start_failure(held.decode("utf-8", errors="replace"), argv, workdir)
            return CommandOutcome(exit_code=code, error=error)
        if held:
            on_output("stdout", held)
        exit_code = info.get("ExitCode")
        if exit_code is None:
            exit_code = 137 if killed else 255
        return CommandOutcome(exit_code=int(exit_code), timed_out=killed == "timeout", cancelled=killed == "cancel",
                              error=None if info.get("ExitCode") is not None or killed
                              else "Docker did not report an exit code")

    def _finished_exec(self, exec_id: str, wait: float = 5.0) -> dict[str, Any]:
        """exec_inspect once the command has ended (Docker may need a moment after the stream closes)."""
        deadline = time.monotonic() + wait
        while True:
            with self.errors("read the command's exit code"):
                info = self.client.api.exec_inspect(exec_id)
            if (not info.get("Running") and info.get("ExitCode") is not None) or time.monotonic() >= deadline:
                return info
            time.sleep(0.05)

    def _watch_command(self, exec_id: str, sock: Any, timeout: float | None, cancel: threading.Event | None,
                       ended: threading.Event, stopped: list[str]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ended.wait(0.1):
            if cancel is not None and cancel.is_set():
                stopped.append("cancel")
            elif deadline is not None and time.monotonic() >= deadline:
                stopped.append("timeout")
            else:
                continue
            try:
                self._kill_exec(exec_id)
            except VmhostError as exc:
                log.warning("could not kill exec %s: %s", exec_id, exc.detail)
            if not ended.wait(KILL_GRACE):  # a process the kill could not reach still holds the output open
                _close_quietly(sock)
            return

    def _kill_exec(self, exec_id: str, wait: float = 5.0) -> None:
        deadline = time.monotonic() + wait
        while True:  # a command cancelled as it starts has no pid yet: wait for one, or for its end
            with self.errors("stop the command"):
                info = self.client.api.exec_inspect(exec_id)
            pid, container_id = info.get("Pid") or 0, info.get("ContainerID") or ""
            if info.get("Running") and pid:
                break
            if info.get("ExitCode") is not None or time.monotonic() >= deadline:
                return
            time.sleep(0.02)
        # Docker reports the host's pid: only usable when this daemon sees the engine's processes
        if not in_container(pid, container_id):
            raise ProviderError(f"cannot kill the command: its process {pid} is not visible to vmhost "
                                "(is the Docker engine on another host?)")
        kill_process_tree(pid)

    def open_terminal(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None) -> DockerTerminal:
        doing = f"open a terminal running {argv[0] if argv else 'a shell'}"
        return DockerTerminal(self, *self._start_session(container_id, argv, env, workdir, tty=True, doing=doing))

    def open_process(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                     workdir: str | None = None) -> DockerProcess:
        doing = f"run {argv[0] if argv else 'a command'}"
        return DockerProcess(self, *self._start_session(container_id, argv, env, workdir, tty=False, doing=doing))

    def _start_session(self, container_id: str, argv: list[str], env: dict[str, str] | None, workdir: str | None,
                       *, tty: bool, doing: str) -> tuple[str, Any]:
        """Start `argv` with its standard input attached: the exec's id and its hijacked connection."""
        api = self.client.api
        with self.errors(doing):
            exec_id = api.exec_create(container_id, argv, stdin=True, tty=tty, stdout=True, stderr=True,
                                      environment=env or None, workdir=workdir)["Id"]
            return exec_id, api.exec_start(exec_id, socket=True, tty=tty)


class _DockerSession:
    """A docker exec over the engine's hijacked connection, written to as it runs, killed when closed."""

    def __init__(self, engine: DockerExec, exec_id: str, connection: Any) -> None:
        self.engine = engine
        self.exec_id = exec_id
        self._connection = connection
        # no timeout: a session waits for its command's output as long as the command runs (a shell at
        # its prompt, a tunnel's server with nothing to say); close() wakes a read
        self._socket = _socket_of(connection, None)
        if hasattr(self._socket, "settimeout"):
            self._socket.settimeout(None)
        self._closing = threading.Lock()
        self._closed = False

    def write(self, data: bytes) -> None:
        try:
            self._socket.sendall(data)
        except OSError as exc:
            raise ProviderError(f"the command's input is closed: {exc}") from exc

    def exit_code(self, wait: float = 5.0) -> int | None:
        """The command's exit code once it has ended (Docker may need a moment after the stream closes)."""
        deadline = time.monotonic() + wait
        while True:
            with self.engine.errors("read the exit code"):
                info = self.engine.client.api.exec_inspect(self.exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def close(self) -> None:
        """Hang up, then end the command with every process it started if it still runs: Docker leaves
        an exec's command running when its connection closes."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for step in (lambda: self._socket.shutdown(socket.SHUT_RDWR), self._socket.close, self._connection.close):
                try:
                    step()
                except OSError:
                    pass
            try:
                self.engine._kill_exec(self.exec_id)
            except VmhostError as exc:
                log.warning("could not end command %s: %s", self.exec_id, exc.detail)


class DockerTerminal(_DockerSession):
    """A docker exec with a TTY (raw bytes both ways)."""

    def read(self) -> bytes:
        try:
            return self._socket.recv(65536)
        except OSError:
            return b""

    def resize(self, cols: int, rows: int) -> None:
        with self.engine.errors("resize the terminal"):
            self.engine.client.api.exec_resize(self.exec_id, height=rows, width=cols)


class DockerProcess(_DockerSession):
    """A docker exec without a TTY: Docker sends its output in frames, an 8-byte head (the stream, 1 or
    2, and the length) before each chunk."""

    def read(self) -> tuple[str, bytes] | None:
        try:
            head = _receive_exactly(self._socket, 8)
            if head is None:
                return None
            data = _receive_exactly(self._socket, int.from_bytes(head[4:8], "big"))
        except OSError:
            return None
        if data is None:
            return None
        return ("stderr" if head[0] == 2 else "stdout"), data

    def close_stdin(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _receive_exactly(sock: Any, size: int) -> bytes | None:
    """`size` bytes from `sock`, or None when it ends first."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks.extend(chunk)
    return bytes(chunks)


def _start_failure(message: str, argv: list[str], workdir: str | None) -> tuple[int, str]:
    """Docker's 'OCI runtime exec failed' text as an exit code and a sentence a person can act on."""
    if "chdir to cwd" in message:
        return 126, f"cannot run {argv[0]}: the working directory {workdir} does not exist in the workspace"
    if "executable file not found" in message or "no such file or directory" in message:
        return 127, f"command not found in the workspace: {argv[0]}"
    if "permission denied" in message:
        return 126, f"cannot run {argv[0]}: permission denied (is it an executable file?)"
    return 126, f"cannot run {argv[0]}: {message.strip()}"


def _feed(sock: Any, data: bytes) -> None:
    """Write a command's standard input, then close it so the command sees its end."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _socket_of(connection: Any, timeout: float | None) -> Any:
    """Something to recv, sendall and shutdown on, for exec_start(socket=True)'s connection: the connection
    itself when it can (a socket, an SSH channel), else (the SDK hands a socket.SocketIO over a Unix socket
    or plain TCP) a socket on a duplicate of its descriptor, with the connection's timeout (the client's),
    to be closed apart from it: a shutdown through it ends the connection for both."""
    if hasattr(connection, "recv"):
        return connection
    sock = socket.socket(fileno=os.dup(connection.fileno()))
    sock.settimeout(timeout)
    return sock


def _close_quietly(connection: Any) -> None:
    for step in (lambda: connection.shutdown(socket.SHUT_RDWR), connection.close):
        try:
            step()
        except (OSError, AttributeError):
            pass
