"""Events over REST polling and WebSockets (httpx-ws, over the Unix socket and TCP): order, replay
after a disconnect, filters, heartbeats, gap markers, expiry warnings, access rules, and the CLI."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from conftest import Daemon, create_ws, wait_op
from httpx_ws import WebSocketDisconnect, WebSocketSession, connect_ws


@contextmanager
def events_socket(client: httpx.Client, path: str = "/ws/events", **params: Any) -> Iterator[WebSocketSession]:
    with connect_ws(str(httpx.URL(path, params={k: v for k, v in params.items() if v is not None})),
                    client) as ws:
        yield ws


def refusal(client: httpx.Client, path: str = "/ws/events", **params: Any) -> WebSocketDisconnect:
    """How the daemon closes a WebSocket it refuses (after an error frame when the reason is too long)."""
    with events_socket(client, path, **params) as ws, pytest.raises(WebSocketDisconnect) as refused:
        while json.loads(ws.receive_text(timeout=10))["type"] == "error":
            pass
    return refused.value


def frames_until(ws: WebSocketSession, done: Callable[[dict[str, Any]], bool], timeout: float = 60,
                 ) -> list[dict[str, Any]]:
    """Every frame received up to and including the first for which `done` is true."""
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"gave up waiting; received {frames}"
        frame = json.loads(ws.receive_text(timeout=remaining))
        frames.append(frame)
        if done(frame):
            return frames


def caught_up(frame: dict[str, Any]) -> bool:
    return frame["type"] == "heartbeat"


def op_ended(operation_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: (f["type"] == "operation.status" and f["payload"]["operation_id"] == operation_id
                      and f["payload"]["status"] in ("succeeded", "failed"))


def events_only(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if "id" in f]


def last_id(client: httpx.Client) -> int:
    """Where a poller that read everything stands now."""
    since = 0
    while True:
        page = client.get("/api/v1/events", params={"since": since, "limit": 1000}).json()
        if page["next_cursor"] is None:
            return page["last_id"]
        since = page["last_id"]


def test_stream_replays_then_goes_live_in_order_with_the_output(
        api: httpx.Client, name: str) -> None:
    start = last_id(api)
    with events_socket(api, since=start) as ws:
        assert frames_until(ws, caught_up)[-1]["last_id"] >= start
        accepted = api.post("/api/v1/workspaces", json={"name": name, "template": "web"}).json()
        workspace_id = accepted["workspace"]["id"]
        frames = frames_until(ws, op_ended(accepted["operation"]["id"]))
    mine = [f for f in events_only(frames) if f["workspace_id"] == workspace_id]
    ids = [f["id"] for f in events_only(frames)]
    assert ids == sorted(set(ids)) and ids[0] > start
    assert set(mine[0]) == {"id", "type", "time", "workspace_id", "owner", "payload"}
    assert mine[0]["type"] == "workspace.created"
    statuses = [f["payload"]["status"] for f in mine if f["type"] == "workspace.status"]
    assert statuses == ["provisioning", "running"], mine
    operation = [f["payload"]["status"] for f in mine if f["type"] == "operation.status"]
    assert operation == ["pending", "running", "succeeded"]
    output = "".join(f["payload"]["data"] for f in mine if f["type"] == "operation.output")  # in batches
    assert output == ("$ echo provisioned > /workspace/.provisioned\n$ echo hello from provisioning\n"
                      "hello from provisioning\n")


def test_reconnect_with_last_id_neither_misses_nor_repeats(api: httpx.Client, name: str) -> None:
    start = last_id(api)
    workspace = create_ws(api, name)["workspace"]
    with events_socket(api, f"/ws/workspaces/{name}/events", since=start) as ws:
        first = events_only(frames_until(ws, lambda f: f.get("type") == "workspace.status"))
    # changes made while no one is connected
    wait_op(api, api.post(f"/api/v1/workspaces/{name}/stop").json()["id"])
    stop_then_start = api.post(f"/api/v1/workspaces/{name}/start").json()["id"]
    with events_socket(api, f"/ws/workspaces/{workspace['id']}/events", since=first[-1]["id"]) as ws:
        second = events_only(frames_until(ws, op_ended(stop_then_start)))
    seen = [f["id"] for f in first + second]
    stored = api.get("/api/v1/events", params={"since": start, "workspace_id": name, "limit": 1000}).json()["items"]
    assert seen == [e["id"] for e in stored][:len(seen)]
    assert len(seen) == len(set(seen))
    assert {"workspace.created", "workspace.status", "operation.status"} <= {f["type"] for f in first + second}


def test_events_arriving_during_the_replay_are_neither_lost_nor_doubled(api: httpx.Client, name: str) -> None:
    """Output keeps being written while a client replays from an old id: the stream must stitch the
    replay and the live tail together exactly."""
    start = last_id(api)
    command = "for i in $(seq 1 60); do echo line$i; sleep 0.02; done"  # output in several batches
    accepted = create_ws(api, name, wait=False, provision=[command])
    with events_socket(api, since=start, types="operation.*") as ws:
        frames = frames_until(ws, op_ended(accepted["operation"]["id"]))
    output = "".join(f["payload"]["data"] for f in events_only(frames) if f["type"] == "operation.output"
                     and f["payload"]["operation_id"] == accepted["operation"]["id"])
    assert output == f"$ {command}\n" + "".join(f"line{i}\n" for i in range(1, 61))
    ids = [f["id"] for f in events_only(frames)]
    assert ids == sorted(set(ids))


def test_type_filters_exact_and_by_family(api: httpx.Client, name: str) -> None:
    start = last_id(api)
    accepted = create_ws(api, name)
    workspace_id = accepted["workspace"]["id"]
    done = op_ended(accepted["operation"]["id"])
    with events_socket(api, since=start, types="workspace.*") as ws:
        family = events_only(frames_until(ws, lambda f: f["workspace_id"] == workspace_id
                                          and f["payload"].get("status") == "running"))
    assert {f["type"] for f in family if f["workspace_id"] == workspace_id} >= {"workspace.created",
                                                                                "workspace.status"}
    assert all(f["type"].startswith("workspace.") for f in family)
    with events_socket(api, since=start, types="operation.status,workspace.created") as ws:
        exact = events_only(frames_until(ws, done))
    assert {f["type"] for f in exact if f["workspace_id"] == workspace_id} == {"operation.status",
                                                                               "workspace.created"}
    assert {f["type"] for f in exact} <= {"operation.status", "workspace.created"}
    polled = api.get("/api/v1/events", params={"since": start, "types": "workspace.created"}).json()
    assert {e["type"] for e in polled["items"]} == {"workspace.created"}
    assert refusal(api, types="work*").code == 4422


def test_default_is_only_new_events_and_heartbeats_keep_an_idle_stream_alive(make_daemon, name: str) -> None:
    daemon = make_daemon({"VMHOST_EVENT_HEARTBEAT": "0.3"})
    with daemon.client() as client:
        create_ws(client, name)
        newest = last_id(client)
        with events_socket(client) as ws:
            beats = [json.loads(ws.receive_text(timeout=10)) for _ in range(3)]
            assert all(b["type"] == "heartbeat" and "id" not in b and b["last_id"] == newest for b in beats), beats
            stop = client.post(f"/api/v1/workspaces/{name}/stop").json()["id"]
            live = events_only(frames_until(ws, op_ended(stop)))
    assert live[0]["id"] == newest + 1  # nothing from before the connection, nothing skipped after it


def test_client_behind_retention_gets_an_explicit_gap(make_daemon, name: str) -> None:
    daemon = make_daemon({"VMHOST_EVENT_RETENTION": "1"})
    with daemon.client() as client:
        create_ws(client, name)
        deadline = time.monotonic() + 30
        while client.get("/api/v1/events", params={"since": 0}).json()["items"]:
            assert time.monotonic() < deadline, "events were never pruned"
            time.sleep(0.3)
        newest = last_id(client)
        assert newest > 3
        polled = client.get("/api/v1/events", params={"since": 2}).json()
        assert polled["gap"] == {"type": "gap", "from": 3, "to": newest, "detail": f"events 3..{newest} were pruned"}
        with events_socket(client, since=2) as ws:
            gap, beat = json.loads(ws.receive_text(timeout=10)), json.loads(ws.receive_text(timeout=10))
        assert gap == polled["gap"]
        assert beat["type"] == "heartbeat" and beat["last_id"] == newest
        with events_socket(client, since=0) as ws:  # a new client missed nothing
            assert json.loads(ws.receive_text(timeout=10))["type"] == "heartbeat"


def test_expiring_warning_goes_out_once_and_again_before_the_janitor_acts(make_daemon, name: str) -> None:
    daemon = make_daemon({"VMHOST_EXPIRY_WARNING": "3600"})
    with daemon.client() as client:
        start = last_id(client)
        workspace = create_ws(client, name, ttl_seconds=4)["workspace"]
        with events_socket(client, f"/ws/workspaces/{workspace['id']}/events", since=start) as ws:
            frames = events_only(frames_until(ws, lambda f: f["type"] == "workspace.deleted"))
    kinds = [(f["type"], f["payload"].get("stage") or f["payload"].get("type")) for f in frames
             if f["type"] == "workspace.expiring" or (f["type"] == "operation.status"
                                                      and f["payload"]["status"] == "pending")]
    assert kinds == [("operation.status", "create"), ("workspace.expiring", "warning"),
                     ("workspace.expiring", "expired"), ("operation.status", "expire")]
    warning = next(f for f in frames if f["type"] == "workspace.expiring")
    assert warning["payload"]["expires_at"].startswith(workspace["expires_at"][:19])
    assert warning["payload"]["action"] == "delete"


def test_websockets_authenticate_like_rest_and_hide_other_users_workspaces(daemon: Daemon, name: str) -> None:
    alice, bob = daemon.token(f"alice-{name}"), daemon.token(f"bob-{name}")
    with daemon.tcp(token=alice) as as_alice, daemon.tcp(token=bob) as as_bob, daemon.tcp() as nobody:
        start = last_id(as_alice)
        workspace = create_ws(as_alice, name)["workspace"]
        with events_socket(as_alice, f"/ws/workspaces/{name}/events", since=start) as ws:
            assert frames_until(ws, caught_up)
        with events_socket(as_bob, since=start) as ws:  # bob's stream: none of alice's events
            assert events_only(frames_until(ws, caught_up)) == []
        for client, path, code in ((as_bob, f"/ws/workspaces/{workspace['id']}/events", 4404),
                                   (as_bob, f"/ws/workspaces/{name}/shell", 4404),
                                   (nobody, "/ws/events", 4401)):
            assert refusal(client, path).code == code, path
        refused = refusal(nobody, token="vmh_not-a-token")
        assert refused.code == 4401 and "invalid API token" in refused.reason
        with events_socket(nobody, f"/ws/workspaces/{name}/events", token=alice, since=start) as ws:  # browsers
            assert events_only(frames_until(ws, caught_up))[0]["owner"] == f"alice-{name}"
        assert as_bob.get("/api/v1/events", params={"workspace_id": workspace["id"]}).status_code == 404
        assert as_bob.get("/api/v1/events", params={"since": start}).json()["items"] == []


def test_a_refusal_too_long_for_a_close_frame_is_cut_between_words_and_sent_whole_before(api: httpx.Client) -> None:
    missing = "zwölf größere Käsestücke, " * 8  # multi-byte characters, so a byte count cannot land well by luck
    detail = f"no workspace {missing!r}"
    with events_socket(api, f"/ws/workspaces/{missing}/events") as ws:
        frame = json.loads(ws.receive_text(timeout=10))
        with pytest.raises(WebSocketDisconnect) as refused:
            ws.receive_text(timeout=10)
    assert frame == {"type": "error", "detail": detail, "code": "workspace_not_found"}
    reason = refused.value.reason
    assert refused.value.code == 4404 and len(reason.encode()) <= 123 and reason.endswith("…"), reason
    kept = reason.removesuffix("…")
    assert detail.startswith(kept) and detail[len(kept)] == " ", reason  # whole words only

    fits = "x" * 108
    whole = f"no workspace {fits!r}"
    assert len(whole.encode()) == 123
    with events_socket(api, f"/ws/workspaces/{fits}/events") as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text(timeout=10)  # no error frame first: the reason is the whole detail
    assert closed.value.reason == whole


def test_cli_follow_shows_the_whole_of_a_long_refusal(daemon: Daemon) -> None:
    missing = "a workspace whose name is far too long to fit in a close frame " * 2
    refused = daemon.cli("events", "--follow", "--workspace", missing, timeout=60)
    assert refused.returncode == 3 and f"no workspace {missing!r}" in " ".join(refused.stderr.split()), refused.stderr


def test_out_of_range_or_malformed_since_is_a_clear_refusal(api: httpx.Client) -> None:
    for since in (str(10**23), str(2**63), "-1", "1e3", "abc", "٣"):
        refused = refusal(api, since=since)
        assert refused.code == 4422 and "since must be" in refused.reason, (since, refused)
        polled = api.get("/api/v1/events", params={"since": since})
        assert polled.status_code == 422 and "since" in polled.json()["detail"], (since, polled.text)
    with events_socket(api, since=str(2**63 - 1)) as ws:  # the largest is fine: nothing after it yet
        assert events_only(frames_until(ws, caught_up)) == []
    assert api.get("/health").json()["status"] == "ok"


def test_cli_events_lists_and_follows(daemon: Daemon, api: httpx.Client, name: str) -> None:
    start = last_id(api)
    env = {"VMHOST_SOCKET": str(daemon.socket), "COLUMNS": "200", "NO_COLOR": "1"}
    follower = subprocess.Popen([sys.executable, "-m", "vmhost", "events", "--follow", "--json", "--since",
                                 str(start), "--workspace", name, "--type", "workspace.status"],
                                env={**daemon.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    try:
        workspace = create_ws(api, name)["workspace"]
        threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
        followed = [json.loads(lines.get(timeout=30)) for _ in range(2)]
    finally:
        follower.terminate()
        follower.wait(10)
    assert [(e["type"], e["payload"]["status"], e["workspace_id"]) for e in followed] == [
        ("workspace.status", "provisioning", workspace["id"]), ("workspace.status", "running", workspace["id"])]

    listed = daemon.cli("events", "--since", str(start), "--workspace", name)
    assert listed.returncode == 0, listed.stderr
    assert "workspace.created" in listed.stdout and f"{name}" in listed.stdout and "running" in listed.stdout
    bad = daemon.cli("events", "--type", "a*b")
    assert bad.returncode == 2 and "bad event type filter" in bad.stderr


def test_cli_follow_resumes_across_a_daemon_restart_without_missing_or_repeating(make_daemon, name: str) -> None:
    daemon = make_daemon()
    with daemon.client() as client:
        create_ws(client, name)
        start = last_id(client)
    follower = subprocess.Popen([sys.executable, "-m", "vmhost", "events", "-f", "--json", "--since", str(start),
                                 "--type", "operation.status"],
                                env={**daemon.env, "VMHOST_SOCKET": str(daemon.socket)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        with daemon.client() as client:
            wait_op(client, client.post(f"/api/v1/workspaces/{name}/stop").json()["id"])
        before = [json.loads(lines.get(timeout=30)) for _ in range(3)]  # pending, running, succeeded
        daemon.stop()
        daemon.start()
        with daemon.client() as client:
            wait_op(client, client.post(f"/api/v1/workspaces/{name}/start").json()["id"])
            stored = client.get("/api/v1/events", params={"since": start, "types": "operation.status",
                                                          "limit": 1000}).json()
        after = [json.loads(lines.get(timeout=60)) for _ in range(3)]
    finally:
        follower.terminate()
        follower.wait(10)
    assert [e["id"] for e in before + after] == [e["id"] for e in stored["items"]]
