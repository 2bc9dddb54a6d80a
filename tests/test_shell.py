"""Shell over a WebSocket (round trip, resize, exit code, argv/workdir, access rules), container logs,
and the CLI's `ws shell` in a real terminal (tmux) and `ws logs`."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import wsproto.events
from conftest import REPO, Daemon, core_settings, create_ws, wait_op
from httpx_ws import WebSocketDisconnect, WebSocketSession, connect_ws

from vmhost.core.build import make_engine


class Shell:
    """The client end of a shell WebSocket: collects terminal output, remembers the exit frame."""

    def __init__(self, ws: WebSocketSession) -> None:
        self.ws = ws
        self.output = b""
        self.exit_code: int | None = None
        self.texts: list[dict[str, Any]] = []

    def type(self, line: str) -> None:
        self.ws.send_bytes(line.encode() + b"\n")

    def resize(self, cols: int, rows: int) -> None:
        self.ws.send_text(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    def read_until(self, needle: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never saw {needle!r}; output so far: {self.output!r}"
            self._take(self.ws.receive(timeout=remaining))
        return self.output

    def wait_exit(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                self._take(self.ws.receive(timeout=max(0.1, deadline - time.monotonic())))
        assert closed.value.code == 1000
        assert self.exit_code is not None, self.texts
        return self.exit_code

    def _take(self, event: Any) -> None:
        if isinstance(event, wsproto.events.BytesMessage):
            self.output += bytes(event.data)
        elif isinstance(event, wsproto.events.TextMessage):
            message = json.loads(event.data)
            self.texts.append(message)
            if message["type"] == "exit":
                self.exit_code = message["exit_code"]


def open_shell(client: httpx.Client, ref: str, **params: Any) -> Any:
    return connect_ws(str(httpx.URL(f"/ws/workspaces/{ref}/shell", params=params)), client)


def close_code(client: httpx.Client, ref: str) -> tuple[int, str]:
    with open_shell(client, ref) as ws, pytest.raises(WebSocketDisconnect) as refused:
        while ws.receive(timeout=10):  # an error frame comes first when the reason is too long
            pass
    return refused.value.code, refused.value.reason


def test_shell_round_trip_resize_and_exit_code(api: httpx.Client, name: str) -> None:
    create_ws(api, name)
    with open_shell(api, name) as ws:
        shell = Shell(ws)
        shell.resize(100, 30)
        shell.type("echo hello-$((6 * 7)); pwd")
        shell.read_until(b"hello-42")
        shell.read_until(b"/workspace")
        shell.type("stty size")
        shell.read_until(b"30 100")
        shell.resize(90, 25)
        shell.type("stty size; tty")
        shell.read_until(b"25 90")
        shell.read_until(b"/dev/pts/")
        shell.ws.send_text("not json")
        shell.type("exit 7")
        assert shell.wait_exit() == 7
    assert {"type": "error", "detail": shell.texts[0]["detail"], "code": "invalid_input"} == shell.texts[0]


def test_shell_runs_argv_in_workdir_and_over_tcp(daemon: Daemon, name: str) -> None:
    token = daemon.token(f"sam-{name}")
    with daemon.tcp(token=token) as client:
        create_ws(client, name)
        with open_shell(client, name, argv=["sh", "-c", "pwd; exit 3"], workdir="/tmp") as ws:
            shell = Shell(ws)
            assert shell.wait_exit() == 3
        assert b"/tmp" in shell.output
        with connect_ws(f"{daemon.url}/ws/workspaces/{name}/shell?argv=true&token={token}",
                        httpx.Client()) as ws:  # as a browser does it
            assert Shell(ws).wait_exit() == 0


def test_shell_follows_the_same_rules_as_rest(daemon: Daemon, api: httpx.Client, name: str) -> None:
    alice = daemon.token(f"alice-{name}")
    reader = daemon.token(f"alice-{name}", scope="read")
    bob = daemon.token(f"bob-{name}")
    with daemon.tcp(token=alice) as as_alice, daemon.tcp(token=bob) as as_bob, \
            daemon.tcp(token=reader) as as_reader, daemon.tcp() as nobody:
        workspace = create_ws(as_alice, name)["workspace"]
        assert close_code(as_bob, workspace["id"])[0] == 4404
        assert close_code(as_bob, name)[0] == 4404
        assert close_code(nobody, name)[0] == 4401
        assert close_code(as_reader, name) == (4403, "this token is read-only")
        wait_op(as_alice, as_alice.post(f"/api/v1/workspaces/{name}/stop").json()["id"])
        code, reason = close_code(as_alice, name)
        assert code == 4409 and "is stopped" in reason
        assert as_bob.get(f"/api/v1/workspaces/{name}/logs").status_code == 404


def test_logs_tail_and_follow(api: httpx.Client, docker_client: docker.DockerClient, name: str) -> None:
    workspace = create_ws(api, name)["workspace"]
    container = docker_client.containers.get(workspace["connection"]["container_id"])

    def say(text: str) -> None:  # PID 1 (docker's init) holds the container's stdout
        assert container.exec_run(["sh", "-c", f"echo {text} > /proc/1/fd/1"]).exit_code == 0

    say("first")
    say("second")
    response = api.get(f"/api/v1/workspaces/{name}/logs", params={"tail": 1})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert response.text == "second\n"
    with api.stream("GET", f"/api/v1/workspaces/{name}/logs", params={"follow": "true"}) as streamed:
        chunks = streamed.iter_text()
        seen = ""
        while "second" not in seen:
            seen += next(chunks)
        say("third")
        while "third" not in seen:
            seen += next(chunks)
    assert seen == "first\nsecond\nthird\n"


def test_cli_logs(daemon: Daemon, api: httpx.Client, docker_client: docker.DockerClient, name: str) -> None:
    workspace = create_ws(api, name)["workspace"]
    container = docker_client.containers.get(workspace["connection"]["container_id"])
    container.exec_run(["sh", "-c", "echo one > /proc/1/fd/1; echo two > /proc/1/fd/1"])
    done = daemon.cli("ws", "logs", name, "-n", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "two\n"
    missing = daemon.cli("ws", "logs", f"{name}-nope")
    assert missing.returncode == 3 and "no workspace" in missing.stderr


@pytest.fixture
def tmux() -> Iterator[Any]:
    session = f"vmh-{uuid.uuid4().hex[:8]}"

    def tmux_cmd(*args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout

    yield session, tmux_cmd
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)


def wait_screen(tmux_cmd: Any, session: str, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        screen = tmux_cmd("capture-pane", "-p", "-t", session)
        if needle in screen:
            return screen
        assert time.monotonic() < deadline, f"never saw {needle!r} on screen:\n{screen}"
        time.sleep(0.1)


def test_cli_shell_in_a_real_terminal(daemon: Daemon, api: httpx.Client, name: str, tmux: Any,
                                      tmp_path: Path) -> None:
    session, tmux_cmd = tmux
    create_ws(api, name)
    after = tmp_path / "stty-after"
    script = (f"cd {shlex.quote(str(REPO))}; export VMHOST_SOCKET={shlex.quote(str(daemon.socket))}; "
              f"{shlex.quote(sys.executable)} -m vmhost ws shell {name}; echo EXIT=$?; "
              f"stty -a > {shlex.quote(str(after))}; sleep 600")
    tmux_cmd("new-session", "-d", "-s", session, "-x", "120", "-y", "40", "bash", "--norc", "--noprofile", "-c",
             script)
    wait_screen(tmux_cmd, session, "/workspace #")  # busybox sh's prompt as root
    tmux_cmd("send-keys", "-t", session, "echo hi-$((40 + 2)); stty size", "Enter")
    wait_screen(tmux_cmd, session, "hi-42")
    wait_screen(tmux_cmd, session, "40 120")
    tmux_cmd("resize-window", "-t", session, "-x", "100", "-y", "30")  # SIGWINCH to the CLI
    time.sleep(0.5)
    tmux_cmd("send-keys", "-t", session, "clear; stty size", "Enter")
    wait_screen(tmux_cmd, session, "30 100")
    tmux_cmd("send-keys", "-t", session, "exit 5", "Enter")
    wait_screen(tmux_cmd, session, "EXIT=5")
    deadline = time.monotonic() + 10
    while not after.exists() or not after.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    flags = after.read_text().split()
    assert "echo" in flags and "icanon" in flags and "isig" in flags and "opost" in flags


def test_a_terminal_and_a_process_wait_for_output_past_the_engines_timeout(api: httpx.Client, name: str) -> None:
    """A shell at its prompt, or a tunnel's relay, may have nothing to say for longer than a Docker call
    may take (docker_timeout, 120 s by default): their reads wait; they ended at that timeout before."""
    container = f"vmhost-{create_ws(api, name)['workspace']['id']}"  # the container's name
    engine = make_engine(core_settings(docker_timeout=2))
    try:
        process = engine.open_process(container, ["sh", "-c", "sleep 3; echo late"])
        terminal = engine.open_terminal(container, ["sh", "-c", "sleep 3; echo late"])
        try:
            assert process.read() == ("stdout", b"late\n")
            assert terminal.read() == b"late\r\n"
        finally:
            process.close()
            terminal.close()
    finally:
        engine.close()
