"""The Docker engine goes away (the private one, stopped like an admin would) during operations and
between them: vmhost stays up, says so clearly and quickly, and recovers on its own when it returns."""

from __future__ import annotations

import time
from typing import Any

import httpx
from conftest import create_ws, wait_op

from faults.conftest import PrivateEngine, check_consistent, unique

# bounded, not a speed check: an answer that takes longer than this is a hang
NO_HANG = 20


def wait_health(client: httpx.Client, status: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/health")
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response.json()
        time.sleep(0.2)


def test_docker_stopped_daemon_stays_up_answers_503_fails_in_flight_ops_and_recovers_without_restart(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    daemon = fault_daemon()
    with daemon.client(timeout=NO_HANG) as client:
        running = create_ws(client, unique("away"))["workspace"]
        in_flight = create_ws(client, unique("away"), wait=False, provision=["sleep 60"])
        deadline = time.monotonic() + 30
        while "$ sleep 60" not in client.get(f"/api/v1/operations/{in_flight['operation']['id']}").json()["output"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        engine.stop()

        failed = wait_op(client, in_flight["operation"]["id"], timeout=NO_HANG)
        assert failed["status"] == "failed"
        assert "Docker" in failed["error"] and "does not answer" in failed["error"], failed["error"]

        health = wait_health(client, 503)
        assert health["docker"]["ok"] is False and "does not answer" in health["docker"]["detail"]
        assert health["database"]["ok"] is True

        assert client.get("/api/v1/workspaces").status_code == 200  # the database alone answers
        # still readable; the status may already say the container stopped with the engine
        assert client.get(f"/api/v1/workspaces/{running['id']}").json()["status"] in ("running", "stopped")
        for response in (client.post("/api/v1/workspaces", json={"name": unique("away"), "template": "base"}),
                         client.post(f"/api/v1/workspaces/{running['id']}/actions/stop"),
                         client.delete(f"/api/v1/workspaces/{running['id']}")):
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "docker_unavailable"
            assert "Docker" in response.json()["detail"]
        operations = client.get("/api/v1/operations").json()["items"]
        assert not [o for o in operations if o["status"] in ("pending", "running")]

        engine.start()  # no restart of vmhost from here on

        health = wait_health(client, 200)
        assert health["docker"]["ok"] is True
        # dockerd stopped the container when it went down; starting it again works
        assert wait_op(client, client.post(f"/api/v1/workspaces/{running['id']}/actions/start").json()["id"]
                       )["status"] == "succeeded"
        # still readable; the status may already say the container stopped with the engine
        assert client.get(f"/api/v1/workspaces/{running['id']}").json()["status"] in ("running", "stopped")
        create_ws(client, unique("back"))
        assert wait_op(client, client.delete(f"/api/v1/workspaces/{in_flight['workspace']['id']}").json()["id"]
                       )["status"] == "succeeded"
        with engine.client() as engine_client:
            check_consistent(client, engine_client, daemon.instance, "after Docker came back")


def test_docker_stopped_between_operations_health_503_then_200_when_it_returns(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    daemon = fault_daemon()
    with daemon.client(timeout=NO_HANG) as client:
        assert wait_health(client, 200)["docker"]["ok"] is True
        engine.stop()
        health = wait_health(client, 503)
        assert health["status"] == "degraded" and health["docker"]["ok"] is False
        assert client.post("/api/v1/workspaces", json={"name": unique("gone"), "template": "base"}
                           ).status_code == 503
        engine.start()
        wait_health(client, 200)
        create_ws(client, unique("back"))


def test_docker_hung_health_and_actions_answer_503_within_seconds_and_recover_when_it_wakes(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    daemon = fault_daemon()
    with daemon.client(timeout=NO_HANG) as client:
        workspace = create_ws(client, unique("hung"))["workspace"]
        with engine.frozen():
            health = client.get("/health")
            assert health.status_code == 503, health.text
            assert health.json()["docker"]["ok"] is False and "does not answer" in health.json()["docker"]["detail"]
            response = client.post(f"/api/v1/workspaces/{workspace['id']}/actions/stop")
            assert response.status_code == 503 and response.json()["code"] == "docker_unavailable", response.text
            assert client.get(f"/api/v1/workspaces/{workspace['id']}").status_code == 200
        wait_health(client, 200)
        assert wait_op(client, client.post(f"/api/v1/workspaces/{workspace['id']}/actions/stop").json()["id"]
                       )["status"] == "succeeded"
