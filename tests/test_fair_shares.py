"""Fair shares of a daemon's long-lived work: per-user limits on each kind of session (429 with
Retry-After past them, another user unaffected), waits that end when their client goes away, a shell
whose processes end with its socket, and command output that a client who never reads cannot pile up
in the daemon's memory."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import docker
import httpx
import pytest
from conftest import Daemon, create_ws
from httpx_ws import WebSocketDisconnect, connect_ws

from vmhost.core.channel import Channel

LIMITS = {"VMHOST_USER_MAX_COMMAND_STREAMS": "2", "VMHOST_USER_MAX_WAITS": "2", "VMHOST_USER_MAX_SHELLS": "1",
          "VMHOST_USER_MAX_LOG_STREAMS": "1", "VMHOST_USER_MAX_EVENT_STREAMS": "1"}


def eventually(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """`check()`'s first truthy answer, asked every 0.2 s for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.2)
    return answer


def assert_too_many(response: httpx.Response, kind: str) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "too_many_requests"
    assert kind in response.json()["detail"]
    assert int(response.headers["Retry-After"]) > 0


@contextmanager
def streamed(client: httpx.Client, ref: str, argv: list[str]) -> Iterator[httpx.Response]:
    with client.stream("POST", f"/api/v1/workspaces/{ref}/commands",
                       json={"argv": argv, "stream": True, "timeout_seconds": 60}) as response:
        yield response


def ws_refusal(client: httpx.Client, path: str) -> tuple[int, str]:
    with connect_ws(path, client) as ws, pytest.raises(WebSocketDisconnect) as refused:
        while True:
            ws.receive(timeout=10)
    return refused.value.code, refused.value.reason


