"""The port relay (vmhost.core.port_relay) with its real shell script, run here by `sh` with a PATH that
holds only one of the programs it may find in an image (busybox's nc, python3, bash), against a TCP
server on this host's loopback: what a Swarm workspace's port gets through its node."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from vmhost.core.port_relay import HANG_UP_GRACE, open_relay

BUSYBOX = shutil.which("busybox")
PROGRAMS = {"nc": BUSYBOX, "python3": sys.executable, "bash": shutil.which("bash")}


class LocalProcess:
    """A command on this host with the engine's Process interface (its output, stdout and stderr apart)."""

    def __init__(self, argv: list[str], path: Path) -> None:
        self.popen = subprocess.Popen(argv, env={"PATH": str(path)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self.output: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._open = 2
        for name, stream in (("stdout", self.popen.stdout), ("stderr", self.popen.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream: IO[bytes] | None) -> None:
        assert stream is not None
        while data := os.read(stream.fileno(), 65536):
            self.output.put((name, data))
        self.output.put(None)

    def read(self) -> tuple[str, bytes] | None:
        while self._open:
            item = self.output.get()
            if item is not None:
                return item
            self._open -= 1
        return None

    def write(self, data: bytes) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(data)
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.close()

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def close(self) -> None:
        self.popen.kill()
        self.popen.wait()


class OneCommandEngine:
    """An engine whose containers' commands run here, with only the given programs on their PATH."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.processes: list[LocalProcess] = []

    def open_process(self, container_id: str, argv: list[str], env: Any = None, workdir: Any = None) -> LocalProcess:
        self.processes.append(LocalProcess(argv, self.path))
        return self.processes[-1]


def image_with(tmp_path: Path, *programs: str) -> OneCommandEngine:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in {"sh": "/bin/sh", "grep": shutil.which("grep"), "cat": shutil.which("cat"),
                         **{p: PROGRAMS[p] for p in programs}}.items():
        assert target is not None, f"{name} is not on this machine"
        (bin_dir / name).symlink_to(target)
    return OneCommandEngine(bin_dir)


@pytest.fixture
def echo_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that writes back what it reads and closes at its input's end; answers its
    port and the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    def echo(connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()


def receive_all(connection: socket.socket) -> bytes:
    connection.settimeout(10)
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("program", ["nc", "python3", "bash"])
def test_the_relay_carries_bytes_both_ways(program: str, tmp_path: Path,
                                           echo_server: tuple[int, list[socket.socket]]) -> None:
    if PROGRAMS[program] is None:
        pytest.skip(f"no {program} on this machine")
    port, _ = echo_server
    engine = image_with(tmp_path, program)
    payload = bytes(range(256)) * 2048  # 512 KiB, binary
    with open_relay(engine, "c1", port, 10) as connection:  # type: ignore[arg-type]
        connection.settimeout(10)
        sender = threading.Thread(target=connection.sendall, args=(payload,))
        sender.start()
        received = b""
        while len(received) < len(payload) and (chunk := connection.recv(65536)):
            received += chunk
        sender.join()
        assert received == payload
        if program != "bash":  # bash's /dev/tcp cannot pass the end of input on: the server never sees it
            connection.shutdown(socket.SHUT_WR)
            assert connection.recv(1) == b""  # the server closed at its input's end, and the relay with it
    wait_until(lambda: engine.processes[0].exit_code() is not None)


def test_nothing_listening_and_no_program_are_told_apart(tmp_path: Path,
                                                         echo_server: tuple[int, list[socket.socket]]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        free_port = closed.getsockname()[1]
    with pytest.raises(ConnectionRefusedError, match=f"nothing listens on port {free_port} in the workspace"):
        open_relay(image_with(tmp_path, "python3"), "c1", free_port, 10)  # type: ignore[arg-type]
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ConnectionRefusedError, match="has none of nc, socat, python3 or bash"):
        open_relay(image_with(bare, ), "c1", echo_server[0], 10)  # type: ignore[arg-type]


def test_hanging_up_ends_the_relay_while_the_server_keeps_its_side_open(
        tmp_path: Path, echo_server: tuple[int, list[socket.socket]]) -> None:
    port, accepted = echo_server
    engine = image_with(tmp_path, "python3")
    connection = open_relay(engine, "c1", port, 10)  # type: ignore[arg-type]
    connection.sendall(b"ping")
    connection.settimeout(10)
    assert connection.recv(4) == b"ping"
    connection.close()  # no end of input first: the server would wait for more
    wait_until(lambda: engine.processes[0].exit_code() is not None)
    wait_until(lambda: accepted[0].fileno() == -1)  # the server saw the connection end


def test_a_relay_whose_server_holds_on_is_ended_after_the_grace(tmp_path: Path) -> None:
    engine = image_with(tmp_path, "python3")
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, then never reads nor closes
        connection = open_relay(engine, "c1", listener.getsockname()[1], 10)  # type: ignore[arg-type]
        held, _ = listener.accept()
        connection.close()
        began = time.monotonic()
        wait_until(lambda: engine.processes[0].exit_code() is not None)
        assert time.monotonic() - began >= HANG_UP_GRACE - 0.5  # it had its chance to end by itself
        held.close()


def wait_until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)
