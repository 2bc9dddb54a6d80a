"""The idle stop on a real daemon whose janitor runs every second: a workspace nobody uses is warned, then
stopped by an `idle_stop` operation; commands, a shell and an event stream on it keep it up; the activity
outlives a restart of the daemon. (tests/unit/test_idle.py covers the janitor's decisions on a clock.)"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from conftest import create_ws
from httpx_ws import connect_ws
from test_events import last_id
from test_shell import Shell, open_shell

WATCHED = "workspace.idle,workspace.status"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def now() -> datetime:
    return datetime.now(UTC)


def events(client: httpx.Client, workspace_id: str, since: int) -> list[dict[str, Any]]:
    """The workspace's idle and status events after `since` (a poll: not activity on the workspace)."""
    page = client.get("/api/v1/events", params={"since": since, "workspace_id": workspace_id, "types": WATCHED,
                                                "limit": 1000}).json()
    return page["items"]


def kinds(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["payload"].get("stage") or e["payload"]["status"]) for e in found]


def workspace(client: httpx.Client, workspace_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/workspaces/{workspace_id}")  # a read: not activity either
    response.raise_for_status()
    return response.json()


def wait_stopped(client: httpx.Client, workspace_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (found := workspace(client, workspace_id))["status"] != "stopped":
        assert time.monotonic() < deadline, f"not stopped after {timeout} s: {found}"
        time.sleep(0.25)
    return found


def command(client: httpx.Client, workspace_id: str) -> None:
    response = client.post(f"/api/v1/workspaces/{workspace_id}/commands", json={"argv": ["true"], "stream": True})
    assert response.status_code == 200, response.text
    assert json.loads(response.text.splitlines()[-1])["exit_code"] == 0


def assert_idle_stopped(client: httpx.Client, workspace_id: str, since: int) -> list[dict[str, Any]]:
    """The workspace was warned, then stopped by the janitor's idle_stop operation, audited; the events."""
    found = events(client, workspace_id, since)
    assert kinds(found) == [("workspace.idle", "warning"), ("workspace.status", "stopped"),
                            ("workspace.idle", "stopped")], found
    warning, status, stopped = found
    assert when(warning["time"]) < when(status["time"])
    assert warning["payload"]["action"] == "stop"
    operation = client.get("/api/v1/operations", params={"workspace_id": workspace_id}).json()["items"][0]
    assert (operation["type"], operation["requested_by"], operation["status"]) == ("idle_stop", "janitor", "succeeded")
    assert operation["result"]["stopped"] is True
    assert stopped["payload"]["operation_id"] == operation["id"]
    audit = client.get("/api/v1/audit", params={"workspace": workspace_id}).json()["items"]
    assert any(e["action"] == "idle_stop" and e["user"] == "janitor" for e in audit), audit
    return found


def test_an_idle_workspace_is_warned_then_stopped_and_open_sessions_keep_it_up(make_daemon, name: str) -> None:
    daemon = make_daemon({"VMHOST_IDLE_WARNING": "2"})
    with daemon.client() as client:
        created = create_ws(client, name)["workspace"]
        assert (created["idle_timeout_seconds"], created["idle_stop_at"]) == (None, None)
        edit = daemon.cli("ws", "edit", name, "--idle-timeout", "4s", "--json")
        assert edit.returncode == 0, edit.stderr
        edited = json.loads(edit.stdout)
        assert edited["idle_timeout_seconds"] == 4
        assert when(edited["idle_stop_at"]) - when(edited["last_activity_at"]) == timedelta(seconds=4)
        shown = daemon.cli("ws", "show", name)
        assert "after 4s without activity" in shown.stdout and "Last activity" in shown.stdout, shown.stdout

        with open_shell(client, created["id"]) as socket:  # a shell open for longer than the timeout
            shell = Shell(socket)
            shell.type("echo ready")
            shell.read_until(b"ready")
            time.sleep(6)
            during = workspace(client, created["id"])
            assert during["status"] == "running"
            assert when(during["idle_stop_at"]) > now() + timedelta(seconds=3)  # active now
        with connect_ws(f"/ws/workspaces/{created['id']}/events", client) as stream:  # an event stream on it
            stream.receive_text(timeout=10)
            time.sleep(6)
            assert workspace(client, created["id"])["status"] == "running"
        since = last_id(client)

        stopped = wait_stopped(client, created["id"], timeout=20)
        assert stopped["idle_stop_at"] is None and stopped["idle_timeout_seconds"] == 4
        assert_idle_stopped(client, created["id"], since)
        listed = daemon.cli("ops", "ls", "--workspace", name)
        assert "idle_stop" in listed.stdout and "janitor" in listed.stdout, listed.stdout


def test_commands_every_few_seconds_keep_a_workspace_with_a_20_s_idle_timeout_up(make_daemon, name: str) -> None:
    daemon = make_daemon()  # the default warning (300 s) comes at half a timeout this short: 10 s before
    with daemon.client() as client:
        created = create_ws(client, name)["workspace"]
        since = last_id(client)
        response = client.patch(f"/api/v1/workspaces/{created['id']}", json={"idle_timeout_seconds": 20})
        assert response.status_code == 200, response.text
        busy_until = time.monotonic() + 28
        while time.monotonic() < busy_until:  # longer than the idle timeout, never 10 s without a command
            command(client, created["id"])
            last_command = now()
            time.sleep(3)
        assert workspace(client, created["id"])["status"] == "running"
        assert events(client, created["id"], since) == []  # not even warned

        stopped = wait_stopped(client, created["id"], timeout=30)
        found = assert_idle_stopped(client, created["id"], since)
        warned, stopped_at = when(found[0]["time"]), when(found[1]["time"])
        assert warned >= last_command + timedelta(seconds=9)
        assert stopped_at >= last_command + timedelta(seconds=19)
        assert stopped_at - warned >= timedelta(seconds=8)
        assert when(stopped["last_activity_at"]) < last_command + timedelta(seconds=1)


def test_a_restart_keeps_the_activity_recorded_just_before_it(make_daemon, name: str) -> None:
    daemon = make_daemon({"VMHOST_IDLE_WARNING": "2"})
    with daemon.client() as client:
        created = create_ws(client, name)["workspace"]
        client.patch(f"/api/v1/workspaces/{created['id']}", json={"idle_timeout_seconds": 6}).raise_for_status()
        command(client, created["id"])
        used = now()
    daemon.stop()  # a clean stop writes what it recorded in memory
    with sqlite3.connect(daemon.db_path) as db:
        stored = db.execute("SELECT last_activity_at FROM workspaces WHERE id = ?", (created["id"],)).fetchone()[0]
    assert when(stored) >= used - timedelta(seconds=1)

    time.sleep(5)  # the idle timeout has almost passed, but the daemon's start counts as activity
    daemon.start()
    with daemon.client() as client:
        time.sleep(3)
        assert workspace(client, created["id"])["status"] == "running"
        # counted from the daemon's start, not from the use before it
        assert when(workspace(client, created["id"])["idle_stop_at"]) > when(stored) + timedelta(seconds=6 + 4)
        wait_stopped(client, created["id"], timeout=20)
