"""Bad input at scale: huge and deeply nested bodies, invalid UTF-8, clients that send a request a byte
at a time or never finish it, and a long fuzzing run. Never a 5xx, never a hang, others still served."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_openapi import FUZZ_CHECKS, SKIPPED

from faults.conftest import FaultDaemon, PrivateEngine, unique

NO_HANG = 20
HALF_OPEN = 50


def assert_refused(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    assert body["detail"] and body["code"], body
    return body


@pytest.fixture
def daemon(fault_daemon: Any, engine: PrivateEngine) -> FaultDaemon:
    return fault_daemon()


def test_huge_labels_and_bodies_over_the_limit_are_4xx_naming_the_problem(daemon: FaultDaemon) -> None:
    with daemon.client(timeout=NO_HANG) as client:
        many = {f"k{i}": "v" for i in range(20_000)}
        assert_refused(client.post("/api/v1/workspaces", json={"name": unique("big"), "labels": many}), 422)
        long_value = {"team": "x" * 500_000}
        assert_refused(client.post("/api/v1/workspaces", json={"name": unique("big"), "labels": long_value}), 422)
        long_key = {"k" * 100_000: "v"}
        assert_refused(client.post("/api/v1/workspaces", json={"name": unique("big"), "labels": long_key}), 422)
        too_big = assert_refused(client.post("/api/v1/workspaces", json={"name": "x" * 2_000_000}), 413)
        assert "limit" in too_big["detail"]
        assert client.get("/api/v1/workspaces").status_code == 200


def test_deeply_nested_json_is_422_not_a_crash(daemon: FaultDaemon) -> None:
    depth = 100_000
    bodies = ["[" * depth + "]" * depth, '{"name": ' + "[" * depth + "]" * depth + "}",
              '{"labels": ' + '{"a": ' * depth + "1" + "}" * depth + "}"]
    with daemon.client(timeout=NO_HANG) as client:
        for body in bodies:
            for path in ("/api/v1/workspaces", "/api/v1/tokens"):
                assert_refused(client.post(path, content=body, headers={"content-type": "application/json"}),
                               422, 413)
        assert client.get("/health").status_code == 200


def test_invalid_utf8_and_malformed_bodies_are_422(daemon: FaultDaemon) -> None:
    bodies = [b'{"name": "\xff\xfe\xfd"}', b"\xc3\x28", b'{"name": "ok", "labels": {"\xed\xa0\x80": "v"}}',
              b'{"name": "a\x00b"}', b"", b"null", b'{"name": 1e999999}', b"{" * 10]
    with daemon.client(timeout=NO_HANG) as client:
        for body in bodies:
            for path in ("/api/v1/workspaces", "/api/v1/tokens"):
                assert_refused(client.post(path, content=body, headers={"content-type": "application/json"}),
                               422, 400)
        with daemon.tcp() as tcp:  # before authentication, on the other door
            response = tcp.post("/api/v1/workspaces", content=b"\xff" * 100,
                                headers={"content-type": "application/json", "x-vm-user": b"\xff"})
            assert response.status_code < 500, response.text


def _slow_writer(address: Any, family: int, request: bytes, delay: float, done: threading.Event,
                 answers: list[bytes]) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(NO_HANG)
        sock.connect(address)
        for byte in request:
            sock.sendall(bytes([byte]))
            time.sleep(delay)
        answers.append(sock.recv(65536))
    done.set()


def test_slow_and_half_open_clients_do_not_stop_others_being_served(daemon: FaultDaemon) -> None:
    held: list[socket.socket] = []
    try:
        for number in range(HALF_OPEN):  # requests that never finish, on both doors
            if number % 2:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(daemon.socket))
            else:
                sock = socket.create_connection(("127.0.0.1", daemon.port))
            sock.sendall(b"POST /api/v1/workspaces HTTP/1.1\r\nHost: vmhost\r\nContent-Length: 1000\r\n\r\n{\"na")
            held.append(sock)
        request = b"GET /api/v1/workspaces HTTP/1.1\r\nHost: vmhost\r\nConnection: close\r\n\r\n"
        done, answers = threading.Event(), []
        writer = threading.Thread(target=_slow_writer, args=(str(daemon.socket), socket.AF_UNIX, request, 0.05,
                                                             done, answers))
        writer.start()
        served = 0
        with daemon.client(timeout=NO_HANG) as client, daemon.tcp() as tcp:
            while not done.is_set():
                assert client.get("/api/v1/workspaces").status_code == 200
                assert tcp.get("/health").status_code in (200, 503)
                served += 1
                time.sleep(0.05)
            assert client.post("/api/v1/workspaces", json={"name": unique("slow"), "template": "base"}
                               ).status_code == 202
        writer.join(NO_HANG)
        assert served > 10, "others were not served while a slow client wrote"
        assert answers and answers[0].startswith(b"HTTP/1.1 200"), answers
    finally:
        for sock in held:
            sock.close()


@pytest.mark.slow
def test_fuzzing_the_whole_spec_with_a_large_budget_finds_no_server_error(daemon: FaultDaemon) -> None:
    token = daemon.token("root", admin=True)
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{daemon.url}/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--checks", FUZZ_CHECKS,
         "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "100", "--max-time", "600",
         "--workers", "2", "--request-timeout", "30", "--no-shrink", "--exclude-path-regex", SKIPPED],
        capture_output=True, text=True, timeout=900, check=False, cwd=daemon.dir)  # its cache stays there
    report = run.stdout[run.stdout.find("FAILURES"):] if "FAILURES" in run.stdout else run.stdout[-4000:]
    print(run.stdout[-1500:])
    assert run.returncode == 0, f"{report}\n{run.stderr[-2000:]}\ndaemon log:\n{daemon.log()[-3000:]}"
    assert "Traceback" not in daemon.log(), daemon.log()[-5000:]
