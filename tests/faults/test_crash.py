"""The daemon killed with SIGKILL in the middle of its work, then started again on the same database:
recovery leaves nothing in flight, nothing orphaned in Docker, and every status as Docker shows it.

Each iteration prints its seed; `VMHOST_FAULT_SEED=N` replays a run."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import httpx
import pytest

from faults.conftest import PrivateEngine, check_consistent, unique

SHORT_ITERATIONS = 20
SLOW_ITERATIONS = 80


def base_seed() -> int:
    return int(os.environ.get("VMHOST_FAULT_SEED") or random.SystemRandom().randrange(1, 10**9))


def busy_workload(client: httpx.Client, rng: random.Random, workspaces: list[dict[str, Any]],
                  snapshots: dict[str, list[str]]) -> list[str]:
    """Fire a random mix of create, start, stop, restart, rebuild, snapshot, restore and delete without
    waiting; returns what was asked. `snapshots` remembers the snapshots asked for, by workspace id."""
    asked = []
    for _ in range(rng.randint(1, 2)):
        body: dict[str, Any] = {"name": unique("crash"), "template": "base"}
        if rng.random() < 0.4:  # a longer create, so some kills land in provisioning
            body["provision"] = [f"sleep {rng.choice(['0.1', '0.3', '0.6'])}"]
        response = client.post("/api/v1/workspaces", json=body)
        assert response.status_code == 202, response.text
        asked.append(f"create {body['name']}")
    for workspace in rng.sample(workspaces, k=min(len(workspaces), rng.randint(0, 3))):
        base = f"/api/v1/workspaces/{workspace['id']}"
        taken = snapshots.get(workspace["id"], [])
        choices = ["start", "delete"]
        if workspace["status"] == "running":
            choices += ["stop", "restart", "rebuild", "snapshot"] + (["restore"] if taken else [])
        action = rng.choice(choices)
        if action == "delete":
            response = client.delete(base)
        elif action == "snapshot":
            snapshot = unique("snap")
            response = client.post(f"{base}/snapshots", json={"name": snapshot})
            if response.status_code == 202:
                snapshots.setdefault(workspace["id"], []).append(snapshot)
        elif action == "restore":
            response = client.post(f"{base}/snapshots/{rng.choice(taken)}/restore")
        else:
            response = client.post(f"{base}/actions/{action}")
        # 404: a snapshot whose taking failed or was rolled back; 409: busy
        assert response.status_code in (202, 404, 409), f"{action}: {response.text}"
        asked.append(f"{action} {workspace['name']}")
    return asked


def crash_loop(fault_daemon: Any, engine: PrivateEngine, iterations: int) -> None:
    seed = base_seed()
    print(f"crash loop: base seed {seed} ({iterations} iterations; replay with VMHOST_FAULT_SEED={seed})")
    daemon = fault_daemon({"VMHOST_PROVISIONER_INTERVAL": "0.5"})
    workspaces: list[dict[str, Any]] = []
    snapshots: dict[str, list[str]] = {}
    with engine.client() as engine_client:
        for number in range(iterations):
            rng = random.Random(seed + number)
            with daemon.client() as client:
                asked = busy_workload(client, rng, [w for w in workspaces if w["status"] != "error"], snapshots)
                delay = rng.uniform(0, 0.8)
                time.sleep(delay)
            daemon.kill()
            context = f"seed {seed + number} (iteration {number}, killed {delay:.2f} s after {asked})"
            print(context)
            daemon.start()
            with daemon.client() as client:
                workspaces = check_consistent(client, engine_client, daemon.instance, context)
                if len(workspaces) > 6:  # keep the engine small: tidy up without a crash
                    for workspace in workspaces[:3]:
                        client.delete(f"/api/v1/workspaces/{workspace['id']}")
                    workspaces = check_consistent(client, engine_client, daemon.instance, context + " + tidy")


def test_sigkill_during_lifecycle_snapshot_restore_and_rebuild_recovers_consistently(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    crash_loop(fault_daemon, engine, SHORT_ITERATIONS)


@pytest.mark.slow
def test_sigkill_many_times_recovers_consistently(fault_daemon: Any, engine: PrivateEngine) -> None:
    crash_loop(fault_daemon, engine, SLOW_ITERATIONS)


def test_create_interrupted_three_times_fails_and_removes_its_container_and_volume(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    daemon = fault_daemon({"VMHOST_PROVISIONER_INTERVAL": "0.5"})
    with daemon.client() as client:
        accepted = client.post("/api/v1/workspaces", json={"name": unique("thrice"), "template": "base",
                                                           "provision": ["sleep 60"]}).json()
    operation_id, workspace_id = accepted["operation"]["id"], accepted["workspace"]["id"]
    with engine.client() as engine_client:
        for attempt in range(1, 4):
            deadline = time.monotonic() + 30
            with daemon.client() as client:  # kill it once this attempt's container runs its provisioning
                while True:
                    operation = client.get(f"/api/v1/operations/{operation_id}").json()
                    if operation["attempts"] == attempt and operation["output"].count("$ sleep 60") == attempt:
                        break
                    assert time.monotonic() < deadline, f"attempt {attempt} never started provisioning: {operation}"
                    time.sleep(0.1)
                assert operation["status"] == "running", operation
            daemon.kill()
            daemon.start()
        with daemon.client() as client:
            operation = client.get(f"/api/v1/operations/{operation_id}").json()
            assert operation["status"] == "failed", operation
            assert "interrupted" in operation["error"] and "3 attempts" in operation["error"]
            workspace = client.get(f"/api/v1/workspaces/{workspace_id}").json()
            assert workspace["status"] == "error"
            assert "interrupted" in workspace["status_reason"]
            check_consistent(client, engine_client, daemon.instance, "after three interrupted attempts")