def raw_request(daemon: Daemon, method: str, path: str, token: str | None = None,
                body: dict[str, Any] | None = None) -> socket.socket:
    """A request sent on a socket of its own, whose answer the test reads (or not) as it likes: over
    TCP with a token, else over the daemon's Unix socket."""
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: vmhost\r\nContent-Length: {len(data)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
        connection = socket.create_connection(("127.0.0.1", daemon.port))
    else:
        connection = socket.socket(socket.AF_UNIX)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        connection.connect(str(daemon.socket))
    connection.sendall(head.encode() + b"\r\n" + data)
    return connection


def another_wait(client: httpx.Client, operation_id: str) -> httpx.Response:
    return client.get(f"/api/v1/operations/{operation_id}/wait", params={"timeout": 0})


def hold_waits(daemon: Daemon, token: str, client: httpx.Client, operation_id: str,
               count: int) -> tuple[list[socket.socket], httpx.Response]:
    """`count` waits held open on sockets of their own, and the refusal of one more. A probe may take a
    place for a moment before the waits do: a wait answered (refused) then is sent again."""
    path = f"/api/v1/operations/{operation_id}/wait?timeout=60"
    waits = [raw_request(daemon, "GET", path, token) for _ in range(count)]

    def refused() -> httpx.Response | None:
        for number, wait in enumerate(waits):
            wait.setblocking(False)
            try:
                answered = wait.recv(1)
            except BlockingIOError:
                continue
            wait.close()
            assert answered.startswith(b"H"), "a wait's connection closed"
            waits[number] = raw_request(daemon, "GET", path, token)
        probe = another_wait(client, operation_id)
        return probe if probe.status_code == 429 else None

    return waits, eventually(refused, f"{count} waits held")


def test_each_kind_of_session_is_limited_per_user_with_429_and_retry_after(make_daemon: Any, name: str) -> None:
    daemon: Daemon = make_daemon(LIMITS)
    alice_token, bob_token = daemon.token(f"alice-{name}"), daemon.token(f"bob-{name}")
    with daemon.tcp(token=alice_token) as alice, daemon.tcp(token=bob_token) as bob, ExitStack() as held:
        mine, theirs = f"{name}-a", f"{name}-b"
        create_ws(alice, mine)
        create_ws(bob, theirs)

        for _ in range(2):
            assert held.enter_context(streamed(alice, mine, ["sleep", "30"])).status_code == 200
        with streamed(alice, mine, ["echo", "one too many"]) as refused:
            refused.read()
            assert_too_many(refused, "streamed commands")
        with streamed(bob, theirs, ["echo", "hi"]) as fine:
            assert [json.loads(line) for line in fine.iter_lines()][0] == {"stream": "stdout", "data": "hi\n"}
        cli = daemon.cli("--url", daemon.url, "--token", alice_token, "ws", "exec", mine, "--", "echo", "hi")
        assert cli.returncode == 9, cli
        assert len(cli.stderr.strip().splitlines()) == 1 and "try again" in cli.stderr, cli.stderr

        operation = alice.post(f"/api/v1/workspaces/{mine}/commands", json={"argv": ["sleep", "30"]}).json()
        waits, refusal = hold_waits(daemon, alice_token, alice, operation["id"], 2)
        assert_too_many(refusal, "operation waits")
        for wait in waits:
            held.callback(wait.close)
        own = bob.post(f"/api/v1/workspaces/{theirs}/commands", json={"argv": ["true"]}).json()
        assert bob.get(f"/api/v1/operations/{own['id']}/wait", params={"timeout": 30}).json()["status"] == "succeeded"
        assert alice.delete(f"/api/v1/operations/{operation['id']}").status_code == 200  # her waits end with it

        logs = held.enter_context(alice.stream("GET", f"/api/v1/workspaces/{mine}/logs", params={"follow": True}))
        assert logs.status_code == 200
        assert_too_many(alice.get(f"/api/v1/workspaces/{mine}/logs"), "log streams")
        assert bob.get(f"/api/v1/workspaces/{theirs}/logs").status_code == 200

        shell = held.enter_context(connect_ws(f"/ws/workspaces/{mine}/shell?argv=cat", alice))
        shell.send_bytes(b"ping\n")
        echoed = b""
        while b"ping" not in echoed:
            echoed += shell.receive_bytes(timeout=10)
        code, reason = ws_refusal(alice, f"/ws/workspaces/{mine}/shell")
        assert code == 4429 and "shells" in reason, reason
        with connect_ws(f"/ws/workspaces/{theirs}/shell?argv=true", bob) as other:
            with pytest.raises(WebSocketDisconnect) as ended:
                while True:
                    other.receive(timeout=10)
            assert ended.value.code == 1000

        events = held.enter_context(connect_ws("/ws/events", alice))
        assert events.receive_json(timeout=10)["type"] == "heartbeat"
        assert ws_refusal(alice, "/ws/events")[0] == 4429
        with connect_ws("/ws/events", bob) as theirs_events:
            assert theirs_events.receive_json(timeout=10)["type"] == "heartbeat"

    # everything alice held is given back once her connections close
    with daemon.tcp(token=alice_token) as alice:
        def all_open_again() -> bool:
            with ExitStack() as again:
                ok = all(again.enter_context(streamed(alice, mine, ["true"])).status_code == 200 for _ in range(2))
                return ok and alice.get(f"/api/v1/workspaces/{mine}/logs").status_code == 200
        eventually(all_open_again, "alice's sessions given back")
        with connect_ws("/ws/events", alice) as events:
            assert events.receive_json(timeout=10)["type"] == "heartbeat"


def test_a_wait_ends_when_its_client_goes_away(make_daemon: Any, name: str) -> None:
    daemon: Daemon = make_daemon({"VMHOST_USER_MAX_WAITS": "2"})
    token = daemon.token(f"carol-{name}")
    with daemon.tcp(token=token) as carol:
        create_ws(carol, name)
        operation = carol.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sleep", "60"]}).json()
        waits, _ = hold_waits(daemon, token, carol, operation["id"], 2)
        for wait in waits:
            wait.close()
        # the daemon notices its clients left and gives their places back within seconds, not 60 s
        eventually(lambda: another_wait(carol, operation["id"]).status_code == 200, "a wait accepted again",
                   timeout=15)
        carol.delete(f"/api/v1/operations/{operation['id']}")


def processes(docker_client: docker.DockerClient, container_id: str) -> list[str]:
    top = docker_client.api.top(container_id)
    column = top["Titles"].index("CMD")
    return [row[column] for row in top["Processes"]]


def test_a_shell_closed_without_exit_ends_its_processes(daemon: Daemon, api: httpx.Client,
                                                        docker_client: docker.DockerClient, name: str) -> None:
    container_id = create_ws(api, name)["workspace"]["connection"]["container_id"]
    with connect_ws(f"/ws/workspaces/{name}/shell", api) as ws:
        ws.send_bytes(b"sleep 1234 & sleep 1234\n")
        eventually(lambda: sum("sleep 1234" in p for p in processes(docker_client, container_id)) == 2,
                   "the shell's sleeps started")
    # the socket closed without `exit`: the shell and everything it started end, as a command's timeout does
    eventually(lambda: not any("sleep 1234" in p or p == "/bin/sh" for p in processes(docker_client, container_id)),
               "the shell's processes ended")


def test_a_client_that_never_reads_a_stream_slows_the_command_not_the_daemons_memory(
        daemon: Daemon, api: httpx.Client, docker_client: docker.DockerClient, name: str) -> None:
    container_id = create_ws(api, name)["workspace"]["connection"]["container_id"]
    baseline = daemon.rss_kib()
    client = raw_request(daemon, "POST", f"/api/v1/workspaces/{name}/commands",
                         body={"argv": ["yes", "vmhost"], "stream": True, "timeout_seconds": 120})
    try:
        eventually(lambda: any(p.startswith("yes") for p in processes(docker_client, container_id)), "yes started")
        peak = baseline
        for _ in range(10):  # `yes` writes as fast as it can; the client reads nothing
            time.sleep(1)
            peak = max(peak, daemon.rss_kib())
        print(f"daemon VmRSS: {baseline} KiB before, at most {peak} KiB while the client did not read")
        assert peak - baseline < 100 * 1024, f"the daemon grew from {baseline} to {peak} KiB"
        assert any(p.startswith("yes") for p in processes(docker_client, container_id)), "held, not killed"
        client.settimeout(10)
        assert b"vmhost\\nvmhost" in client.recv(65536) + client.recv(65536)  # and it goes on when read
    finally:
        client.close()
    eventually(lambda: not any(p.startswith("yes") for p in processes(docker_client, container_id)),
               "the command killed once its client went away")


def test_the_output_channel_holds_its_producer_at_its_bound_and_lets_it_go_when_closed() -> None:
    channel: Channel[int] = Channel(max_bytes=10)
    accepted: list[bool] = []

    def produce() -> None:
        for item in range(6):
            accepted.append(channel.put(item, 4))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    eventually(lambda: len(accepted) == 2, "two items taken")
    producer.join(0.3)
    assert len(accepted) == 2 and producer.is_alive(), "a third item would pass the bound: the producer waits"

    async def take(count: int) -> list[int]:
        return [await channel.get() for _ in range(count)]

    consumer = asyncio.new_event_loop()
    try:
        assert consumer.run_until_complete(take(3)) == [0, 1, 2]  # each item taken makes room for the next
        eventually(lambda: len(accepted) == 5, "3 and 4 taken in, 5 waiting")
        channel.close()  # the consumer left: the producer is let go at once, its item dropped
        producer.join(10)
        assert not producer.is_alive() and accepted == [True] * 5 + [False]
    finally:
        consumer.close()
