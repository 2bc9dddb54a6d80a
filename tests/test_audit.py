"""The audit log: every mutation and every refusal, who made it, through which door, from where, on
which workspace, how it ended; kept after the workspace is gone; readable by admins only."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import create_ws, wait_op
from httpx_ws import WebSocketDisconnect, connect_ws


def test_mutations_are_recorded_with_who_door_address_workspace_and_result(make_daemon, name: str) -> None:
    process = make_daemon()
    with process.client() as root, process.tcp(process.token("alice")) as alice:
        workspace = create_ws(alice, name)["workspace"]
        wait_op(alice, alice.post(f"/api/v1/workspaces/{name}/actions/stop").json()["id"])
        assert alice.post("/api/v1/workspaces/nope/start").status_code == 404
        alice.get("/api/v1/workspaces")  # reads are not recorded
        wait_op(alice, alice.delete(f"/api/v1/workspaces/{workspace['id']}").json()["id"])
        assert alice.get(f"/api/v1/workspaces/{workspace['id']}").status_code == 404

        entries = root.get("/api/v1/audit", params={"user": "alice"}).json()["items"]
        seen = [(e["method"], e["action"], e["status"], e["code"]) for e in reversed(entries)]
        assert seen == [("POST", "create_workspace", 202, None), ("POST", "act:stop", 202, None),
                        ("POST", "act_short:start", 404, "workspace_not_found"),
                        ("DELETE", "delete_workspace", 202, None)]
        created = entries[-1]
        assert (created["user"], created["door"], created["address"]) == ("alice", "token", "127.0.0.1")
        assert (created["workspace_id"], created["workspace_name"]) == (workspace["id"], name)
        assert created["path"] == "/api/v1/workspaces"
        # kept after the workspace is gone, found by id or by name
        by_id = root.get("/api/v1/audit", params={"workspace": workspace["id"]}).json()["items"]
        assert [e["action"] for e in by_id] == ["delete_workspace", "act:stop", "create_workspace"]
        assert len(root.get("/api/v1/audit", params={"workspace": name}).json()["items"]) == 3
        # socket callers are recorded with their uid
        root.post("/api/v1/tokens", json={"user": "x"})
        mine = root.get("/api/v1/audit", params={"user": "root"}).json()["items"][0]
        assert mine["door"] == "socket" and mine["address"].startswith("unix:uid=0,")


def test_refused_requests_are_recorded_even_without_an_identity(make_daemon) -> None:
    process = make_daemon()
    reader = process.token("rita", scope="read")
    with process.tcp("not-a-token") as stranger:
        assert stranger.get("/api/v1/workspaces").status_code == 401
    with process.tcp(headers={"X-VM-User": "root"}) as spoofer:
        assert spoofer.post("/api/v1/tokens", json={}).status_code == 401
    with process.tcp(reader) as tcp:
        assert tcp.post("/api/v1/workspaces", json={"name": "nope"}).status_code == 403
    with process.client() as root:
        entries = root.get("/api/v1/audit").json()["items"]
    refused = [(e["user"], e["door"], e["method"], e["path"], e["status"], e["code"]) for e in entries[:3]]
    assert refused == [
        ("rita", "token", "POST", "/api/v1/workspaces", 403, "forbidden"),
        (None, "proxy", "POST", "/api/v1/tokens", 401, "unauthenticated"),
        (None, "token", "GET", "/api/v1/workspaces", 401, "unauthenticated"),
    ]


def test_entries_older_than_the_retention_are_pruned(make_daemon) -> None:
    process = make_daemon({"VMHOST_AUDIT_RETENTION": "5"})
    with process.client() as root:
        root.post("/api/v1/tokens", json={"user": "old"})
        assert [e["action"] for e in root.get("/api/v1/audit").json()["items"]] == ["create_token"]
        deadline = time.monotonic() + 30
        while root.get("/api/v1/audit").json()["items"]:
            assert time.monotonic() < deadline, "audit entries were never pruned"
            time.sleep(0.3)
        root.post("/api/v1/tokens", json={"user": "new"})  # recording goes on after a prune
        assert [e["path"] for e in root.get("/api/v1/audit").json()["items"]] == ["/api/v1/tokens"]


def test_audit_filters_by_time_and_is_for_admins_only(make_daemon) -> None:
    process = make_daemon()
    with process.client() as root:
        root.post("/api/v1/tokens", json={"user": "ann"})
        now = datetime.now(UTC)
        minute_ago, minute_on = (now - timedelta(minutes=1)).isoformat(), (now + timedelta(minutes=1)).isoformat()
        assert len(root.get("/api/v1/audit", params={"since": minute_ago}).json()["items"]) == 1
        assert root.get("/api/v1/audit", params={"since": minute_on}).json()["items"] == []
        assert root.get("/api/v1/audit", params={"until": minute_ago}).json()["items"] == []
        assert root.get("/api/v1/audit", params={"since": "yesterday"}).status_code == 422
        for name, edge in (("since", "0001-01-01T00:00:00+14:00"), ("until", "9999-12-31T23:59:59-14:00")):
            beyond = root.get("/api/v1/audit", params={name: edge})  # a valid time, but no year in UTC
            assert beyond.status_code == 422 and "out of range" in beyond.json()["detail"], beyond.text
    with process.tcp(process.token("ann")) as ann:
        refused = ann.get("/api/v1/audit")
        assert refused.status_code == 403 and "admins" in refused.json()["detail"]
    with process.tcp(process.token("boss", admin=True)) as boss:
        assert boss.get("/api/v1/audit", params={"user": "ann"}).json()["items"][0]["path"] == "/api/v1/audit"


def test_cli_audit(make_daemon) -> None:
    process = make_daemon()
    process.cli("tokens", "create", "--user", "carl")
    shown = process.cli("audit", "--since", "1h")
    assert shown.returncode == 0, shown.stderr
    assert "POST /api/v1/tokens" in shown.stdout and "create_token" in shown.stdout and "201" in shown.stdout
    assert "No audit entries." in process.cli("audit", "--user", "nobody-at-all").stdout
    bad = process.cli("audit", "--since", "whenever")
    assert bad.returncode == 2 and "invalid time" in bad.stderr


def test_websocket_sessions_are_recorded_refused_or_not(make_daemon) -> None:
    process = make_daemon()
    with process.tcp(process.token("wes")) as wes:
        with connect_ws("/ws/workspaces/nope/events", wes) as ws, pytest.raises(WebSocketDisconnect):
            ws.receive_text(timeout=10)
        with connect_ws("/ws/events", wes) as ws:
            ws.receive_text(timeout=10)  # the first frame: accepted
    with process.client() as root:
        entries = root.get("/api/v1/audit", params={"user": "wes"}).json()["items"]
    seen = sorted((e["method"], e["path"], e["status"], e["phase"] or "", e["workspace_name"] or "") for e in entries)
    assert seen == [("WS", "/ws/events", 101, "end", ""), ("WS", "/ws/events", 101, "start", ""),
                    ("WS", "/ws/workspaces/nope/events", 404, "", "nope")]
