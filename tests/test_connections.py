"""Connections: kept alive longer than clients keep theirs, closed when a request head does not come,
capped below the descriptor limit with room kept for the Unix socket, and a client that sends a read
again when its kept-alive connection turns out closed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Daemon

from vmhost.cli.client import VmhostClient
from vmhost.errors import DaemonUnreachable

HEALTH = b"GET /health HTTP/1.1\r\nHost: vmhost\r\n\r\n"


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (Content-Length framed), or what came before the connection closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_request_after_6_s_idle_on_a_kept_alive_connection_is_answered(daemon: Daemon) -> None:
    # httpx keeps an idle connection 5 s, browsers longer: the daemon must keep it longer still
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(HEALTH)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6)
        sock.sendall(HEALTH)
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_a_connection_that_sends_no_whole_request_head_is_closed(make_daemon: Any) -> None:
    daemon = make_daemon({"VMHOST_HEADER_TIMEOUT": "1"})
    with contextlib.ExitStack() as stack:
        partial_tcp = stack.enter_context(socket.create_connection(("127.0.0.1", daemon.port), timeout=30))
        silent_tcp = stack.enter_context(socket.create_connection(("127.0.0.1", daemon.port), timeout=30))
        partial_unix = stack.enter_context(socket.socket(socket.AF_UNIX))
        partial_unix.settimeout(30)
        partial_unix.connect(str(daemon.socket))
        for sock in (partial_tcp, partial_unix):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: vmhost\r\nX-Slow: ")
        for sock in (partial_tcp, silent_tcp, partial_unix):
            assert sock.recv(100) == b""  # closed by the daemon, not by the 30 s timeout
        # a kept-alive connection whose next request head stalls is closed the same way
        kept = stack.enter_context(socket.create_connection(("127.0.0.1", daemon.port), timeout=30))
        kept.sendall(HEALTH)
        assert read_response(kept).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /health HTTP/1.1\r\n")
        assert kept.recv(100) == b""
    with daemon.client() as client:
        assert client.get("/health").status_code == 200


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_request_body_that_stops_arriving_is_answered_408_and_closed(make_daemon: Any) -> None:
    daemon = make_daemon({"VMHOST_BODY_TIMEOUT": "1"})
    head = (b"POST /api/v1/workspaces HTTP/1.1\r\nHost: vmhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    with contextlib.ExitStack() as stack:
        trickling_unix = stack.enter_context(socket.socket(socket.AF_UNIX))
        trickling_unix.settimeout(30)
        trickling_unix.connect(str(daemon.socket))
        trickling_tcp = stack.enter_context(socket.create_connection(("127.0.0.1", daemon.port), timeout=30))
        for sock in (trickling_unix, trickling_tcp):
            sock.sendall(head + b'{"name": "')  # 10 of the 100 bytes promised, then nothing
        answer = read_until_closed(trickling_unix)  # closed by the daemon, not by the 30 s timeout
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"VMHOST_BODY_TIMEOUT" in answer
        assert read_until_closed(trickling_tcp).startswith(b"HTTP/1.1 4")
    with daemon.client() as client:  # the daemon goes on serving
        assert client.get("/health").status_code == 200


def open_idle_connections(port: int, count: int) -> list[socket.socket]:
    opened: list[socket.socket] = []
    failures = 0
    while len(opened) < count and failures < 5:
        try:
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            failures += 1
    return opened


def test_idle_tcp_connections_beyond_the_descriptor_limit_leave_the_unix_socket_open(make_daemon: Any) -> None:
    daemon = make_daemon(start=False)
    daemon.launcher = ["prlimit", "--nofile=512:512"]  # systemd's default is 1,024; smaller is quicker
    daemon.start()
    log_size = daemon.log_path.stat().st_size
    idle = open_idle_connections(daemon.port, 512 + 100)
    try:
        assert len(idle) > 512  # the daemon kept accepting (and closed what it could not hold)
        with daemon.client(timeout=15) as admin:  # the admin on the host still gets in
            assert admin.get("/health").status_code == 200
        with daemon.tcp() as newcomer:  # and a new TCP client too: an idle one made room
            assert newcomer.get("/health").status_code == 200
    finally:
        for sock in idle:
            sock.close()
    with daemon.client(timeout=15) as admin:
        assert admin.get("/health").status_code == 200
    grown = daemon.log()[log_size:]
    assert len(grown) < 8192, grown[-2000:]  # a line or two a minute, not one per connection


@contextlib.contextmanager
def server_that_drops_the_second_request() -> Iterator[tuple[int, list[bytes]]]:
    """A tiny HTTP server: each connection answers its first request and keeps alive, then closes on
    the second without answering (the kept-alive connection a client reuses as the server drops it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    requests: list[bytes] = []
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn:
            data = conn.recv(65536)
            requests.append(data.split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            data = conn.recv(65536)
            if data:
                requests.append(data.split(b"\r\n", 1)[0])

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], requests
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_the_cli_client_sends_a_read_again_when_its_kept_alive_connection_was_closed() -> None:
    with server_that_drops_the_second_request() as (port, requests):
        client = VmhostClient(url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            assert client.get("/me") == {}
            assert client.get("/me") == {}  # its connection was closed under it: sent again on a new one
            assert requests == [b"GET /api/v1/me HTTP/1.1"] * 3
            with pytest.raises(DaemonUnreachable):  # a write is not repeated
                client.post("/workspaces", {"name": "x"})
            assert requests.count(b"POST /api/v1/workspaces HTTP/1.1") == 1
        finally:
            client.close()
