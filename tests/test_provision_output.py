"""Provisioning cannot swamp the daemon: an operation keeps a bounded end of its output, output
events come in batches, and a provision command has a timeout and is killed by a cancel or a
forced delete."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from conftest import create_ws, wait_op
from test_force_delete import docker_objects, wait_status

from vmhost.core.models import Caller, Operation, OperationStatus, Workspace, WorkspaceStatus, utcnow
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.output import MAX_EVENT, MAX_OUTPUT, OperationOutput, dropped_line, split_output
from vmhost.core.store import Store
from vmhost.errors import InvalidState


def store_with_operation(path: Path, type: str = "create") -> Store:
    store = Store(path / "o.db")
    now = utcnow()
    workspace = Workspace(id="ws_1", name="w", owner="alice", template="base", image="i",
                          status=WorkspaceStatus.PENDING, created_at=now, updated_at=now)
    store.insert_workspace(workspace, Operation(id="op_1", type=type, status=OperationStatus.PENDING,
                                                workspace_id="ws_1", workspace_name="w", owner="alice",
                                                requested_by="alice", created_at=now))
    return store


def output_events(store: Store) -> list[tuple[str, str]]:
    return [(e.payload["stream"], e.payload["data"]) for e in store.list_events(0, types=("operation.output",))]


def test_output_is_recorded_in_batches(tmp_path: Path) -> None:
    store = store_with_operation(tmp_path)
    lines = [f"line {n} é\n".encode() for n in range(5000)]
    with OperationOutput(store, "op_1") as write:
        for line in lines:
            write("stdout", line[:3])  # chunks cut anywhere, even inside a character
            write("stdout", line[3:])
        write("stderr", "oops ".encode())
        write("stderr", "é".encode()[:1])
        write("stderr", "é".encode()[1:] + b"no newline at the end")
    events = output_events(store)
    assert len(events) < 100  # not one a line (5,001 before)
    expected = b"".join(lines).decode()
    assert "".join(data for stream, data in events if stream == "stdout") == expected
    assert "".join(data for stream, data in events if stream == "stderr") == "oops éno newline at the end"
    assert store.get_operation("op_1").output == expected + "oops éno newline at the end"


def test_output_becomes_visible_while_the_command_is_quiet(tmp_path: Path) -> None:
    store = store_with_operation(tmp_path)
    with OperationOutput(store, "op_1") as write:
        write("stdout", b"stuck\n")
        deadline = time.monotonic() + 30
        while store.get_operation("op_1").output != "stuck\n":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert output_events(store) == [("stdout", "stuck\n")]


def test_an_operation_keeps_the_end_of_its_output_and_says_what_was_dropped(tmp_path: Path) -> None:
    store = store_with_operation(tmp_path)
    text = "".join(f"{n:07d}\n" for n in range(400_000))  # 3.2 M characters
    with OperationOutput(store, "op_1") as write:
        for start in range(0, len(text), 1000):
            write("stdout", text[start:start + 1000].encode())
    output = store.get_operation("op_1").output
    assert output == dropped_line(len(text) - MAX_OUTPUT) + text[-MAX_OUTPUT:]
    for stream, data in output_events(store):
        assert len(data) <= MAX_EVENT + 100  # a batch too is bounded, and says what it skipped
    assert any(data.startswith("[vmhost: ") and "characters of output skipped]\n" in data
               for _, data in output_events(store))

    with OperationOutput(store, "op_1", output) as write:  # a later step goes on counting
        write("stdout", b"more\n")
    dropped, kept = split_output(store.get_operation("op_1").output)
    assert dropped == len(text) + len("more\n") - MAX_OUTPUT and kept.endswith("0399999\nmore\n")


def test_other_running_lifecycle_operations_cannot_be_cancelled(orchestrator: Orchestrator) -> None:
    store, now = orchestrator.store, utcnow()
    workspace = Workspace(id="ws_s", name="s", owner="root", template="base", image="i",
                          status=WorkspaceStatus.STOPPED, created_at=now, updated_at=now)
    stop = Operation(id="op_s", type="stop", status=OperationStatus.PENDING, workspace_id="ws_s", workspace_name="s",
                     owner="root", requested_by="root", created_at=now)
    store.insert_workspace(workspace, stop)
    store.claim_operation("op_s")
    with pytest.raises(InvalidState, match="cannot be stopped half-way.*--force"):
        orchestrator.cancel_operation(Caller(user="root", admin=True), "op_s")


def test_a_flood_of_provisioning_output_is_bounded(api: httpx.Client, name: str) -> None:
    command = "yes | head -c 20000000"
    accepted = create_ws(api, name, wait=False, provision=[command])
    while api.get(f"/api/v1/operations/{accepted['operation']['id']}").json()["status"] in ("pending", "running"):
        assert api.get("/health", timeout=30).json()["status"] == "ok"  # the daemon keeps answering
        time.sleep(0.2)
    operation = wait_op(api, accepted["operation"]["id"])
    assert operation["status"] == "succeeded", operation
    total = len(f"$ {command}\n") + 20_000_000
    assert operation["output"] == dropped_line(total - MAX_OUTPUT) + ("y\n" * MAX_OUTPUT)[-MAX_OUTPUT:]
    events = api.get("/api/v1/events", params={"workspace_id": accepted["workspace"]["id"],
                                               "types": "operation.output", "limit": 1000}).json()["items"]
    assert 0 < len(events) < 200


def test_a_forced_delete_stops_provisioning_at_once(make_daemon: Any, docker_client: docker.DockerClient,
                                                    name: str) -> None:
    daemon = make_daemon({"VMHOST_WORKERS": "2"})  # the flood's worker must come free for the next create
    with daemon.client() as api:
        accepted = create_ws(api, f"{name}-a", wait=False, provision=["yes"])
        create_id = accepted["operation"]["id"]
        deadline = time.monotonic() + 60
        while "y\ny\n" not in api.get(f"/api/v1/operations/{create_id}").json()["output"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        forced = api.delete(f"/api/v1/workspaces/{name}-a", params={"force": True})
        assert wait_op(api, forced.json()["id"])["status"] == "succeeded"
        assert wait_op(api, create_id)["error"] == "cancelled by forced delete"
        assert docker_objects(docker_client, accepted["workspace"]["id"]) == []
        create_ws(api, f"{name}-b", provision=["echo next"])  # both workers are free again
        assert api.get("/health").json()["status"] == "ok"


def test_a_provision_command_past_its_timeout_fails_the_create(make_daemon: Any, docker_client: docker.DockerClient,
                                                               name: str) -> None:
    daemon = make_daemon({"VMHOST_PROVISION_TIMEOUT": "1"})
    with daemon.client() as api:
        accepted = create_ws(api, name, wait=False, provision=["echo started; sleep 600"])
        operation = wait_op(api, accepted["operation"]["id"])
        assert operation["status"] == "failed"
        assert operation["error"] == ("provision command 1 (echo started; sleep 600) ran longer than 1 s (the "
                                      "provision_timeout setting) and was killed with all its processes; see the "
                                      "operation's output")
        assert "started" in operation["output"]
        workspace = api.get(f"/api/v1/workspaces/{name}").json()
        assert workspace["status"] == "error" and "ran longer than 1 s" in workspace["status_reason"]
        assert [o for o in docker_objects(docker_client, workspace["id"]) if o.startswith("vmhost-ws")] == []


def test_cancelling_a_create_kills_its_provisioning(api: httpx.Client, name: str) -> None:
    accepted = create_ws(api, name, wait=False, provision=["sleep 600", "echo never"])
    wait_status(api, accepted["operation"]["id"], "running")
    deadline = time.monotonic() + 60
    while "sleep 600" not in api.get(f"/api/v1/operations/{accepted['operation']['id']}").json()["output"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = api.delete(f"/api/v1/operations/{accepted['operation']['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "failed" and cancelled.json()["error"] == "cancelled by root"
    assert "never" not in cancelled.json()["output"]
    assert api.get(f"/api/v1/workspaces/{name}").json()["status"] == "error"
    wait_op(api, api.delete(f"/api/v1/workspaces/{name}").json()["id"])


def test_following_an_operation_prints_each_character_once_across_drops(capsys: pytest.CaptureFixture[str]) -> None:
    from vmhost.cli.base import follow

    class Client:
        def wait(self, operation_id: str, timeout: float, on_update: Any) -> dict[str, Any]:
            for output in ("abc", dropped_line(2) + "cdef", dropped_line(10) + "xyz"):
                on_update({"id": operation_id, "status": "running", "output": output})
            return {"id": operation_id, "status": "succeeded", "output": dropped_line(10) + "xyz"}

    follow(Client(), {"id": "op_1", "status": "pending"}, "create")  # type: ignore[arg-type]
    assert capsys.readouterr().err == "abcdef" + dropped_line(4) + "xyz"
