"""The daemon process: both listeners in one process, clean SIGTERM, recovery after a crash."""

from __future__ import annotations

import signal
import sqlite3

import docker
from conftest import create_ws, wait_op


def test_sigterm_exits_cleanly_and_leaves_no_socket(make_daemon) -> None:
    process = make_daemon()
    assert process.stop(signal.SIGTERM) == 0 or process.process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in process.log()
    # a restart over the stale socket file works
    process.start()
    with process.client() as client:
        assert client.get("/health").status_code == 200


def test_a_second_daemon_on_the_same_socket_refuses_to_start(make_daemon) -> None:
    first = make_daemon()
    second = make_daemon(start=False)
    second.socket, second.env["VMHOST_SOCKET"] = first.socket, str(first.socket)
    try:
        second.start(timeout=10)  # answers at once: the first daemon does
    except RuntimeError:
        pass
    assert second.process.wait(timeout=20) != 0
    assert "already listens" in second.log()
    with first.client() as client:
        assert client.get("/health").status_code == 200


def test_operations_left_running_by_a_crash_are_settled_at_start(make_daemon,
                                                                  docker_client: docker.DockerClient,
                                                                  name: str) -> None:
    process = make_daemon()
    with process.client() as client:
        workspace = create_ws(client, name)["workspace"]
    process.kill()
    # forge what a crash in the middle of a stop would leave behind
    with sqlite3.connect(process.db_path) as db:
        db.execute("INSERT INTO operations (id, type, status, workspace_id, workspace_name, owner, requested_by, "
                   "created_at, started_at, attempts) VALUES ('op_crashed', 'stop', 'running', ?, ?, 'root', 'root', "
                   "'2026-01-01T00:00:00.000+00:00', '2026-01-01T00:00:00.000+00:00', 1)",
                   (workspace["id"], name))
        db.execute("INSERT INTO operations (id, type, status, workspace_id, workspace_name, owner, requested_by, "
                   "created_at) VALUES ('op_queued', 'restart', 'pending', ?, ?, 'root', 'root', "
                   "'2026-01-01T00:00:01.000+00:00')", (workspace["id"], name))
    process.start()
    with process.client() as client:
        crashed = client.get("/api/v1/operations/op_crashed").json()
        assert crashed["status"] == "failed"
        assert "interrupted by a restart" in crashed["error"] and "running" in crashed["error"]
        # the queued one is picked up and run
        assert wait_op(client, "op_queued")["status"] == "succeeded"
        assert client.get(f"/api/v1/workspaces/{name}").json()["status"] == "running"
        assert client.get("/api/v1/operations", params={"status": "running"}).json()["items"] == []


def test_the_janitor_expires_workspaces_and_records_an_expire_operation(make_daemon, name: str,
                                                                         docker_client: docker.DockerClient) -> None:
    process = make_daemon({"VMHOST_JANITOR_INTERVAL": "0.5"})
    with process.client() as client:
        workspace = create_ws(client, name, ttl_seconds=1)["workspace"]
        for _ in range(100):
            if client.get(f"/api/v1/workspaces/{workspace['id']}").status_code == 404:
                break
            import time

            time.sleep(0.1)
        history = client.get("/api/v1/operations", params={"workspace_id": workspace["id"]}).json()["items"]
        assert history[0]["type"] == "expire" and history[0]["status"] == "succeeded"
        assert history[0]["requested_by"] == "janitor"
    assert not docker_client.containers.list(all=True, filters={"label": f"vmhost.workspace={workspace['id']}"})


def test_each_create_is_provisioned_exactly_once_even_with_a_tiny_provisioner_interval(make_daemon,
                                                                                       name: str) -> None:
    process = make_daemon({"VMHOST_PROVISIONER_INTERVAL": "0.01", "VMHOST_WORKERS": "4"})
    with process.client() as client:
        accepted = [client.post("/api/v1/workspaces", json={"name": f"{name}-{i}", "template": "web"}).json()
                    for i in range(6)]
        for item in accepted:
            operation = wait_op(client, item["operation"]["id"])
            assert operation["status"] == "succeeded", operation["error"]
            assert operation["attempts"] == 1
            assert operation["output"].count("$ echo hello from provisioning\nhello from provisioning\n") == 1
        events = sqlite3.connect(process.db_path).execute(
            "SELECT count(*) FROM events WHERE type = 'operation.status' AND payload LIKE '%\"running\"%'").fetchone()
        assert events[0] == 6
