"""Deleting always works: forced deletes cancel what is in flight; pending operations can be cancelled."""

from __future__ import annotations

import time
from typing import Any

import docker
import httpx
from conftest import Daemon, create_ws, wait_op


def wait_status(api: httpx.Client, operation_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operation = api.get(f"/api/v1/operations/{operation_id}").json()
        if operation["status"] == status:
            return operation
        time.sleep(0.05)
    raise AssertionError(f"operation {operation_id} never became {status}: {operation}")


def docker_objects(docker_client: docker.DockerClient, workspace_id: str) -> list[str]:
    filters = {"label": f"vmhost.workspace={workspace_id}"}
    return ([c.name for c in docker_client.containers.list(all=True, filters=filters)]
            + [v.name for v in docker_client.volumes.list(filters=filters)])


def test_forced_delete_of_a_workspace_stuck_in_provisioning(api: httpx.Client, docker_client: docker.DockerClient,
                                                             name: str) -> None:
    accepted = create_ws(api, name, wait=False, provision=["echo stuck; sleep 600"])
    workspace_id = accepted["workspace"]["id"]
    create_id = accepted["operation"]["id"]
    deadline = time.monotonic() + 30
    while "stuck" not in api.get(f"/api/v1/operations/{create_id}").json()["output"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    plain = api.delete(f"/api/v1/workspaces/{name}")
    assert plain.status_code == 409 and create_id in plain.json()["detail"]

    response = api.delete(f"/api/v1/workspaces/{name}", params={"force": "true"})
    assert response.status_code == 202, response.text
    assert wait_op(api, response.json()["id"])["status"] == "succeeded"
    create = api.get(f"/api/v1/operations/{create_id}").json()
    assert create["status"] == "failed" and create["error"] == "cancelled by forced delete"
    assert api.get(f"/api/v1/workspaces/{workspace_id}").status_code == 404
    assert docker_objects(docker_client, workspace_id) == []
    time.sleep(2)  # the cancelled create's thread has woken up by now: it must not bring anything back
    assert docker_objects(docker_client, workspace_id) == []
    assert api.get(f"/api/v1/operations/{create_id}").json()["error"] == "cancelled by forced delete"


def test_forced_delete_of_a_workspace_in_error_with_a_running_exec(api: httpx.Client, daemon: Daemon,
                                                                   docker_client: docker.DockerClient,
                                                                   name: str) -> None:
    broken = create_ws(api, f"{name}-e", wait=False, provision=["exit 3"])
    wait_op(api, broken["operation"]["id"])
    assert api.get(f"/api/v1/workspaces/{name}-e").json()["status"] == "error"
    done = daemon.cli("ws", "rm", f"{name}-e", "--force")
    assert done.returncode == 0, done.stderr
    assert api.get(f"/api/v1/workspaces/{name}-e").status_code == 404

    workspace = create_ws(api, name)["workspace"]
    command = api.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sleep", "600"]}).json()
    wait_status(api, command["id"], "running")
    done = daemon.cli("ws", "rm", name, "--force")
    assert done.returncode == 0, done.stderr
    command = wait_op(api, command["id"])
    assert command["status"] == "failed" and command["error"] == "cancelled by forced delete"
    assert docker_objects(docker_client, workspace["id"]) == []


def test_cancel_pending_operations_and_a_running_provisioning(make_daemon: Any, name: str) -> None:
    daemon = make_daemon({"VMHOST_WORKERS": "1"})  # one worker: a stuck create keeps the next one pending
    with daemon.client() as api:
        stuck = create_ws(api, f"{name}-a", wait=False, provision=["sleep 600"])
        wait_status(api, stuck["operation"]["id"], "running")
        queued = create_ws(api, f"{name}-b", wait=False)
        other = create_ws(api, f"{name}-c", wait=False)
        assert api.get(f"/api/v1/operations/{queued['operation']['id']}").json()["status"] == "pending"

        response = api.delete(f"/api/v1/operations/{queued['operation']['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "failed" and response.json()["error"] == "cancelled by root"
        workspace = api.get(f"/api/v1/workspaces/{name}-b").json()
        assert workspace["status"] == "error" and "cancelled by root" in workspace["status_reason"]

        done = daemon.cli("ops", "cancel", other["operation"]["id"])
        assert done.returncode == 0, done.stderr
        assert "failed" in done.stdout and "cancelled by root" in done.stdout
        done = daemon.cli("ops", "cancel", other["operation"]["id"])
        assert done.returncode == 4 and "already failed" in done.stderr

        # a running create is stopped at its provisioning: the command is killed, the create fails
        running = api.delete(f"/api/v1/operations/{stuck['operation']['id']}")
        assert running.status_code == 200, running.text
        assert running.json()["status"] == "failed" and running.json()["error"] == "cancelled by root"
        assert api.get(f"/api/v1/workspaces/{name}-a").json()["status"] == "error"
        assert api.delete("/api/v1/operations/op_nope").status_code == 404

        forced = api.delete(f"/api/v1/workspaces/{name}-a", params={"force": True})
        assert wait_op(api, forced.json()["id"])["status"] == "succeeded"
        assert api.get(f"/api/v1/workspaces/{name}-a").status_code == 404
        for leftover in (f"{name}-b", f"{name}-c"):  # cancelled creates leave workspaces that delete plainly
            assert wait_op(api, api.delete(f"/api/v1/workspaces/{leftover}").json()["id"])["status"] == "succeeded"
